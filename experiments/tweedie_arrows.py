"""Tweedie's arrows: where the exact posterior mean and a learned denoiser send noisy points.

Draw clean points ``x`` from a 2-D mixture (preset ``ring8``, with the component ``k`` that
drew each one), observe ``y = x + σz`` and denoise twice: with the exact posterior mean
``E[x | y]`` (``GaussianMixture.denoise``, the MMSE estimator) and with a σ-conditioned MLP
trained by MSE (``scoregen.train``; its output is an estimate of the same posterior mean).
An arrow runs from each ``y`` to its estimate. At small σ the arrows end on the component
that drew ``x``; as σ grows they shrink towards the data's centre of mass, where no data
lives: the posterior mean averages over every mode ``y`` might have come from.

Figures: ``tweedie_arrows.png``, one column per σ, arrows of the exact posterior mean (top)
and of the learned denoiser (bottom) over contours of the clean ``log p``;
``tweedie_arrows_mse.png``, the errors and the mode statistics below against σ.

Numbers (``tweedie_arrows.json``), per σ, from ``n`` draws ``(k, x, z)`` (``d = 2``):

- ``mse_noisy``, ``mse_exact``, ``mse_learned``: ``mean ‖x̂ − x‖² / d`` for ``x̂ = y``,
  ``E[x | y]`` and ``D_θ(y, σ)``, each with its standard error ``*_se``. ``mse_exact``
  estimates the MMSE, so ``learned_minus_exact`` (the paired mean difference, with its SE)
  is ``>= 0`` up to sampling noise.
- ``mmse_fisher = σ² − σ⁴ mean ‖∇log p_σ(y)‖² / d``: the MMSE again, through Tweedie's
  second-order identity ``E tr Cov(x | y) = σ² d − σ⁴ E‖∇log p_σ‖²`` (a check on
  ``mse_exact`` from the same ``y``; its SE ``mmse_fisher_se`` grows like σ⁴).
- ``learned_excess = mean ‖D_θ(y) − E[x | y]‖² / d`` (the learned error beyond the MMSE) and
  ``learned_distance = mean ‖D_θ(y) − E[x | y]‖`` (how far apart the arrow heads are).
- ``bayes_accuracy``: how often the most probable component given ``y``
  (``argmax_k P(k | y)``, the best guess of ``k`` any function of ``y`` can make) is ``k``;
  ``nearest_mode_{exact,learned}``: how often the component most responsible for the
  estimate (under the clean ``p``) is ``k``; ``toward_mode_{exact,learned}``: how often the
  estimate is closer than ``y`` to ``μ_k``.

``run(..., learned_denoiser=D)`` uses any ``D(y, sigma)`` instead of training one
(``train_steps=`` shortens training). ``tweedie_arrows_draws.npz`` holds every draw and
estimate, so each number can be recomputed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments._common import main, save_figure, train_toy_denoiser, write_json
from scoregen import plot
from scoregen._io import atomic_write
from scoregen.gmm import GaussianMixture, preset

NAME = "tweedie_arrows"
SIGMAS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 8.0)  # the numbers
ARROW_SIGMAS = (0.5, 1.5, 4.0)  # the arrow panels
TRAIN_SIGMA_RANGE = (0.05, 10.0)


def draw(mixture: GaussianMixture, n: int, generator: torch.Generator):
    """``n`` draws ``(k, x)`` of the mixture, keeping the component ``k`` that drew each ``x``."""
    component = torch.multinomial(mixture.weights, n, replacement=True, generator=generator)
    eps = torch.randn(n, mixture.dim, generator=generator, dtype=mixture.dtype)
    offset = eps * mixture.eigvals[component].sqrt()
    if mixture.eigvecs is not None:  # full covariances: Σ_k^{1/2} z = U_k diag(√λ_k) z
        offset = torch.einsum("nij,nj->ni", mixture.eigvecs[component], offset)
    return component, mixture.means[component] + offset


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / values.numel() ** 0.5


@torch.no_grad()
def denoising_stats(mixture, learned_denoiser, component, x, y, sigma: float):
    """The numbers of the module docstring at one σ, and the estimates (for the figure)."""
    dim = mixture.dim
    exact = mixture.denoise(y, sigma)
    learned = learned_denoiser(y.float(), sigma).double()
    per = {
        name: ((estimate - x) ** 2).sum(1) / dim
        for name, estimate in (("noisy", y), ("exact", exact), ("learned", learned))
    }
    row = {"sigma": sigma, "n": x.shape[0]}
    for name, values in per.items():
        row[f"mse_{name}"], row[f"mse_{name}_se"] = _mean_se(values)
    row["learned_minus_exact"], row["learned_minus_exact_se"] = _mean_se(
        per["learned"] - per["exact"]
    )
    fisher, fisher_se = _mean_se((mixture.score(y, sigma) ** 2).sum(1))
    row["mmse_fisher"] = sigma**2 - sigma**4 * fisher / dim
    row["mmse_fisher_se"] = sigma**4 * fisher_se / dim
    gap = learned - exact
    row["learned_excess"] = ((gap**2).sum(1) / dim).mean().item()
    row["learned_distance"] = gap.norm(dim=1).mean().item()
    row["bayes_accuracy"] = (
        (mixture.responsibilities(y, sigma).argmax(1) == component).double().mean().item()
    )
    home = mixture.means[component]
    for name, estimate in (("exact", exact), ("learned", learned)):
        nearest = mixture.responsibilities(estimate, 0.0).argmax(1)
        row[f"nearest_mode_{name}"] = (nearest == component).double().mean().item()
        closer = (estimate - home).norm(dim=1) < (y - home).norm(dim=1)
        row[f"toward_mode_{name}"] = closer.double().mean().item()
    return row, exact, learned


# ---------------------------------------------------------------------- figures
def _box(mixture, sigma: float) -> tuple[float, float, float, float]:
    reach = float(mixture.means.abs().max() + 3 * mixture.eigvals.max().sqrt()) + 2.0 * sigma
    return (-reach, reach, -reach, reach)


def draw_arrows(mixture, panels, path):
    """``panels``: per σ, ``(row, component, y, exact, learned)`` of the first draws."""
    with plot.style():
        fig, axes = plot.new_figure(len(panels), 2, panel_size=(3.2, 3.2))
        for col, (row, component, y, exact, learned) in enumerate(panels):
            sigma = row["sigma"]
            box = _box(mixture, sigma)
            points, xs, ys = plot.grid_points(box, 150)
            log_p = mixture.log_prob(points, 0.0).reshape(150, 150).numpy()
            top = float(log_p.max())
            colors = [plot.COLORS[int(k) % len(plot.COLORS)] for k in component]
            for ax, estimate, label, key in (
                (axes[0, col], exact, "exact $E[x | y]$", "exact"),
                (axes[1, col], learned, "learned $D_θ(y, σ)$", "learned"),
            ):
                ax.contour(xs, ys, log_p, levels=np.arange(top - 9, top, 1.5)[1:],
                           colors="0.6", linewidths=0.6, linestyles="solid")  # fmt: skip
                ax.scatter(y[:, 0], y[:, 1], s=7, c=colors, zorder=2)
                delta = estimate - y
                ax.quiver(y[:, 0], y[:, 1], delta[:, 0], delta[:, 1], color=colors,
                          angles="xy", scale_units="xy", scale=1.0, width=0.005,
                          zorder=3)  # fmt: skip
                ax.set(xlim=box[:2], ylim=box[2:], aspect="equal", xlabel="$x_1$",
                       ylabel="$x_2$")  # fmt: skip
                ax.set_title(
                    f"{label}, σ = {sigma:g}\nMSE {row[f'mse_{key}']:.3g} "
                    f"(noisy {row['mse_noisy']:.3g})"
                )
        fig.suptitle("noisy points $y = x + σz$ (dots, coloured by the component of $x$) and "
                     "arrows to their denoised estimates; grey: contours of $\\log p$")  # fmt: skip
    save_figure(fig, path)


def draw_errors(rows, path):
    sigmas = np.array([r["sigma"] for r in rows])

    def column(key):
        return np.array([r[key] for r in rows])

    with plot.style():
        fig, axes = plot.new_figure(3, panel_size=(3.7, 3.2))
        ax = axes[0, 0]  # MSE in units of the noise variance: noisy y sits at 1
        for key, label, marker in (
            ("mse_noisy", "noisy $y$", "s"),
            ("mse_exact", "exact posterior mean (MMSE)", "o"),
            ("mse_learned", "learned denoiser", "^"),
        ):
            ax.semilogx(sigmas, column(key) / sigmas**2, marker=marker, ms=4, label=label)
        ax.semilogx(sigmas, column("mmse_fisher") / sigmas**2, "k+", ms=7,
                    label="$1 − σ^2 E‖∇\\log p_σ‖^2 / d$")  # fmt: skip
        ax.set(xlabel="σ", ylabel="MSE / σ²", ylim=(0, 1.1))
        ax.set_title("denoising error per coordinate")
        ax.legend(loc="best")
        ax = axes[0, 1]  # the learned denoiser's excess over the MMSE, paired, ± 2 SE
        excess = column("learned_minus_exact") / column("mse_exact")
        ax.errorbar(sigmas, excess, yerr=2 * column("learned_minus_exact_se") / column("mse_exact"),
                    marker="^", ms=4, capsize=2, color=plot.COLORS[2])  # fmt: skip
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set(xlabel="σ", ylabel="(MSE learned − MMSE) / MMSE")
        ax.set_title("learned denoiser above the MMSE (± 2 SE)")
        ax = axes[0, 2]
        for key, label, marker in (
            ("bayes_accuracy", "Bayes: argmax P(k | y)", "s"),
            ("nearest_mode_exact", "nearest mode of E[x | y]", "o"),
            ("nearest_mode_learned", "nearest mode of $D_θ(y)$", "^"),
            ("toward_mode_exact", "E[x | y] closer to $μ_k$ than y", "x"),
            ("toward_mode_learned", "$D_θ(y)$ closer to $μ_k$ than y", "+"),
        ):
            ax.semilogx(sigmas, column(key), marker=marker, ms=4, label=label)
        ax.set(xlabel="σ", ylabel="fraction of draws", ylim=(0, 1.02))
        ax.set_title("does the arrow find the component of x?")
        ax.legend(loc="best")
    save_figure(fig, path)


def _save_draws(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    learned_denoiser=None,
    train_steps: int | None = None,
    sigmas=SIGMAS,
    arrow_sigmas=ARROW_SIGMAS,
    n_points: int | None = None,
    n_arrows: int = 60,
    preset_name: str = "ring8",
) -> dict:
    """Train (unless ``learned_denoiser`` is given), denoise, draw, write; return the numbers."""
    out_dir = Path(out_dir)
    n_points = n_points or (20_000 if full else 4_000)
    train_steps = train_steps or (8_000 if full else 2_000)
    ladder = sorted({float(s) for s in (*sigmas, *arrow_sigmas)})
    if min(ladder) <= 0:
        raise ValueError(f"sigmas and arrow_sigmas must be > 0, got {ladder}")
    if not 1 <= n_arrows <= n_points:
        raise ValueError(f"n_arrows must be in [1, n_points={n_points}], got {n_arrows}")
    mixture = preset(preset_name)

    training = {"learned": "given"}
    if learned_denoiser is None:
        lo, hi = TRAIN_SIGMA_RANGE
        if not (lo <= ladder[0] and ladder[-1] <= hi):
            raise ValueError(
                f"sigmas must lie in the training range [{lo:g}, {hi:g}], got {ladder}"
            )
        # lr 5e-3: at 2e-3 the same 2000 steps leave ~50 % excess MSE at σ = 0.5, at 5e-3 ~5 %
        learned_denoiser, info = train_toy_denoiser(
            preset_name, sigma_range=TRAIN_SIGMA_RANGE, steps=train_steps, batch_size=256,
            lr=5e-3, seed=seed,
        )  # fmt: skip
        training = {"learned": "DAE trained by scoregen.train", **info}

    generator = torch.Generator().manual_seed(seed + 1)
    rows, panels, arrays = [], [], {"sigmas": np.array(ladder)}
    for i, sigma in enumerate(ladder):
        component, x = draw(mixture, n_points, generator)
        y = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        row, exact, learned = denoising_stats(mixture, learned_denoiser, component, x, y, sigma)
        rows.append(row)
        arrays |= {f"component_{i}": component.numpy(), f"x_{i}": x.numpy(), f"y_{i}": y.numpy(),
                   f"learned_{i}": learned.numpy()}  # fmt: skip
        if sigma in {float(s) for s in arrow_sigmas}:
            first = slice(0, n_arrows)
            panels.append((row, component[first], y[first].numpy(), exact[first].numpy(),
                           learned[first].numpy()))  # fmt: skip

    draw_arrows(mixture, panels, out_dir / f"{NAME}.png")
    draw_errors(rows, out_dir / f"{NAME}_mse.png")
    _save_draws(out_dir / f"{NAME}_draws.npz", arrays)
    numbers = {
        "experiment": NAME,
        "preset": preset_name,
        "n_points": n_points,
        "training": training,
        "per_sigma": rows,
        "arrow_sigmas": [float(s) for s in arrow_sigmas],
        "figures": [f"{NAME}.png", f"{NAME}_mse.png"],
        "draws": f"{NAME}_draws.npz",
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
