"""Every model family trained the same way on the same images: test PSNR per σ, size, time.

Each family of ``scoregen.models`` (MLP, conv autoencoder, U-Net, patch transformer,
deepinv's DnCNN and DRUNet) is trained by :func:`scoregen.train` with one
:class:`~scoregen.TrainConfig` that differs only in ``model`` / ``model_config``: the same
data, the same σ distribution (log-uniform, pixel σ in [0.025, 0.5]), steps, batch size,
learning rate and seed. The datasets are scikit-learn's 8×8 digits and 8×8 patches of
scikit-image's photographs (test patches come from a photograph never trained on), both in
model space [-1, 1] (pixel = x/2 + 1/2).

Evaluation, per dataset and per pixel noise level ``s``: the held-out examples ``x`` get one
noise draw ``y = x + σ z`` (``σ = 2 s`` in model space), the same draw for every family.
In pixel space ([0, 1], ``data_range = 1``, nothing clipped) the table reports the mean
squared error over all pixels and the mean over examples of ``scoregen.metrics.psnr``.
The row ``noisy`` is the PSNR of ``y`` itself: for Gaussian noise it is
``10 log10(1/s²)`` up to a Jensen term of about ``10/(d ln 10)`` dB (``d`` pixels).

Default size (one CPU thread, about a minute of compute for 6 families × 2 datasets):
small networks and only 300 steps of batch 32, so the table compares families early in
training, not at convergence; ``--full`` (meant for a GPU) trains larger networks for
10,000 steps of batch 256 and evaluates on every test example at more noise levels.

Outputs: ``compare_architectures.json`` (every number), ``compare_architectures.md`` (the
tables), ``compare_architectures_psnr.png`` (PSNR vs σ per family) and
``compare_architectures_examples.png`` (denoised test examples at one σ).

    python -m experiments.compare_architectures --out out/compare_architectures [--full]
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

import torch

from experiments._common import main, save_figure, write_json
from scoregen import TrainConfig, train
from scoregen._io import atomic_write
from scoregen.data import load_dataset
from scoregen.metrics import psnr
from scoregen.models import MODELS, count_parameters
from scoregen.train import estimate_sigma_data

NAME = "compare_architectures"
DATASETS = ("digits", "patches")
FAMILIES = tuple(MODELS)
# noise levels in pixel units ([0, 1] data); training covers [TRAIN_SIGMA_PIXEL] log-uniformly
SIGMAS_PIXEL = (0.05, 0.1, 0.2, 0.4)
SIGMAS_PIXEL_FULL = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
TRAIN_SIGMA_PIXEL = (0.025, 0.5)
EXAMPLE_SIGMA_PIXEL = 0.2  # the σ of the denoised-examples figure
N_EXAMPLES = 8

# Network configurations for 8×8 one-channel images: small (CPU default) and full (GPU).
SMALL = {
    "mlp": dict(hidden=[256, 256], embed_dim=32),
    "conv_ae": dict(channels=(16, 32), latent_dim=64, embed_dim=32),
    "unet": dict(channels=(16, 32), embed_dim=32, groups=8),
    "patch_transformer": dict(patch_size=2, d_model=64, depth=2, n_heads=4, embed_dim=32),
    "dncnn": dict(depth=8, nf=32),
    "drunet": dict(nc=(8, 16, 32, 64), nb=1),
}
FULL = {
    "mlp": dict(hidden=[512, 512, 512], embed_dim=64),
    "conv_ae": dict(channels=(32, 64, 128), latent_dim=128, embed_dim=64),
    "unet": dict(channels=(64, 128, 128), blocks_per_level=2, embed_dim=128),
    "patch_transformer": dict(
        patch_size=2, d_model=128, depth=4, n_heads=4, embed_dim=128, head="conv"
    ),
    "dncnn": dict(depth=17, nf=64),
    "drunet": dict(nc=(32, 64, 128, 256), nb=2),
}
SIZES = {  # steps, batch size, evaluation examples per dataset (None = the whole test split)
    False: dict(steps=300, batch_size=32, n_eval=512),
    True: dict(steps=10_000, batch_size=256, n_eval=None),
}


def train_config(family: str, model_config: dict, steps: int, batch_size: int, seed: int):
    """The one training configuration every family shares (only the model differs)."""
    # model space is [-1, 1] for pixels in [0, 1]: a model-space σ is twice the pixel σ
    return TrainConfig(
        model=family,
        model_config=dict(model_config),
        noise="log_uniform",
        sigma_min=2 * TRAIN_SIGMA_PIXEL[0],
        sigma_max=2 * TRAIN_SIGMA_PIXEL[1],
        objective="dae",
        weighting="edm",
        steps=steps,
        batch_size=batch_size,
        lr=2e-3,
        warmup=min(100, steps // 10),
        lr_schedule="cosine",
        ema_decay=0.999,
        seed=seed,
        device="auto",
        log_every=max(1, steps // 10),
        progress=False,
    )


def eval_split(data, n_eval: int | None, seed: int) -> torch.Tensor:
    """The held-out examples evaluated: all of ``data.test`` or a seeded subset of ``n_eval``."""
    test = data.test
    if n_eval is None or n_eval >= test.shape[0]:
        return test
    keep = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))[:n_eval]
    return test[keep.sort().values]


def noisy_inputs(clean: torch.Tensor, sigmas: list[float], seed: int) -> list[torch.Tensor]:
    """One noise draw per model-space σ, seeded: every family denoises the same ``y``."""
    generator = torch.Generator().manual_seed(seed)
    return [clean + sigma * torch.randn(clean.shape, generator=generator) for sigma in sigmas]


def pixel_scores(data, estimate: torch.Tensor, clean: torch.Tensor) -> dict:
    """MSE over all pixels and mean per-example PSNR (± its standard error), in [0, 1] units."""
    estimate, clean = data.to_data_space(estimate.double()), data.to_data_space(clean.double())
    low, high = data.value_range
    per_example = psnr(estimate, clean, data_range=high - low)
    return {
        "mse": (estimate - clean).square().mean().item(),
        "psnr": per_example.mean().item(),
        "psnr_se": (per_example.std() / math.sqrt(len(per_example))).item(),
    }


@torch.no_grad()
def denoise(denoiser, noisy: torch.Tensor, sigma: float, batch_size: int = 1024) -> torch.Tensor:
    """``D(y, σ)`` in batches, on the denoiser's device, returned on the CPU."""
    device = next(denoiser.parameters()).device
    parts = [denoiser(chunk.to(device), sigma).float().cpu() for chunk in noisy.split(batch_size)]
    return torch.cat(parts)


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    families=None,
    datasets=None,
    steps: int | None = None,
    batch_size: int | None = None,
    n_eval: int | None = None,
    sigmas_pixel=None,
    data_options: dict | None = None,
) -> dict:
    """Train every family on every dataset, evaluate, write the JSON, tables and figures.

    The keyword options shrink the run (tests): ``families`` / ``datasets`` subsets,
    ``steps``, ``batch_size``, ``n_eval`` examples, ``sigmas_pixel``, and per-dataset
    ``data_options`` (``{"digits": {...}}``) passed to ``load_dataset``.
    """
    out_dir = Path(out_dir)
    families = tuple(families or FAMILIES)
    datasets = tuple(datasets or DATASETS)
    for family in families:
        if family not in MODELS:
            raise ValueError(f"families: unknown family {family!r}; choose from {FAMILIES}")
    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"datasets: unknown dataset {name!r}; choose from {DATASETS}")
    size = dict(SIZES[full])
    size.update(
        {k: v for k, v in dict(steps=steps, batch_size=batch_size).items() if v is not None}
    )
    if n_eval is not None:
        if not isinstance(n_eval, int) or n_eval < 1:
            raise ValueError(f"n_eval must be an integer >= 1, got {n_eval!r}")
        size["n_eval"] = n_eval
    sigmas_pixel = [
        float(s) for s in (sigmas_pixel or (SIGMAS_PIXEL_FULL if full else SIGMAS_PIXEL))
    ]
    if not all(0 < s < math.inf for s in sigmas_pixel):
        raise ValueError(f"sigmas_pixel must be finite and > 0, got {sigmas_pixel}")
    configs = FULL if full else SMALL
    data_options = data_options or {}

    results = {
        "full": full,
        "seed": seed,
        **size,
        "sigmas_pixel": sigmas_pixel,
        "train_sigma_pixel": list(TRAIN_SIGMA_PIXEL),
        "machine": f"{platform.machine()} {platform.system()}",
        "torch_threads": torch.get_num_threads(),
        "datasets": {},
    }
    examples = {}
    for d_index, name in enumerate(datasets):
        data = load_dataset(name, seed=seed, **data_options.get(name, {}))
        scale = data.normalization["scale"]
        sigmas = [s / scale for s in sigmas_pixel]  # model-space σ
        clean = eval_split(data, size["n_eval"], seed + 11 * d_index)
        noisy = noisy_inputs(clean, sigmas, seed + 101 + d_index)
        rows = [
            {
                "model": "noisy",
                "parameters": 0,
                "train_seconds": 0.0,
                "config": None,
                "by_sigma": [
                    {"sigma_pixel": s, "sigma": sigma, **pixel_scores(data, y, clean)}
                    for s, sigma, y in zip(sigmas_pixel, sigmas, noisy)
                ],
            }
        ]
        example_index = min(
            range(len(sigmas_pixel)), key=lambda i: abs(sigmas_pixel[i] - EXAMPLE_SIGMA_PIXEL)
        )
        shown = {
            "clean": clean[:N_EXAMPLES],
            "noisy": noisy[example_index][:N_EXAMPLES],
        }
        for family in families:
            config = train_config(family, configs[family], size["steps"], size["batch_size"], seed)
            trained = train(config, data=data)
            seconds = trained.summary["wall_time_s"]  # the training loop alone
            denoiser = trained.denoiser
            by_sigma = []
            for i, (s, sigma, y) in enumerate(zip(sigmas_pixel, sigmas, noisy)):
                estimate = denoise(denoiser, y, sigma)
                by_sigma.append(
                    {"sigma_pixel": s, "sigma": sigma, **pixel_scores(data, estimate, clean)}
                )
                if i == example_index:
                    shown[family] = estimate[:N_EXAMPLES]
            losses = [entry["loss"] for entry in trained.history]
            rows.append(
                {
                    "model": family,
                    "parameters": count_parameters(denoiser),
                    "train_seconds": seconds,
                    "config": configs[family],
                    "precond": denoiser.precond,
                    "first_loss": losses[0],
                    "final_loss": losses[-1],
                    "device": trained.summary["device"],
                    "by_sigma": by_sigma,
                }
            )
        results["datasets"][name] = {
            "shape": list(data.shape),
            "n_train": int(data.train.shape[0]),
            "n_eval": int(clean.shape[0]),
            "normalization": dict(data.normalization),
            "sigma_data": estimate_sigma_data(data, seed=seed),
            "example_sigma_pixel": sigmas_pixel[example_index],
            "rows": rows,
        }
        examples[name] = (shown, data.normalization)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir, NAME, results)
    text = markdown_tables(results)
    atomic_write(out_dir / f"{NAME}.md", lambda f: f.write(text), mode="w")
    save_figure(psnr_figure(results), out_dir / f"{NAME}_psnr.png")
    save_figure(examples_figure(examples, results), out_dir / f"{NAME}_examples.png")
    return results


# ---------------------------------------------------------------------- tables and figures
def markdown_tables(results: dict) -> str:
    """Per dataset: PSNR (dB) per pixel σ, parameters, training time; then the MSE table."""
    sigmas = results["sigmas_pixel"]
    header_sigmas = " | ".join(f"σ={s:g}" for s in sigmas)
    align = " | ".join("---:" for _ in sigmas)
    lines = [
        f"Training: {results['steps']} steps × batch {results['batch_size']}, pixel σ "
        f"log-uniform in [{results['train_sigma_pixel'][0]:g}, {results['train_sigma_pixel'][1]:g}], "
        f"seed {results['seed']}. σ is the pixel noise level (pixels in [0, 1]); PSNR is "
        "the mean over test examples (dB, data range 1, nothing clipped).",
        "",
    ]
    for name, block in results["datasets"].items():
        lines += [
            f"**{name}** ({block['n_train']} training examples of shape "
            f"{tuple(block['shape'])}, {block['n_eval']} held-out examples evaluated)",
            "",
            f"| model | parameters | train s | {header_sigmas} |",
            f"| --- | ---: | ---: | {align} |",
        ]
        for row in block["rows"]:
            params = f"{row['parameters']:,}" if row["model"] != "noisy" else "–"
            seconds = f"{row['train_seconds']:.1f}" if row["model"] != "noisy" else "–"
            cells = " | ".join(f"{entry['psnr']:.2f}" for entry in row["by_sigma"])
            lines.append(f"| {row['model']} | {params} | {seconds} | {cells} |")
        lines += ["", f"Test MSE (pixels in [0, 1]) on {name}:", ""]
        lines += [f"| model | {header_sigmas} |", f"| --- | {align} |"]
        for row in block["rows"]:
            cells = " | ".join(f"{entry['mse']:.2e}" for entry in row["by_sigma"])
            lines.append(f"| {row['model']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def summarize(results: dict) -> str:
    """The terminal summary: test PSNR (dB) per model and pixel σ, parameters, training time."""
    sigmas = results["sigmas_pixel"]
    lines = [
        f"{results['steps']} steps x batch {results['batch_size']}, seed {results['seed']}; "
        "test PSNR in dB per pixel σ (pixels in [0, 1])"
    ]
    for name, block in results["datasets"].items():
        lines.append(f"{name} ({block['n_eval']} held-out examples of shape {tuple(block['shape'])}):")
        header = "".join(f"{'σ=' + format(s, 'g'):>8}" for s in sigmas)
        lines.append(f"    {'model':<18} {'params':>8} {'train s':>8}{header}")
        for row in block["rows"]:
            cells = "".join(f"{entry['psnr']:>8.2f}" for entry in row["by_sigma"])
            lines.append(
                f"    {row['model']:<18} {row['parameters']:>8,} {row['train_seconds']:>8.1f}{cells}"
            )
    return "\n".join(lines)


def psnr_figure(results: dict):
    """One panel per dataset: test PSNR against pixel σ for each family and the noisy input."""
    from scoregen import plot

    names = list(results["datasets"])
    fig, axes = plot.new_figure(ncols=len(names))
    for ax, name in zip(axes[0], names):
        for i, row in enumerate(results["datasets"][name]["rows"]):
            sig = [entry["sigma_pixel"] for entry in row["by_sigma"]]
            values = [entry["psnr"] for entry in row["by_sigma"]]
            if row["model"] == "noisy":
                ax.plot(sig, values, "k--", label="noisy input")
            else:
                color = plot.COLORS[(i - 1) % len(plot.COLORS)]
                ax.plot(sig, values, "o-", color=color, markersize=3, label=row["model"])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(results["sigmas_pixel"], [f"{s:g}" for s in results["sigmas_pixel"]])
        ax.set_xlabel("pixel σ")
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title(name)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return fig


def examples_figure(examples: dict, results: dict):
    """Per dataset a column of rows: clean, noisy, then each family's denoised output."""
    from scoregen import plot

    names = list(examples)
    n_rows = max(len(shown) for shown, _ in examples.values())
    fig, axes = plot.new_figure(ncols=len(names), panel_size=(4.6, 0.42 * n_rows + 0.4))
    for ax, name in zip(axes[0], names):
        shown, normalization = examples[name]
        images = torch.cat(list(shown.values()))
        plot.image_grid(images, nrow=N_EXAMPLES, ax=ax, normalization=normalization, padding=1)
        height = images.shape[-2]
        for row, label in enumerate(shown):  # tile row r is centred at 1 + r (H + 1) + H / 2
            centre = 1 + row * (height + 1) + height / 2
            ax.text(-1, centre, label, ha="right", va="center", fontsize="small")
        s = results["datasets"][name]["example_sigma_pixel"]
        ax.set_title(f"{name}, pixel σ = {s:g}", fontsize="small")
    return fig


if __name__ == "__main__":
    main(run, __doc__)
