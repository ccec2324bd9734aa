"""Rebuild the small trained checkpoints shipped inside the package (``builtin:NAME``).

Two denoisers, each trained with :func:`scoregen.train` in a few CPU minutes and written to
``scoregen/builtin_data/NAME.safetensors`` (a few hundred KB each):

* ``ncsn2d-dae``: a σ-conditioned MLP (3 × 64) on the NCSN two-mode mixture (weights 0.8/0.2),
  σ log-uniform on [0.05, 20], so annealed Langevin can start far above the modes;
* ``digits-dae``: a small σ-conditioned U-Net on scikit-learn's 8×8 digits (pixels mapped to
  [-1, 1]), σ log-uniform on [0.02, 5], 8,000 steps (about 7 minutes on one CPU thread). At
  2,000 steps its annealed samples over-weighted the simplest digits (one class at 22 %);
  at 24,000 steps, or with twice the channels, it fits the 1,500 training digits and its
  samples include near-copies of them. docs/image_quality.md has the numbers.

The digits U-Net's training options are all spelled out below, so a change of
``TrainConfig``'s defaults does not change it.

After training it prints, as a check, the model's MSE over the exact MMSE of the mixture
(ncsn2d-dae, the oracle's posterior mean on the same draws) and the denoising PSNR on the
held-out digits (digits-dae)::

    python -m experiments.build_builtins [--only ncsn2d-dae] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from scoregen import TrainConfig, load_checkpoint, save_checkpoint, train
from scoregen.data import load_dataset

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "scoregen" / "builtin_data"

CONFIGS: dict[str, TrainConfig] = {
    "ncsn2d-dae": TrainConfig(
        model="mlp",
        model_config={"hidden": [64, 64, 64], "embed_dim": 32},
        precond="edm",
        data="ncsn2d",
        noise="log_uniform",
        sigma_min=0.05,
        sigma_max=20.0,
        weighting="edm",
        steps=4000,
        batch_size=256,
        lr=2e-3,
        warmup=200,
        seed=0,
        device="cpu",
        log_every=500,
    ),
    "digits-dae": TrainConfig(
        model="unet",
        model_config={"channels": [16, 32], "embed_dim": 16, "groups": 4},
        precond="edm",
        data="digits",
        noise="log_uniform",
        sigma_min=0.02,
        sigma_max=5.0,
        weighting="edm",
        steps=8000,
        batch_size=128,
        lr=2e-3,
        lr_schedule="cosine",
        warmup=100,
        weight_decay=0.0,
        grad_clip=1.0,
        ema_decay=0.999,
        ema_warmup=True,
        seed=0,
        device="cpu",
        log_every=500,
    ),
}


def build(name: str, out_dir: Path = BUILTIN_DIR, progress: bool = True) -> Path:
    """Train builtin ``name`` and write ``out_dir/NAME.safetensors`` (no resume state)."""
    config = CONFIGS[name]
    data = load_dataset(config.data, **config.data_options)
    result = train(config, data=data, progress=progress)
    summary = {k: v for k, v in result.summary.items() if k not in ("sigma", "sigma_data")}
    summary["builtin"] = name
    summary["built_by"] = "python -m experiments.build_builtins"
    return save_checkpoint(
        out_dir / f"{name}.safetensors",
        result.denoiser,
        data=data,
        sigma=result.summary["sigma"],
        training=summary,
    )


@torch.no_grad()
def check(name: str, path: Path) -> str:
    """One line measuring the written checkpoint against an exact reference."""
    loaded = load_checkpoint(path)
    generator = torch.Generator().manual_seed(123)
    if name == "ncsn2d-dae":
        from experiments.train_toy_mmse import mmse_table

        oracle = load_dataset("ncsn2d").oracle
        rows = mmse_table(loaded.denoiser, oracle, [0.05, 0.5, 2.0, 8.0, 20.0], 20_000, seed=7)
        ratios = ", ".join(f"σ={r['sigma']:g}: {r['ratio']:.3f}" for r in rows)
        return f"model MSE / exact MMSE: {ratios}"
    from scoregen.metrics import psnr

    data = load_dataset("digits")
    clean = data.test
    parts = []
    for sigma in (0.1, 0.3, 1.0):
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        denoised = loaded.denoiser(noisy, sigma)
        pixels = [data.to_data_space(t, clip=True) for t in (clean, noisy, denoised)]
        noisy_db = psnr(pixels[1], pixels[0]).mean().item()
        denoised_db = psnr(pixels[2], pixels[0]).mean().item()
        parts.append(f"σ={sigma:g}: {noisy_db:.1f} -> {denoised_db:.1f} dB")
    return f"test-set PSNR noisy -> denoised: {'; '.join(parts)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="one builtin")
    parser.add_argument("--out", type=Path, default=BUILTIN_DIR, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.only or sorted(CONFIGS):
        start = time.perf_counter()
        path = build(name, args.out)
        seconds = time.perf_counter() - start
        size = path.stat().st_size
        print(f"{name}: wrote {path} ({size / 1024:.0f} KB) in {seconds:.0f} s")
        print(f"  {check(name, path)}")


if __name__ == "__main__":
    main()
