"""Recipe: train a denoiser on a folder of your own images, sample from it, save a grid.

    python docs/recipes/image_folder.py --data-dir my_images/ --size 32 --out out/my_images

Every image file under ``--data-dir`` (PNG, JPEG, …, searched recursively) is centre-cropped
to a square, resized to ``--size`` and kept in colour (``--grayscale`` for one channel).
Pixels in [0, 1] become model values in [-1, 1]; the checkpoint records that, so samples go
back to pixels with ``to_data_space``. The same training from the shell:
``scoregen train --model unet --data image_folder --data-dir my_images/ --out mine.safetensors``.
``--tiny`` runs a few seconds' version (used by the tests).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from scoregen import (
    TrainConfig,
    annealed_langevin,
    geometric_sigmas,
    init_noise,
    load_checkpoint,
    plot,
    train,
)
from scoregen.data import image_folder, to_data_space


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a folder of images")
    parser.add_argument("--size", type=int, default=32, help="side of the square images")
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("out/image_folder"))
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for the tests")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # 1. The folder -> a Dataset of [N, C, size, size] model values in [-1, 1].
    data = image_folder(args.data_dir, size=args.size, grayscale=args.grayscale)
    print(f"{data.train.shape[0]} training images of shape {data.shape} from {args.data_dir}")

    # 2. Train a small σ-conditioned U-Net (σ in model units: pixel σ = σ × 0.5).
    sigma_min, sigma_max = 0.01, 20.0
    config = TrainConfig(
        model="unet",
        model_config={"channels": [8, 16] if args.tiny else [32, 64, 128]},
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        steps=20 if args.tiny else 20_000,
        batch_size=8 if args.tiny else 64,
        lr=1e-3,
        out_dir=str(args.out / "model"),
        progress=not args.tiny,
    )
    result = train(config, data=data)

    # 3. Sample with annealed Langevin from pure noise at σ_max.
    device = next(result.denoiser.parameters()).device  # the GPU when there is one
    checkpoint = load_checkpoint(result.checkpoint, device=device)
    n = 4 if args.tiny else 64
    generator = torch.Generator(device).manual_seed(1)
    start = init_noise((n, *data.shape), sigma_max, generator=generator, device=device)
    samples = annealed_langevin(
        checkpoint.score,
        start,
        geometric_sigmas(sigma_max, sigma_min, 4 if args.tiny else 20),
        n_steps_each=3 if args.tiny else 100,
        step_lr=0.1 * sigma_min**2,  # level i steps 0.1 σ_i²
        generator=generator,
    )

    # 4. Pixels in [0, 1], a grid beside training images, and the raw tensor.
    pixels = to_data_space(samples, checkpoint.data, clip=True).cpu()
    fig, axes = plot.new_figure(2, panel_size=(4.0, 4.3))
    plot.image_grid(to_data_space(data.train[:n], checkpoint.data), nrow=8, ax=axes[0, 0],
                    title="training images")  # fmt: skip
    plot.image_grid(pixels, nrow=8, ax=axes[0, 1], title="samples")
    figure = plot.save_figure(fig, args.out / "samples.png")
    torch.save(pixels, args.out / "samples.pt")
    print(f"wrote {figure} and {args.out / 'samples.pt'} (checkpoint: {result.checkpoint})")
    return {"data": data, "pixels": pixels, "checkpoint": result.checkpoint}


if __name__ == "__main__":
    main()
