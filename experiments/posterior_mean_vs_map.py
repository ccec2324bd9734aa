"""Posterior mean vs MAP for a 1-D two-mode prior: what an MSE-trained denoiser outputs.

Prior ``p = 0.7 N(−2, 0.5²) + 0.3 N(2, 0.5²)`` (preset ``bimodal1d``), observation
``y = x + σz``. A denoiser trained with MSE learns the posterior mean ``E[x | y]``
(``GaussianMixture.denoise``), which moves continuously with ``y`` and can sit in the valley
between the posterior's two peaks; the MAP (``GaussianMixture.map``) stays on a peak and jumps
from one to the other where both peaks are equally high.

Figure ``posterior_mean_vs_map.png``: (a) ``E[x | y]`` and ``MAP(y)`` against ``y`` for each σ,
(b) the gap ``|E[x | y] − MAP(y)|``, (c) for one ``y`` the prior, the likelihood
``N(y; x, σ²)`` as a function of ``x``, and the posterior, with both estimates marked.

Numbers (``posterior_mean_vs_map.json``), per σ: the largest gap and the ``y`` where it
occurs (over the grid and both one-sided limits at the jump), and the ``y`` where the MAP
jumps, located by bisection on which posterior peak the MAP lies on. The curves themselves
go to ``posterior_mean_vs_map_curves.json``. The run is exact and deterministic (``seed`` is
not used).
"""

from __future__ import annotations

from pathlib import Path

import torch

from experiments._common import main, save_figure, write_json
from scoregen import plot
from scoregen.gmm import GaussianMixture, preset

NAME = "posterior_mean_vs_map"
SIGMAS = (0.25, 0.5, 1.0, 2.0)
Y_RANGE = (-6.0, 6.0)


def map_branch(mixture: GaussianMixture, y: torch.Tensor, sigma: float):
    """``MAP(y)`` ``[B, 1]`` and the index of the posterior component whose mean ``m_k(y)`` is
    nearest to it: the peak the MAP lies on (each peak of a separated 1-D posterior sits
    next to one component mean)."""
    modes = mixture.map(y, sigma)
    # m_k = μ_k + λ_k (λ_k + σ²)⁻¹ (y − μ_k), the component posterior means (1-D, scalar covs)
    lam = mixture.eigvals[:, 0]
    comp_means = mixture.means[:, 0] + lam / (lam + sigma**2) * (y - mixture.means[:, 0])
    branch = (comp_means - modes).abs().argmin(dim=1)
    return modes, branch


def locate_jump(
    mixture: GaussianMixture, y: torch.Tensor, branch: torch.Tensor, sigma, tol, min_size
):
    """Where the MAP changes peak: bisection between the first two grid points whose branches
    differ, until the bracket is shorter than ``tol``.

    None when the MAP stays near one component mean, or when it moves from one to the other
    by less than ``min_size`` across the final bracket: then the posterior has one peak that
    slides continuously (small σ), and there is no jump.
    """
    changes = torch.nonzero(branch[1:] != branch[:-1])[:, 0]
    if len(changes) == 0:
        return None
    i = int(changes[0])
    lo, hi = float(y[i, 0]), float(y[i + 1, 0])
    lo_branch = int(branch[i])
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        _, mid_branch = map_branch(mixture, torch.tensor([[mid]], dtype=y.dtype), sigma)
        if int(mid_branch[0]) == lo_branch:
            lo = mid
        else:
            hi = mid
    point = torch.tensor([[lo], [hi]], dtype=y.dtype)
    map_lo, map_hi = mixture.map(point, sigma)[:, 0].tolist()
    if abs(map_hi - map_lo) < min_size:
        return None
    mean_at = float(mixture.denoise(torch.tensor([[0.5 * (lo + hi)]], dtype=y.dtype), sigma))
    return {
        "y": 0.5 * (lo + hi),
        "bracket": [lo, hi],
        "map_left": map_lo,
        "map_right": map_hi,
        "size": map_hi - map_lo,
        "posterior_mean": mean_at,
        "n_jumps_on_grid": len(changes),
    }


def largest_gap(y, means, modes, jump):
    """``max |E[x|y] − MAP(y)|`` over the grid and, at the jump, both one-sided MAP limits."""
    gaps = (means - modes).abs()[:, 0]
    i = int(gaps.argmax())
    best, where = float(gaps[i]), float(y[i, 0])
    if jump is not None:
        for side in ("map_left", "map_right"):
            gap = abs(jump["posterior_mean"] - jump[side])
            if gap > best:
                best, where = gap, jump["y"]
    return best, where


def posterior_panel(mixture: GaussianMixture, y_obs: float, sigma: float, x: torch.Tensor):
    """Prior, likelihood ``N(y; x, σ²)`` in ``x``, posterior, and the two estimates at one ``y``."""
    y = torch.tensor([[y_obs]], dtype=x.dtype)
    posterior = mixture.posterior(y, sigma)
    likelihood = torch.exp(-0.5 * ((x[:, 0] - y_obs) / sigma) ** 2) / (
        sigma * (2 * torch.pi) ** 0.5
    )
    mean, mode = float(mixture.denoise(y, sigma)), float(mixture.map(y, sigma))
    density_at = posterior.log_prob(torch.tensor([[mean], [mode]], dtype=x.dtype)).exp()
    curves = {
        "prior p(x)": mixture.log_prob(x).exp(),
        f"likelihood N(y; x, {sigma:g}²)": likelihood,
        "posterior p(x | y)": posterior.log_prob(x).exp(),
    }
    numbers = {
        "sigma": sigma,
        "y": y_obs,
        "posterior_mean": mean,
        "map": mode,
        "posterior_weights": posterior.weights.tolist(),
        "posterior_density_at_mean_over_at_map": float(density_at[0] / density_at[1]),
    }
    return curves, numbers


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    sigmas=SIGMAS,
    n_grid: int | None = None,
    y_panel: float = 0.0,
    sigma_panel: float = 1.0,
    jump_tol: float = 1e-8,
    jump_min_size: float = 1e-4,
) -> dict:
    """Compute the curves and numbers, draw the figure, write both; return the numbers."""
    out_dir = Path(out_dir)
    mixture = preset("bimodal1d")
    n_grid = n_grid or (4801 if full else 1201)
    y = torch.linspace(*Y_RANGE, n_grid, dtype=torch.float64)[:, None]
    sigmas = [float(s) for s in sigmas]

    mean_rows, map_rows, per_sigma, jumps = [], [], [], []
    for sigma in sigmas:
        means = mixture.denoise(y, sigma)
        modes, branch = map_branch(mixture, y, sigma)
        jump = locate_jump(mixture, y, branch, sigma, jump_tol, jump_min_size)
        gap, gap_y = largest_gap(y, means, modes, jump)
        mean_rows.append(means[:, 0])
        map_rows.append(modes[:, 0])
        jumps.append(None if jump is None else jump["y"])
        per_sigma.append({"sigma": sigma, "max_gap": gap, "y_at_max_gap": gap_y, "map_jump": jump})

    x = torch.linspace(-5.0, 5.0, 1001, dtype=torch.float64)[:, None]
    curves, panel = posterior_panel(mixture, y_panel, sigma_panel, x)

    with plot.style():
        fig, axes = plot.new_figure(3, panel_size=(3.6, 3.1))
        plot.posterior_mean_vs_map(
            y[:, 0], torch.stack(mean_rows), torch.stack(map_rows), sigmas,
            jumps=jumps, prior_modes=mixture.means[:, 0].tolist(), ax=axes[0, 0],
            title="(a) E[x | y] and MAP(y)",
        )  # fmt: skip
        gaps = {f"σ = {s:g}": (m - a).abs() for s, m, a in zip(sigmas, mean_rows, map_rows)}
        plot.density_1d(
            y[:, 0], gaps, ax=axes[0, 1], xlabel="observation y",
            ylabel="|E[x | y] − MAP(y)|", title="(b) gap between the estimates",
        )  # fmt: skip
        plot.density_1d(
            x[:, 0], curves, ax=axes[0, 2], xlabel="x", ylabel="density",
            markers={
                f"y = {y_panel:g}": y_panel,
                f"E[x | y] = {panel['posterior_mean']:.2f}": panel["posterior_mean"],
                f"MAP = {panel['map']:.2f}": panel["map"],
            },
            title=f"(c) one observation: y = {y_panel:g}, σ = {sigma_panel:g}",
        )  # fmt: skip
        fig.suptitle(
            "Prior 0.7 N(−2, 0.5²) + 0.3 N(2, 0.5²): the MSE denoiser is the posterior mean"
        )
    save_figure(fig, out_dir / f"{NAME}.png")

    write_json(
        out_dir,
        f"{NAME}_curves",
        {"sigmas": sigmas, "y": y[:, 0], "posterior_mean": mean_rows, "map": map_rows},
    )
    numbers = {
        "experiment": NAME,
        "prior": {
            "preset": "bimodal1d",
            "weights": mixture.weights.tolist(),
            "means": mixture.means[:, 0].tolist(),
            "variances": mixture.eigvals[:, 0].tolist(),
        },
        "y_grid": {"min": Y_RANGE[0], "max": Y_RANGE[1], "n": n_grid},
        "per_sigma": per_sigma,
        "panel": panel,
        "figures": [f"{NAME}.png"],
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
