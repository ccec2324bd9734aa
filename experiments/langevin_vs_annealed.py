"""Plain versus annealed Langevin on the NCSN toy, exact and learned scores, and the T = 1/2 loop.

(a) The NCSN two-mode mixture (preset ``ncsn2d``: weights 0.8/0.2 at ±(5, 5), identity
covariances), chains started uniformly in the box [−8, 8]². Annealed Langevin walks the
geometric ladder σ = 20 → 1 (10 levels, ``n_steps_each`` ULA steps per level, step
``α_i = step_lr σ_i²/σ_L²``); plain Langevin spends the same number of steps at the last
level alone (σ = σ_L, step ``step_lr``). Both therefore target the same ``p_{σ_L}`` and
differ only in the path. The score is the oracle's. Plain Langevin splits the chains by
basin of attraction (about 0.5/0.5, since the box is symmetric); annealing recovers the
weights. Weights are counted with ``scoregen.metrics.mode_weights`` at σ = σ_L, each with
its binomial standard error ``sqrt(w (1 − w) / n)``.

(b) The same with a learned score: a small σ-conditioned MLP denoiser trained by
``scoregen.train`` on the toy with σ log-uniform over the annealing range, turned into a
score by Tweedie's formula ``(D(x, σ) − x)/σ²``.

(c) The temperature of the loop ``x ← x + ε s(x) + sqrt(ε) z``: its noise is ``sqrt(2 ε T)``
with ``T = 1/2``, so its stationary law is ``p²`` normalised, not ``p``
(``langevin(..., temperature=0.5)``). Two 1-D targets: a Gaussian ``N(0, s²)``, for which
``p²`` normalised is ``N(0, s²/2)``, and a two-mode mixture whose modes overlap enough for
the chains to cross (``p²`` normalised computed on a grid from the oracle's ``log_prob``).
Many independent chains start from exact samples of ``p``; the final states of the T = 1/2
and T = 1 chains are compared with ``p`` and ``p²``: sample variance, Kolmogorov–Smirnov
distance, and total variation of the histogram. For a Gaussian target ULA's stationary
variance is known in closed form, ``2 ε T / (1 − (1 − ε/s²)²)``, and is reported beside the
exact ``T s²``.

Figures: ``langevin_vs_annealed.png`` (scatter plots over ``log p_{σ_L}`` and the weight
table as bars, exact score on top, learned below) and ``langevin_temperature.png``
(histograms against ``p`` and ``p²``). Numbers: ``langevin_vs_annealed.json``.

    python -m experiments.langevin_vs_annealed --out out/langevin_vs_annealed [--full]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import trapezoid

from experiments._common import main, save_figure, write_json
from scoregen import (
    GaussianMixture,
    TrainConfig,
    annealed_langevin,
    geometric_sigmas,
    init_uniform,
    langevin,
    plot,
    train,
)
from scoregen.gmm import preset
from scoregen.metrics import mode_weights

NAME = "langevin_vs_annealed"
BOX = 8.0  # uniform start in [−BOX, BOX]²
SIGMA_MAX, SIGMA_MIN, N_LEVELS = 20.0, 1.0, 10
STEP_LR = 0.1
# (c): the Gaussian N(0, s²) and a two-mode mixture with overlapping modes
GAUSS_STD = 1.0
MIXTURE_1D = {"weights": [0.7, 0.3], "means": [[-0.75], [0.75]], "covs": [0.25, 0.25]}


# ---------------------------------------------------------------------- (a), (b): the NCSN toy
def weight_table(samples: torch.Tensor, mixture: GaussianMixture, sigma: float) -> dict:
    """Recovered mode weights with binomial standard errors, against the true weights."""
    n = samples.shape[0]
    weights = mode_weights(samples, mixture, sigma)
    true = mixture.weights.to(torch.float64)
    se = (weights * (1 - weights) / n).sqrt()
    se_true = (true * (1 - true) / n).sqrt()
    return {
        "n": n,
        "weights": weights,
        "se": se,
        "true_weights": true,
        "se_at_true": se_true,
        "z_scores": (weights - true) / se_true,
    }


def plain_and_annealed(score, x0, sigmas, *, n_steps_each, step_lr, seed) -> dict:
    """Annealed Langevin over ``sigmas`` and plain ULA at ``sigmas[-1]`` for the same number
    of steps, from the same start; both target ``p_{σ_L}`` (no final denoising step)."""
    sigma_last = float(sigmas[-1])
    out = {}
    start = time.perf_counter()
    out["plain"] = langevin(
        score, x0, sigma=sigma_last, step_size=step_lr, n_steps=len(sigmas) * n_steps_each,
        generator=torch.Generator().manual_seed(seed), progress=False,
    )  # fmt: skip
    out["plain_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    out["annealed"] = annealed_langevin(
        score, x0, sigmas, n_steps_each=n_steps_each, step_lr=step_lr, final_denoise=False,
        generator=torch.Generator().manual_seed(seed + 1), progress=False,
    )  # fmt: skip
    out["annealed_seconds"] = time.perf_counter() - start
    return out


def train_score(seed: int, steps: int, hidden: list[int]):
    """A small MLP denoiser trained on ``ncsn2d`` over the annealing range; its Tweedie score."""
    config = TrainConfig(
        model="mlp",
        model_config={"hidden": hidden, "embed_dim": 32},
        data="ncsn2d",
        noise="log_uniform",
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        objective="dae",
        steps=steps,
        batch_size=256,
        lr=2e-3,
        warmup=min(100, steps // 10),
        seed=seed,
        device="cpu",
        log_every=max(1, steps),
        progress=False,
    )
    start = time.perf_counter()
    result = train(config)
    info = {
        "steps": steps,
        "hidden": hidden,
        "seconds": time.perf_counter() - start,
        "final_loss": result.summary.get("final_loss"),
    }
    return result.score, info


# ---------------------------------------------------------------------- (c): the temperature
def ula_gaussian_variance(std: float, step_size: float, temperature: float) -> float:
    """Stationary variance of ULA on ``N(0, s²)``: ``x' = (1 − ε/s²) x + sqrt(2εT) z``."""
    a = 1.0 - step_size / std**2
    return 2.0 * step_size * temperature / (1.0 - a * a)


def grid_law(mixture: GaussianMixture, power: float, lo: float, hi: float, n: int = 20001):
    """``p^power`` normalised on a grid (trapezoid): grid, density and CDF (float64 numpy)."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    log_q = power * mixture.log_prob(x[:, None])
    q = (log_q - log_q.max()).exp().numpy()
    xs = x.numpy()
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (q[1:] + q[:-1]) * np.diff(xs))])
    return xs, q / cdf[-1], cdf / cdf[-1]


def ks_distance(samples: np.ndarray, grid: np.ndarray, cdf: np.ndarray) -> float:
    """``sup |F_n − F|`` with ``F`` interpolated on the grid (both sides of every jump)."""
    x = np.sort(samples)
    n = len(x)
    f = np.interp(x, grid, cdf)
    return float(max((np.arange(1, n + 1) / n - f).max(), (f - np.arange(n) / n).max()))


def histogram_tv(samples: np.ndarray, grid: np.ndarray, cdf: np.ndarray, bins: int) -> float:
    """Total variation between the histogram's bin frequencies and the law's bin masses
    (over ``bins`` equal bins on the grid's range, plus the mass outside it)."""
    edges = np.linspace(grid[0], grid[-1], bins + 1)
    counts, _ = np.histogram(samples, edges)
    masses = np.diff(np.interp(edges, grid, cdf))
    outside_samples = 1.0 - counts.sum() / len(samples)
    outside_mass = 1.0 - masses.sum()
    return 0.5 * float(
        np.abs(counts / len(samples) - masses).sum() + abs(outside_samples - outside_mass)
    )


def temperature_case(
    mixture: GaussianMixture, *, n_chains, n_steps, step_size, bins, seed, window
) -> tuple[dict, dict]:
    """Run the T = 1/2 and T = 1 loops from exact samples of ``p``; compare with ``p``, ``p²``."""
    generator = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(n_chains, generator=generator)
    laws = {name: grid_law(mixture, power, *window) for name, power in (("p", 1.0), ("p2", 2.0))}
    numbers, finals = {}, {}
    for label, temperature in (("T_half", 0.5), ("T_one", 1.0)):
        x = langevin(
            mixture.score, x0, step_size=step_size, n_steps=n_steps, temperature=temperature,
            generator=generator, progress=False,
        )[:, 0].numpy()  # fmt: skip
        finals[label] = x
        row = {
            "temperature": temperature,
            "mean": float(x.mean()),
            "variance": float(x.var(ddof=1)),
        }
        for law, (grid, _, cdf) in laws.items():
            row[f"ks_to_{law}"] = ks_distance(x, grid, cdf)
            row[f"tv_hist_to_{law}"] = histogram_tv(x, grid, cdf, bins)
        numbers[label] = row
    for law, (grid, density, _) in laws.items():
        # scipy's trapezoid: numpy has it only from 2.0 (numpy >= 1.24 is supported)
        mean = float(trapezoid(grid * density, grid))
        numbers[f"variance_of_{law}"] = float(trapezoid((grid - mean) ** 2 * density, grid))
    numbers.update(n_chains=n_chains, n_steps=n_steps, step_size=step_size, bins=bins)
    return numbers, {"finals": finals, "laws": laws}


# ---------------------------------------------------------------------- figures
def _weight_bars(ax, tables: dict, true_weights, title: str) -> None:
    labels = list(tables)
    n_modes = len(true_weights)
    width = 0.8 / (len(labels) + 1)
    positions = np.arange(n_modes)
    ax.bar(positions, np.asarray(true_weights, dtype=float), width, color="0.7", label="true")
    for i, label in enumerate(labels):
        table = {k: np.asarray(tables[label][k], dtype=float) for k in ("weights", "se")}
        ax.bar(positions + (i + 1) * width, table["weights"], width, yerr=2 * table["se"],
               capsize=2, color=plot.COLORS[i], label=label)  # fmt: skip
        for j in range(n_modes):
            ax.text(positions[j] + (i + 1) * width, float(table["weights"][j]) + 0.03,
                    f"{float(table['weights'][j]):.3f}", ha="center", fontsize=6.5)  # fmt: skip
    ax.set_xticks(positions + width * len(labels) / 2, [f"mode {j + 1}" for j in range(n_modes)])
    ax.set(ylabel="fraction of chains (±2 s.e.)", ylim=(0, 1.0), title=title)
    ax.legend(loc="upper right")


def draw_toy(path: Path, mixture, rows: dict, sigma_last: float, n_scatter: int) -> None:
    with plot.style():
        fig, axes = plot.new_figure(3, len(rows), panel_size=(3.2, 3.0))
        for r, (score_name, row) in enumerate(rows.items()):
            for c, sampler in enumerate(("plain", "annealed")):
                table = row["tables"][sampler]
                w = ", ".join(f"{float(v):.3f}" for v in table["weights"])
                plot.scatter_samples(
                    row["samples"][sampler][:n_scatter], mixture, sigma=sigma_last, bounds=11.0,
                    ax=axes[r, c], color=plot.COLORS[c], size=3,
                    title=f"{score_name} score, {sampler}: weights {w}",
                )  # fmt: skip
            _weight_bars(axes[r, 2], row["tables"], mixture.weights.tolist(),
                         f"{score_name} score: mode weights")  # fmt: skip
        fig.suptitle(
            f"NCSN toy, start U[−{BOX:g}, {BOX:g}]²: plain Langevin at σ = {sigma_last:g} vs "
            f"annealed σ = {SIGMA_MAX:g} → {sigma_last:g} (same number of steps)"
        )
    save_figure(fig, path)


def _on_grid(grid: np.ndarray, density: np.ndarray):
    """A density tabulated on a grid as a callable ``f(x [M, 1]) -> [M]`` (linear interpolation)."""
    return lambda x: torch.from_numpy(np.interp(x[:, 0].numpy(), grid, density))


def draw_temperature(path: Path, cases: dict) -> None:
    with plot.style():
        fig, axes = plot.new_figure(2, len(cases), panel_size=(3.4, 2.8))
        for r, (case, (numbers, drawn)) in enumerate(cases.items()):
            for c, label in enumerate(("T_half", "T_one")):
                row = numbers[label]
                densities = {
                    "p": _on_grid(*drawn["laws"]["p"][:2]),
                    "p² normalised": _on_grid(*drawn["laws"]["p2"][:2]),
                }
                loop = "x + ε s + √ε z  (T = 1/2)" if label == "T_half" else "ULA, T = 1"
                plot.histogram_1d(
                    drawn["finals"][label], densities, bins=numbers["bins"], ax=axes[r, c],
                    label="chains",
                    title=(f"{case}: {loop}\nvar {row['variance']:.3f}; KS to p "
                           f"{row['ks_to_p']:.3f}, to p² {row['ks_to_p2']:.3f}"),
                )  # fmt: skip
        fig.suptitle("The √ε loop samples p² (normalised), not p")
    save_figure(fig, path)


# ---------------------------------------------------------------------- the experiment
def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    n_chains: int | None = None,
    n_steps_each: int | None = None,
    n_chains_learned: int | None = None,
    n_steps_each_learned: int | None = None,
    train_steps: int | None = None,
    hidden: tuple[int, ...] = (64, 64, 64),
    learned_score=None,
    n_chains_1d: int | None = None,
    n_steps_1d: int | None = None,
    step_size_1d: float = 0.02,
    draw: bool = True,
) -> dict:
    """Run (a), (b), (c); draw the two figures; write and return the numbers.

    ``learned_score`` (a ``score(x, sigma)``) replaces the training of (b); ``train_steps``
    sets its length. The other keywords shrink or grow the runs; ``draw=False`` skips the
    figures (the numbers only).
    """
    out_dir = Path(out_dir)
    mixture = preset("ncsn2d")
    n_chains = n_chains or (20_000 if full else 4_000)
    n_steps_each = n_steps_each or (300 if full else 100)
    n_chains_learned = n_chains_learned or (10_000 if full else 1_000)
    n_steps_each_learned = n_steps_each_learned or (300 if full else 100)
    train_steps = train_steps or (8_000 if full else 2_000)
    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, N_LEVELS, dtype=torch.float64)
    sigma_last = float(sigmas[-1])
    timings = {}

    # (a) exact score
    x0 = init_uniform((n_chains, 2), -BOX, BOX, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)  # fmt: skip
    exact = plain_and_annealed(mixture.score, x0, sigmas, n_steps_each=n_steps_each,
                               step_lr=STEP_LR, seed=seed + 10)  # fmt: skip
    timings.update(exact_plain_s=exact["plain_seconds"], exact_annealed_s=exact["annealed_seconds"])

    # (b) learned score
    training = None
    if learned_score is None:
        learned_score, training = train_score(seed, train_steps, list(hidden))
        timings["train_s"] = training["seconds"]
    x0_learned = init_uniform((n_chains_learned, 2), -BOX, BOX,
                              generator=torch.Generator().manual_seed(seed + 20))  # fmt: skip
    learned = plain_and_annealed(learned_score, x0_learned, sigmas.float(),
                                 n_steps_each=n_steps_each_learned, step_lr=STEP_LR,
                                 seed=seed + 30)  # fmt: skip
    timings.update(learned_plain_s=learned["plain_seconds"],
                   learned_annealed_s=learned["annealed_seconds"])  # fmt: skip

    rows = {}
    for name, result in (("exact", exact), ("learned", learned)):
        samples = {k: result[k].to(torch.float64) for k in ("plain", "annealed")}
        tables = {k: weight_table(v, mixture, sigma_last) for k, v in samples.items()}
        rows[name] = {"samples": samples, "tables": tables}

    # (c) temperature
    n_chains_1d = n_chains_1d or (50_000 if full else 10_000)
    n_steps_1d = n_steps_1d or (2_000 if full else 600)
    gauss = GaussianMixture([1.0], [[0.0]], [GAUSS_STD**2])
    two_modes = GaussianMixture(**MIXTURE_1D)
    start = time.perf_counter()
    cases = {}
    for i, (case, target, window) in enumerate((
        ("gaussian", gauss, (-6 * GAUSS_STD, 6 * GAUSS_STD)),
        ("mixture", two_modes, (-4.0, 4.0)),
    )):  # fmt: skip
        cases[case] = temperature_case(
            target, n_chains=n_chains_1d, n_steps=n_steps_1d, step_size=step_size_1d,
            bins=60, seed=seed + 40 + i, window=window,
        )  # fmt: skip
    timings["temperature_s"] = time.perf_counter() - start
    gauss_numbers = cases["gaussian"][0]
    for label, temperature in (("T_half", 0.5), ("T_one", 1.0)):
        gauss_numbers[label]["ula_stationary_variance"] = ula_gaussian_variance(
            GAUSS_STD, step_size_1d, temperature
        )
        gauss_numbers[label]["exact_variance_T_s2"] = temperature * GAUSS_STD**2

    figures = [f"{NAME}.png", "langevin_temperature.png"] if draw else []
    if draw:
        draw_toy(out_dir / figures[0], mixture, rows, sigma_last, n_scatter=2_000)
        draw_temperature(out_dir / figures[1], cases)

    numbers = {
        "experiment": NAME,
        "toy": {
            "preset": "ncsn2d",
            "init_box": [-BOX, BOX],
            "sigmas": sigmas,
            "step_lr": STEP_LR,
            "weights_counted_at_sigma": sigma_last,
            "exact": {
                "n_chains": n_chains,
                "n_steps_each": n_steps_each,
                "plain": rows["exact"]["tables"]["plain"],
                "annealed": rows["exact"]["tables"]["annealed"],
            },
            "learned": {
                "n_chains": n_chains_learned,
                "n_steps_each": n_steps_each_learned,
                "training": training,
                "plain": rows["learned"]["tables"]["plain"],
                "annealed": rows["learned"]["tables"]["annealed"],
            },
        },
        "temperature": {
            "gaussian": {"std": GAUSS_STD, **gauss_numbers},
            "mixture": {**MIXTURE_1D, **cases["mixture"][0]},
        },
        "timings_s": timings,
        "figures": figures,
    }
    write_json(out_dir, NAME, numbers)
    return numbers


def summarize(numbers: dict) -> str:
    """The terminal summary: recovered mode weights per score and sampler, and the
    temperature table (variance and KS distance to ``p`` and ``p²``)."""
    toy = numbers["toy"]
    true = toy["exact"]["plain"]["true_weights"]
    lines = [
        f"NCSN toy, weights counted at σ = {toy['weights_counted_at_sigma']:g} "
        f"(true {_pair(true)}):",
        f"    {'score':<8} {'sampler':<9} {'chains':>6}  {'weights':<16} {'z (first mode)':>14}",
    ]
    for score in ("exact", "learned"):
        for sampler in ("plain", "annealed"):
            row = toy[score][sampler]
            lines.append(
                f"    {score:<8} {sampler:<9} {row['n']:>6}  {_pair(row['weights']):<16} "
                f"{row['z_scores'][0]:>14.1f}"
            )
    training = toy["learned"]["training"]
    lines.append(
        f"learned score: {training['steps']} training steps, final loss "
        f"{training['final_loss']:.4g}"
    )
    lines.append("ULA temperature (final states of many chains):")
    lines.append(
        f"    {'target':<9} {'T':>4} {'variance':>9} {'var p':>7} {'var p²':>7} "
        f"{'KS to p':>8} {'KS to p²':>9}"
    )
    for target, block in numbers["temperature"].items():
        for key in ("T_half", "T_one"):
            row = block[key]
            lines.append(
                f"    {target:<9} {row['temperature']:>4g} {row['variance']:>9.4f} "
                f"{block['variance_of_p']:>7.4f} {block['variance_of_p2']:>7.4f} "
                f"{row['ks_to_p']:>8.4f} {row['ks_to_p2']:>9.4f}"
            )
    return "\n".join(lines)


def _pair(values) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


if __name__ == "__main__":
    main(run, __doc__)
