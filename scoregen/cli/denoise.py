"""``scoregen denoise``: add noise to image files, denoise them, write PNGs and print PSNRs."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from scoregen.cli._common import (
    CONTEXT,
    Level,
    Outputs,
    device_option,
    load,
    output_dir,
    seed_option,
    set_up_torch,
    threads_option,
)

# Images larger than this are refused before decoding (a decompression bomb is a few KB of
# PNG that decodes to gigabytes).
MAX_PIXELS = 64 * 2**20

DENOISE_EPILOG = """\b
Examples:
  scoregen denoise --ckpt builtin:digits-dae --sigma 0.4 digit.png --out denoised/
  scoregen denoise --ckpt dae.safetensors --sigma 0.3 a.png b.png --out out/ --seed 1
  scoregen denoise --ckpt unet.safetensors --sigma 0.2 photo.png --out out/ --full-size
"""


@click.command(epilog=DENOISE_EPILOG, context_settings=CONTEXT)
@click.option("--ckpt", required=True, metavar="FILE|builtin:NAME", help="An image denoiser.")
@click.option("--sigma", type=Level(), required=True, help="Noise level to add, in the model's units (data = x·scale + shift; the pixel std is σ·scale).")  # fmt: skip
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--out", required=True, metavar="DIR", help="Output folder (created if missing; its parent must exist).")  # fmt: skip
@click.option("--full-size", is_flag=True, help="Denoise at the image's own size instead of resizing it to the model's (convolutional models only).")  # fmt: skip
@seed_option("Seed of the added noise.")
@device_option()
@threads_option()
def denoise(ckpt, sigma, images, out, full_size, seed, device, threads) -> None:
    """Add noise at σ to images, denoise them, write noisy/denoised PNGs and print PSNRs.

    Each IMAGE (PNG, JPEG, ...; 8- or 16-bit, grey or colour) is read as pixels in [0, 1] with
    their true values, converted to the checkpoint's channels, and resized to its image size
    when they differ (the output says so) unless --full-size is given.
    """
    import torch

    from scoregen import plot
    from scoregen.metrics import psnr

    for image in images:
        if not Path(image).is_file():
            raise click.BadParameter(f"file {image!r} does not exist", param_hint="IMAGE")
    out_dir = output_dir(out, "--out")
    device = set_up_torch(device, threads)
    model = load(ckpt, device)
    if not model.is_image:
        raise click.BadParameter(
            f"{model.name} models data of shape {list(model.shape or [])}, not images",
            param_hint="--ckpt",
        )
    fixed = model.fixed_sigma
    if fixed is not None and abs(sigma - fixed) > 1e-4 * fixed:
        raise click.BadParameter(
            f"{model.name} was trained at the single level σ={fixed:g}; got {sigma:g}",
            param_hint="--sigma",
        )
    if fixed is None:
        low, high = model.sigma_range
        if not low * (1 - 1e-6) <= sigma <= high * (1 + 1e-6):
            raise click.BadParameter(
                f"{sigma:g} is outside the σ range {model.name} was trained on [{low:g}, {high:g}]",
                param_hint="--sigma",
            )
    pixels = [read_image(Path(p), model.shape, full_size) for p in images]
    names = output_names(images, out_dir)
    scale = (model.data.get("normalization") or {}).get("scale", 1.0)
    generator = torch.Generator().manual_seed(seed)
    outputs = Outputs()
    lines = []
    try:
        for path, (clean, resize_note), (compare, single) in zip(images, pixels, names):
            x = model.from_data_space(clean).to(device)
            noisy = x + sigma * torch.randn(x.shape, generator=generator).to(device)
            try:
                with torch.no_grad():
                    restored = model.denoiser(noisy, sigma)
            except (RuntimeError, ValueError) as e:
                if not full_size:
                    raise
                raise click.BadParameter(
                    f"{model.name} cannot denoise a {clean.shape[-1]}×{clean.shape[-2]} image "
                    f"({' '.join(str(e).split())[:200]}); drop --full-size to resize it to the "
                    f"model's {model.shape[-1]}×{model.shape[-2]}",
                    param_hint="--full-size",
                ) from None
            noisy_px = model.to_data_space(noisy, clip=True).cpu()
            denoised_px = model.to_data_space(restored, clip=True).cpu()
            db_noisy, db_denoised = psnr(noisy_px, clean).item(), psnr(denoised_px, clean).item()
            fig, axes = plot.new_figure(3, panel_size=(2.4, 2.6))
            for ax, picture, title in zip(
                axes[0],
                (clean, noisy_px, denoised_px),
                ("clean", f"noisy {db_noisy:.1f} dB", f"denoised {db_denoised:.1f} dB"),
            ):
                plot.image_grid(picture, nrow=1, ax=ax, title=title)
            fig.suptitle(f"{model.name}, σ={sigma:g}")
            outputs.write(compare, lambda p, fig=fig: plot.save_figure(fig, p))
            outputs.write(single, lambda p, img=denoised_px: write_png(img, p))
            lines.append(
                f"{path}: PSNR noisy {db_noisy:.2f} dB -> denoised {db_denoised:.2f} dB"
                f"{resize_note}; wrote {compare}, {single}"
            )
    except BaseException:
        outputs.rollback()
        raise
    click.echo(
        f"{model.name} at σ={sigma:g} (pixel noise std {sigma * scale:.4g}), seed {seed}:\n"
        + "\n".join(lines)
    )


def output_names(images, out_dir: Path) -> list[tuple[Path, Path]]:
    """``(NAME_compare.png, NAME_denoised.png)`` for each input: distinct for inputs that share a
    name (``NAME-2``, ``NAME-3``, ...) and never one of the inputs themselves."""
    inputs = {Path(p).resolve() for p in images}
    taken: set[Path] = set()
    names = []
    for image in images:
        stem = Path(image).stem
        for k in range(1, len(images) + 2 + len(inputs)):
            base = stem if k == 1 else f"{stem}-{k}"
            pair = (out_dir / f"{base}_compare.png", out_dir / f"{base}_denoised.png")
            resolved = {p.resolve() for p in pair}
            if not resolved & (inputs | taken):
                break
        taken |= resolved
        names.append(pair)
    return names


def read_image(path: Path, shape: tuple[int, ...], full_size: bool = False):
    """``[1, C, H, W]`` pixels in [0, 1] (8-bit values / 255, 16-bit / 65535), with the model's
    channels and (unless ``full_size``) its size, and a note saying what was resized."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                w, h = image.size
                if w * h > MAX_PIXELS:
                    raise click.BadParameter(
                        f"{str(path)!r} is {w}×{h} = {w * h / 1e6:.0f} megapixels; at most "
                        f"{MAX_PIXELS / 2**20:.0f} Mi pixels are read",
                        param_hint="IMAGE",
                    )
                array = np.asarray(_plain_mode(image))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # fmt: skip
        raise click.BadParameter(f"cannot read {str(path)!r} as an image ({e})", param_hint="IMAGE") from None  # fmt: skip
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype in (np.uint16, np.int32, np.int64) and array.max(initial=0) <= 65535:
        values = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        values = array.astype(np.float32)
    else:
        raise click.BadParameter(
            f"{str(path)!r} holds {array.dtype} pixels; 8-bit and 16-bit images are read",
            param_hint="IMAGE",
        )
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[:3]  # drop alpha
    if tensor.shape[0] != channels:
        if channels == 1:  # ITU-R 601 luma, as PIL's "L"
            weights = torch.tensor([0.299, 0.587, 0.114])[: tensor.shape[0]]
            tensor = (weights[:, None, None] * tensor).sum(0, keepdim=True) / weights.sum()
        else:
            tensor = tensor[:1].expand(channels, -1, -1)
    tensor = tensor[None]
    note = ""
    if not full_size and (h, w) != (height, width):
        shrink = max(h, w) > max(height, width)
        tensor = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=shrink,
                               align_corners=False).clamp(0, 1)  # fmt: skip
        factor = (h * w) / (height * width)
        note = (
            f" (resized {w}×{h} -> {width}×{height}, the model's size: "
            + (f"{factor:.3g}× fewer pixels; --full-size keeps them" if factor > 1 else f"{1 / factor:.3g}× more pixels")
            + ")"
        )  # fmt: skip
    return tensor.contiguous(), note


def _plain_mode(image):
    """A PIL image in a mode numpy reads as plain values: L/I;16/I (grey), RGB(A)."""
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "RGB", "RGBA", "LA", "1"):
        return image.convert("L") if image.mode == "LA" else image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.convert("RGB")


def write_png(pixels, path: Path) -> None:
    """One image ``[1, C, H, W]`` in [0, 1] as an 8-bit PNG, atomically."""
    import numpy as np
    from PIL import Image

    from scoregen._io import atomic_write

    array = (pixels[0].clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    atomic_write(path, lambda f: image.save(f, format="PNG"))
