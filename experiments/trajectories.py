"""Particles moving down the annealing ladder: annealed Langevin tracks ``p_σ`` level by level.

Two 2-D toys with the exact score (the oracle's): the ring of eight Gaussians (``ring8``:
radius 5, std 0.4) and the NCSN two-mode mixture (``ncsn2d``: weights 0.8/0.2 at ±(5, 5),
identity covariances). Chains start from ``σ_1 z`` and run ``annealed_langevin`` over a
geometric ladder ``σ_1 → σ_L`` (no final denoising step, so the batch after level ``i``
should be distributed as ``p_{σ_i}``). A :class:`scoregen.TrajectoryRecorder` callback keeps
the batch twice per level.

Numbers (``trajectories.json``), per toy and per level σ, for the chains after that level
and, beside them, for fresh exact samples of ``p_σ`` (``mixture.sample + σ z``):

- ``mode_weights``: fraction per component (``scoregen.metrics.mode_weights`` at σ),
- ``frac_within``: fraction within ``radius`` (3 component standard deviations) of the
  nearest component mean,
- ``mean_nearest_distance``: mean distance to the nearest component mean,
- ``energy_distance`` between ``n_ed`` chains and ``n_ed`` exact samples of ``p_σ``
  (``scoregen.metrics.energy_distance``), with a permutation test of "same law"
  (``scoregen.metrics.permutation_test``: its p-value and 99 % null quantile),
- ``energy_distance_to_p``: the same against exact samples of the target ``p`` (σ = 0),
  which falls towards 0 as the ladder descends.

Figures: ``trajectories_ring8.gif`` (the ring toy, a few frames per level, a small figure)
and ``trajectories_strip_TOY.png`` (six snapshots per toy, over the contours of ``log p``).

    python -m experiments.trajectories --out out/trajectories [--full]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from experiments._common import main, save_figure, write_json
from scoregen import TrajectoryRecorder, annealed_langevin, geometric_sigmas, init_noise, plot
from scoregen.gmm import GaussianMixture, preset
from scoregen.metrics import energy_distance, mode_weights, permutation_test

NAME = "trajectories"
# per toy: σ_1, σ_L, number of levels, step_lr (α_i = step_lr σ_i²/σ_L²), plot bounds. At
# level i a chain contracts by a factor ~ 1 − α_i / (c² + σ_i²) per step (c: component std):
# step_lr = 0.1 σ_L² makes that 0.1 at the top, and σ_L = c/2 keeps it 0.02 at the bottom,
# so every level relaxes within its steps (a much smaller σ_L would need far more of them).
TOYS = {
    "ring8": {"sigma_max": 8.0, "sigma_min": 0.2, "n_levels": 8, "step_lr": 4e-3, "bounds": 8.5},
    "ncsn2d": {
        "sigma_max": 20.0,
        "sigma_min": 0.5,
        "n_levels": 8,
        "step_lr": 0.025,
        "bounds": 10.0,
    },
}


def nearest_mode_stats(x: torch.Tensor, mixture: GaussianMixture, radius: float) -> dict:
    """Mean distance to the nearest component mean and the fraction within ``radius`` of one."""
    nearest = torch.cdist(x.to(torch.float64), mixture.means).min(dim=1).values
    return {
        "mean_nearest_distance": float(nearest.mean()),
        "frac_within": float((nearest <= radius).to(torch.float64).mean()),
    }


def level_row(chains, exact, target, mixture, sigma, radius, n_ed, generator) -> dict:
    """The numbers of one level: chains against fresh exact samples of ``p_σ`` (``exact``),
    and against exact samples of the target ``p`` itself (``target``)."""
    test = permutation_test(
        energy_distance,
        chains[:n_ed],
        exact[:n_ed],
        n_permutations=200,
        alpha=0.01,
        generator=generator,
    )
    chain_stats = nearest_mode_stats(chains, mixture, radius)
    exact_stats = nearest_mode_stats(exact, mixture, radius)
    return {
        "sigma": sigma,
        "n_chains": chains.shape[0],
        "mode_weights": mode_weights(chains, mixture, sigma),
        "mode_weights_exact": mode_weights(exact, mixture, sigma),
        "frac_within": chain_stats["frac_within"],
        "frac_within_exact": exact_stats["frac_within"],
        "mean_nearest_distance": chain_stats["mean_nearest_distance"],
        "mean_nearest_distance_exact": exact_stats["mean_nearest_distance"],
        "energy_distance": float(energy_distance(chains[:n_ed], exact[:n_ed])),
        "energy_p_value": test.p_value,
        "energy_null_q99": test.threshold,
        "energy_distance_to_p": float(energy_distance(chains[:n_ed], target[:n_ed])),
    }


def run_toy(name: str, *, n_chains: int, n_steps_each: int, n_ed: int, seed: int):
    """Annealed Langevin on one toy with a recorder; the per-level numbers and the frames."""
    cfg = TOYS[name]
    mixture = preset(name)
    sigmas = geometric_sigmas(cfg["sigma_max"], cfg["sigma_min"], cfg["n_levels"],
                              dtype=torch.float64)  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    x0 = init_noise((n_chains, 2), cfg["sigma_max"], generator=generator, dtype=torch.float64)
    every = max(1, n_steps_each // 2)
    recorder = TrajectoryRecorder(every=every, x0=x0)
    start = time.perf_counter()
    annealed_langevin(
        mixture.score, x0, sigmas, n_steps_each=n_steps_each, step_lr=cfg["step_lr"],
        final_denoise=False, generator=generator, callback=recorder, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start

    radius = 3.0 * math.sqrt(float(mixture.eigvals.max()))
    target = mixture.sample(n_ed, generator=generator)
    rows = []
    for t, step in enumerate(recorder.steps):
        if step < 0 or (step + 1) % n_steps_each:
            continue  # keep the batch at the end of each level
        sigma = float(recorder.sigmas[t])
        noise = torch.randn(n_chains, 2, generator=generator, dtype=torch.float64)
        exact = mixture.sample(n_chains, generator=generator) + sigma * noise
        rows.append(
            level_row(recorder.xs[t], exact, target, mixture, sigma, radius, n_ed, generator)
        )
    labels = [
        "start: σ₁ z"
        if step < 0
        else f"σ = {float(sigma):.3g} (level {level + 1}, step {step + 1})"
        for step, level, sigma in zip(recorder.steps, recorder.levels, recorder.sigmas)
    ]
    numbers = {
        "preset": name,
        **cfg,
        "sigmas": sigmas,
        "n_steps_each": n_steps_each,
        "radius": radius,
        "true_weights": mixture.weights,
        "sampling_seconds": seconds,
        "levels": rows,
    }
    return numbers, {"frames": recorder.xs, "labels": labels, "mixture": mixture}


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    toys=("ring8", "ncsn2d"),
    n_chains: int | None = None,
    n_steps_each: int | None = None,
    n_ed: int | None = None,
    gif_chains: int = 400,
    gif_frames: int = 40,
    n_panels: int = 6,
) -> dict:
    """Run every toy, draw the GIF (ring8, when run) and the strip, write and return the numbers."""
    out_dir = Path(out_dir)
    n_chains = n_chains or (10_000 if full else 2_000)
    n_steps_each = n_steps_each or (300 if full else 100)
    n_ed = min(n_ed or (2_000 if full else 800), n_chains)
    unknown = sorted(set(toys) - set(TOYS))
    if unknown:
        raise ValueError(f"toys must be among {sorted(TOYS)}, got {list(toys)}")

    results, drawn = {}, {}
    for i, name in enumerate(toys):
        results[name], drawn[name] = run_toy(
            name, n_chains=n_chains, n_steps_each=n_steps_each, n_ed=n_ed, seed=seed + 100 * i
        )

    figures = []
    if "ring8" in drawn:
        d = drawn["ring8"]
        frames = [x[:gif_chains] for x in d["frames"]]
        plot.trajectory_gif(frames, out_dir / f"{NAME}_ring8.gif", labels=d["labels"],
                            mixture=d["mixture"], bounds=TOYS["ring8"]["bounds"], fps=3,
                            max_frames=gif_frames)  # fmt: skip
        figures.append(f"{NAME}_ring8.gif")
    for name, d in drawn.items():
        fig = plot.trajectory_strip(
            [x[:gif_chains] for x in d["frames"]], labels=d["labels"], mixture=d["mixture"],
            bounds=TOYS[name]["bounds"], n_panels=n_panels,
            title=f"{name}: annealed Langevin with the exact score (contours: log p)",
        )  # fmt: skip
        save_figure(fig, out_dir / f"{NAME}_strip_{name}.png")
        figures.append(f"{NAME}_strip_{name}.png")

    numbers = {
        "experiment": NAME,
        "n_chains": n_chains,
        "n_ed": n_ed,
        "toys": results,
        "figures": figures,
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
