"""Noise blurs the data density: ``p_σ = p * N(0, σ²I)``, in 1-D and 2-D, with noisy copies.

Adding ``σz`` to data drawn from ``p`` draws from the convolution ``p_σ``; for a mixture
``p_σ = Σ w_k N(μ_k, Σ_k + σ²I)`` exactly (``GaussianMixture.blurred``). As σ grows the valleys
between modes fill in, so a denoiser trained at that σ sees examples, and learns a score,
where the data itself has almost none.

Figures: ``blurred_density_1d.png`` (preset ``bimodal1d``: ``p_σ`` for a ladder of σ, linear
and log scale, the low-density region of ``p`` shaded), ``blurred_density_2d.png`` (preset
``ring8``: ``log p_σ`` images), ``blurred_density_points.png`` (a few data points and their
noisy copies at three σ, over the contours of ``p_σ``).

Numbers (``blurred_density.json``), per σ:

- ``integral``: ``∫ p_σ`` by the trapezoid rule on the grid, beside ``mass_in_window``, the
  exact mass of the grid's window (normal CDFs): they agree to quadrature error and are ≈ 1.
- 1-D: the modes of ``p_σ`` (zeros of the exact score, refined by bisection), and
  ``valley_to_peak = p_σ(valley) / p_σ(lower mode)`` (null once ``p_σ`` has one mode);
  ``tv_from_clean = ½ ∫ |p_σ − p|`` on the grid.
- 2-D: ``centre_to_peak = p_σ(0) / max p_σ`` (the hole of the ring filling in).
- ``low_density_mass``: the mass ``p_σ`` puts in the low-density region of the data,
  ``L = {x : p(x) < τ · max p}`` with ``τ = 0.01`` (grid quadrature), and in 2-D
  ``noisy_fraction_in_low_density``, the fraction of ``n_noisy`` seeded draws of
  ``x + σz`` that land in ``L`` (an unbiased Monte-Carlo estimate of the same mass).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from experiments._common import main, save_figure, write_json
from scoregen import plot
from scoregen.gmm import GaussianMixture, preset

NAME = "blurred_density"
SIGMAS_1D = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
SIGMAS_2D = (0.0, 0.5, 1.0, 2.0, 3.0)
SIGMAS_POINTS = (0.5, 1.0, 2.0)
WINDOW_1D = (-12.0, 12.0)
BOX_2D = 14.0
LOW_DENSITY_FRACTION = 0.01  # τ: L = {x : p(x) < τ · max p}


def window_mass(mixture: GaussianMixture, sigma: float, lows, highs) -> float:
    """Exact ``P_σ(lows <= x <= highs)`` of an axis-aligned box (diagonal covariances only):
    ``Σ_k w_k Π_i [Φ((b_i − μ_ki)/s_ki) − Φ((a_i − μ_ki)/s_ki)]`` with ``s² = λ + σ²``."""
    if mixture.eigvecs is not None:
        raise ValueError("window_mass needs scalar or diagonal covariances")
    std = (mixture.eigvals + sigma**2).sqrt()
    lows = torch.as_tensor(lows, dtype=std.dtype)
    highs = torch.as_tensor(highs, dtype=std.dtype)
    cdf = torch.special.ndtr
    per_axis = cdf((highs - mixture.means) / std) - cdf((lows - mixture.means) / std)
    return float(mixture.weights @ per_axis.prod(dim=1))


def trapezoid_weights(n: int, step: float) -> torch.Tensor:
    """Weights of the trapezoid rule on ``n`` equally spaced points."""
    weights = torch.full((n,), step, dtype=torch.float64)
    weights[[0, -1]] = step / 2
    return weights


def stationary_points_1d(mixture: GaussianMixture, sigma: float, x: torch.Tensor, iters=60):
    """Local maxima and minima of a 1-D ``p_σ``: sign changes of the exact score on the grid
    ``x [N, 1]``, each refined by bisection (all brackets at once)."""
    score = mixture.score(x, sigma)[:, 0]
    sign = torch.sign(score)
    change = torch.nonzero(sign[1:] * sign[:-1] < 0)[:, 0]
    lo, hi = x[change, 0].clone(), x[change + 1, 0].clone()
    falling = score[change] > 0  # + to − is a maximum
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        same_as_lo = (mixture.score(mid[:, None], sigma)[:, 0] > 0) == falling
        lo = torch.where(same_as_lo, mid, lo)
        hi = torch.where(same_as_lo, hi, mid)
    roots = 0.5 * (lo + hi)
    return roots[falling], roots[~falling]


def one_d_numbers(mixture, sigmas, n_grid):
    """Densities on the 1-D grid and the per-σ numbers of the module docstring."""
    x = torch.linspace(*WINDOW_1D, n_grid, dtype=torch.float64)[:, None]
    weights = trapezoid_weights(n_grid, (WINDOW_1D[1] - WINDOW_1D[0]) / (n_grid - 1))
    clean = mixture.log_prob(x).exp()
    peak_clean = float(mixture.log_prob(mixture.mode()[None]).exp())
    low = clean < LOW_DENSITY_FRACTION * peak_clean
    densities, rows = [], []
    for sigma in sigmas:
        density = mixture.log_prob(x, sigma).exp()
        maxima, minima = stationary_points_1d(mixture, sigma, x)
        valley_to_peak = None
        if len(maxima) >= 2 and len(minima) >= 1:
            valley = mixture.log_prob(minima[:, None], sigma).min()
            lower_peak = mixture.log_prob(maxima[:, None], sigma).min()
            valley_to_peak = float((valley - lower_peak).exp())
        rows.append(
            {
                "sigma": sigma,
                "integral": float(weights @ density),
                "mass_in_window": window_mass(mixture, sigma, [WINDOW_1D[0]], [WINDOW_1D[1]]),
                "n_modes": len(maxima),
                "modes": maxima.tolist(),
                "valleys": minima.tolist(),
                "valley_to_peak": valley_to_peak,
                "low_density_mass": float(weights @ (density * low)),
                "tv_from_clean": float(0.5 * weights @ (density - clean).abs()),
            }
        )
        densities.append(density)
    return x[:, 0], densities, low, rows


def two_d_numbers(mixture, sigmas, n_grid, n_noisy, generator):
    """Log-densities on the 2-D grid and the per-σ numbers of the module docstring."""
    points, xs, _ = plot.grid_points(BOX_2D, n_grid)
    w1 = trapezoid_weights(n_grid, float(xs[1] - xs[0]))
    weights = (w1[:, None] * w1[None, :]).reshape(-1)
    peak_clean = float(mixture.log_prob(mixture.mode()[None]))
    threshold = math.log(LOW_DENSITY_FRACTION) + peak_clean
    low = mixture.log_prob(points) < threshold
    data = mixture.sample(n_noisy, generator=generator)
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
    images, rows = [], []
    for sigma in sigmas:
        log_density = mixture.log_prob(points, sigma)
        density = log_density.exp()
        peak = mixture.blurred(sigma).mode()
        peak_log = float(mixture.log_prob(peak[None], sigma))
        centre_log = float(mixture.log_prob(torch.zeros(1, 2, dtype=torch.float64), sigma))
        noisy = data + sigma * noise
        in_low = mixture.log_prob(noisy) < threshold
        rows.append(
            {
                "sigma": sigma,
                "integral": float(weights @ density),
                "mass_in_window": window_mass(mixture, sigma, [-BOX_2D] * 2, [BOX_2D] * 2),
                "peak_at": peak.tolist(),
                "peak_log_density": peak_log,
                "centre_to_peak": math.exp(centre_log - peak_log),
                "low_density_mass": float(weights @ (density * low)),
                "noisy_fraction_in_low_density": float(in_low.double().mean()),
                "n_noisy": n_noisy,
            }
        )
        images.append(log_density.reshape(n_grid, n_grid))
    return images, rows


def _sigma_label(sigma: float) -> str:
    return "σ = 0 (data)" if sigma == 0 else f"σ = {sigma:g}"


def draw_1d(x, densities, low, sigmas, path):
    with plot.style():
        fig, axes = plot.new_figure(2, panel_size=(4.2, 3.1))
        curves = {_sigma_label(s): d for s, d in zip(sigmas, densities)}
        window = (x > -7) & (x < 7)
        plot.density_1d(x[window], {k: v[window] for k, v in curves.items()}, ax=axes[0, 0],
                        ylabel="$p_σ(x)$", title="blurred densities $p_σ = p * N(0, σ^2)$")  # fmt: skip
        plot.density_1d(x, curves, ax=axes[0, 1], ylabel="$p_σ(x)$ (log scale)", logy=True,
                        title=f"log scale; shaded: p(x) < {LOW_DENSITY_FRACTION:g} · max p")  # fmt: skip
        axes[0, 1].set_ylim(1e-6, 2.0)
        axes[0, 1].fill_between(x.numpy(), 1e-6, 2.0, where=low.numpy(), color="0.92", zorder=0)
        axes[0, 1].get_legend().remove()
        fig.suptitle("1-D prior 0.7 N(−2, 0.5²) + 0.3 N(2, 0.5²) blurred by Gaussian noise")
    save_figure(fig, path)


def draw_2d(images, sigmas, path, shown=10.0):
    top = max(float(image.max()) for image in images)  # one colour scale for all panels
    with plot.style():
        fig, axes = plot.new_figure(len(sigmas), panel_size=(2.5, 2.5))
        for ax, image, sigma in zip(axes[0], images, sigmas):
            plot.density_2d(image, BOX_2D, ax=ax, title=_sigma_label(sigma), colorbar=False,
                            vmin=top - 14.0, vmax=top)  # fmt: skip
            ax.set(xlim=(-shown, shown), ylim=(-shown, shown))
        fig.colorbar(ax.images[0], ax=axes[0].tolist(), shrink=0.85, label="log $p_σ(x)$")
        fig.suptitle("ring of 8 Gaussians blurred: log-density of $x + σz$")
    save_figure(fig, path)


def draw_points(mixture, data, noisy_copies, sigmas, path):
    with plot.style():
        fig, axes = plot.new_figure(len(sigmas), panel_size=(3.0, 3.0))
        for ax, copies, sigma in zip(axes[0], noisy_copies, sigmas):
            plot.scatter_samples(copies, mixture, sigma=sigma, bounds=9.0, ax=ax,
                                 color=plot.COLORS[3], label="x + σz", size=5, alpha=0.7)  # fmt: skip
            ax.scatter(data[:, 0], data[:, 1], s=22, color=plot.COLORS[0], edgecolor="white",
                       lw=0.6, label="data x", zorder=3)  # fmt: skip
            ax.get_legend().remove()
            ax.set_title(f"σ = {sigma:g}")
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center")
        fig.suptitle("data points, their noisy copies, and contours of log $p_σ$")
    save_figure(fig, path)


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    n_grid_1d: int | None = None,
    n_grid_2d: int | None = None,
    n_noisy: int | None = None,
    n_points: int = 10,
    n_copies: int = 30,
) -> dict:
    """Compute densities and numbers, draw the three figures, write the JSON; return the numbers."""
    out_dir = Path(out_dir)
    n_grid_1d = n_grid_1d or (9601 if full else 2401)
    n_grid_2d = n_grid_2d or (561 if full else 281)
    n_noisy = n_noisy or (200_000 if full else 20_000)
    generator = torch.Generator().manual_seed(seed)

    mixture_1d = preset("bimodal1d")
    x, densities, low, rows_1d = one_d_numbers(mixture_1d, SIGMAS_1D, n_grid_1d)
    draw_1d(x, densities, low, SIGMAS_1D, out_dir / f"{NAME}_1d.png")

    mixture_2d = preset("ring8")
    images, rows_2d = two_d_numbers(mixture_2d, SIGMAS_2D, n_grid_2d, n_noisy, generator)
    draw_2d(images, SIGMAS_2D, out_dir / f"{NAME}_2d.png")

    data = mixture_2d.sample(n_points, generator=generator)
    noise = torch.randn((len(SIGMAS_POINTS), n_points, n_copies, 2), generator=generator,
                        dtype=data.dtype)  # fmt: skip
    copies = [(data[:, None] + s * noise[i]).reshape(-1, 2) for i, s in enumerate(SIGMAS_POINTS)]
    draw_points(mixture_2d, data, copies, SIGMAS_POINTS, out_dir / f"{NAME}_points.png")

    numbers = {
        "experiment": NAME,
        "low_density_fraction": LOW_DENSITY_FRACTION,
        "one_d": {
            "preset": "bimodal1d",
            "grid": {"min": WINDOW_1D[0], "max": WINDOW_1D[1], "n": n_grid_1d},
            "per_sigma": rows_1d,
        },
        "two_d": {
            "preset": "ring8",
            "grid": {"half_width": BOX_2D, "n": n_grid_2d},
            "per_sigma": rows_2d,
        },
        "points": {"sigmas": list(SIGMAS_POINTS), "n_points": n_points, "n_copies": n_copies},
        "figures": [f"{NAME}_1d.png", f"{NAME}_2d.png", f"{NAME}_points.png"],
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
