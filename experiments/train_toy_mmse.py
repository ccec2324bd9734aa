"""A σ-conditioned MLP trained by MSE reaches the exact MMSE of a Gaussian mixture at every σ.

The quality target of scoregen's training loop: train the MLP on samples of the NCSN
two-mode mixture (``ncsn2d``; ``--full`` trains 3x longer and adds the eight-mode ring) for
well under a minute on a 2-core CPU, then, at eight noise levels spread over the training
range σ ∈ [0.02, 20], compare on the same draws ``(x, z)``:

    model MSE  = mean ‖D_θ(x + σz, σ) − x‖² / d
    exact MMSE = mean ‖E[x | x + σz] − x‖² / d      (GaussianMixture.denoise, the oracle)

Target: ratio ≤ 1.05 at every σ. The ratio's standard error comes from the paired draws
(delta method); ``excess`` is ``mean ‖D_θ − E[x | y]‖² / d`` divided by the MMSE, the part
of the model's error that is not irreducible noise (model MSE − MMSE up to a zero-mean
cross term). Training runs on one thread: a 128-wide MLP gains nothing from a second one,
and a second thread slows down badly when another process shares the cores.

    python -m experiments.train_toy_mmse --out out/train_toy_mmse [--full] [--seed 0]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from experiments._common import main, toy_mlp_config, write_json
from scoregen import TrainConfig, load_checkpoint, train
from scoregen.data import load_dataset

TARGET_RATIO = 1.05
SIGMA_MIN, SIGMA_MAX = 0.02, 20.0


def config_for(name: str, out_dir: Path, full: bool, seed: int) -> TrainConfig:
    """The training run: log-uniform σ over [SIGMA_MIN, SIGMA_MAX], EDM preconditioning."""
    return toy_mlp_config(
        name,
        steps=12_000 if full else 4_000,
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        batch_size=256,
        lr=2e-3,
        warmup=200,
        lr_schedule="cosine",
        ema_decay=0.999,
        seed=seed,
        out_dir=str(out_dir / name),
        log_every=500,
    )


@torch.no_grad()
def mmse_table(denoiser, oracle, sigmas, n: int, seed: int) -> list[dict]:
    """Model MSE vs exact MMSE per σ on the same ``n`` draws of ``(x, z)``."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in sigmas:
        x = oracle.sample(n, generator=generator).float()
        y = x + sigma * torch.randn(x.shape, generator=generator)
        model = (denoiser(y, sigma) - x).square().mean(1).double()
        exact_denoised = oracle.denoise(y, sigma)
        exact = (exact_denoised - x).square().mean(1).double()
        ratio = model.mean().item() / exact.mean().item()
        # delta method for a ratio of paired means: var(m_i − r e_i) / (n ē²)
        se = ((model - ratio * exact).var().item() / n) ** 0.5 / exact.mean().item()
        excess = (denoiser(y, sigma) - exact_denoised).square().mean(1).mean().item()
        rows.append(
            {
                "sigma": sigma,
                "model_mse": model.mean().item(),
                "exact_mmse": exact.mean().item(),
                "ratio": ratio,
                "ratio_se": se,
                "excess_over_mmse": excess / exact.mean().item(),
                "within_target": ratio <= TARGET_RATIO,
            }
        )
    return rows


def run(out_dir, full: bool = False, seed: int = 0) -> dict:
    """Train, reload the checkpoint, measure; writes ``train_toy_mmse.json`` under ``out_dir``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(Path(out_dir), full, seed)
    finally:
        torch.set_num_threads(threads)


def _run(out_dir: Path, full: bool, seed: int) -> dict:
    names = ["ncsn2d", "ring8"] if full else ["ncsn2d"]
    sigmas = torch.logspace(math.log10(SIGMA_MIN), math.log10(SIGMA_MAX), 8).tolist()
    results = {"target_ratio": TARGET_RATIO, "full": full, "seed": seed, "toys": {}}
    for name in names:
        config = config_for(name, out_dir, full, seed)
        start = time.perf_counter()
        trained = train(config)
        seconds = time.perf_counter() - start
        # measure the checkpoint as a user would load it (also checks the round trip)
        loaded = load_checkpoint(trained.checkpoint)
        oracle = load_dataset(name).oracle
        rows = mmse_table(
            loaded.denoiser, oracle, sigmas, n=100_000 if full else 50_000, seed=seed + 99
        )
        results["toys"][name] = {
            "train_seconds": seconds,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "checkpoint": str(trained.checkpoint),
            "rows": rows,
            "all_within_target": all(r["within_target"] for r in rows),
        }
    write_json(out_dir, "train_toy_mmse", results)
    return results


def summarize(results: dict) -> str:
    """The terminal summary: per toy, model MSE against the exact MMSE at every σ."""
    lines = []
    for name, toy in results["toys"].items():
        lines.append(
            f"{name}: {toy['steps']} steps x {toy['batch_size']} in {toy['train_seconds']:.1f} s "
            f"(target: model MSE / exact MMSE <= {results['target_ratio']})"
        )
        lines.append(
            f"{'sigma':>8} {'model MSE':>11} {'exact MMSE':>11} {'ratio':>7} {'± se':>7} {'excess':>7}"
        )
        for r in toy["rows"]:
            flag = "" if r["within_target"] else "  <- above target"
            lines.append(
                f"{r['sigma']:8.3f} {r['model_mse']:11.5f} {r['exact_mmse']:11.5f} "
                f"{r['ratio']:7.4f} {r['ratio_se']:7.4f} {r['excess_over_mmse']:7.4f}{flag}"
            )
        lines.append(f"all within target: {toy['all_within_target']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(run, __doc__)
