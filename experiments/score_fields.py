"""Score fields of a blurred 2-D mixture, exact and learned, and where the learned one fails.

The exact score of ``p_σ`` (``GaussianMixture.score``, preset ``ring8``) beside the Tweedie
score ``(D(x, σ) − x) / σ²`` of a σ-conditioned MLP denoiser trained with MSE on noisy
copies of the data (``tweedie_score``). A denoiser only sees inputs drawn from ``p_σ``, so
its score is accurate where ``p_σ`` is high and a guess elsewhere: at small σ almost the
whole plane is "elsewhere". That is why annealed Langevin starts at large σ.

Figures: ``score_fields.png``, one row per σ: exact field, learned field (unit arrows
coloured by ``log10 ‖s‖``, over contours of ``log p_σ``), the error density
``p_σ ‖ŝ − s‖² / E_{p_σ}‖s‖²`` (it integrates to ``rel_error``), and the pointwise relative
error ``log10(‖ŝ − s‖ / ‖s‖)`` with the low-density region outlined.
``score_fields_errors.png``: the relative errors against σ.

Numbers (``score_fields.json``), per σ, by quadrature on an ``n × n`` grid ``G`` over the box
``[−L, L]²`` (trapezoid weights ``c_g``; ``e = ŝ − s``; ``s`` exact, ``ŝ`` learned):

- ``score_energy = Σ c p_σ ‖s‖²`` ≈ ``E_{p_σ}‖s‖²`` (the Fisher information, within the box);
- ``rel_error = Σ c p_σ ‖e‖² / Σ c p_σ ‖s‖²`` ≈ ``E_{p_σ}‖e‖² / E_{p_σ}‖s‖²``;
- the low-density region ``Low_σ = {g ∈ G : p_σ(g) < q_σ}``, ``q_σ`` the largest threshold
  with ``Σ_{Low} c p_σ <= low_fraction · Σ_G c p_σ`` (``low_fraction = 0.1``): the least
  dense cells, holding a tenth of ``p_σ``'s mass in the box; ``low_mass`` is that mass
  fraction and ``low_area`` the fraction of the box's area it covers;
- ``rel_error_low = Σ_{Low} c ‖e‖² / Σ_{Low} c ‖s‖²``, weighted uniformly over ``Low_σ``:
  a chain started far from the data (from a broad Gaussian, say) visits these points
  however unlikely ``p_σ`` finds them;
- ``rel_error_low_pweighted``: the same with weights ``c p_σ`` (the conditional ratio
  ``E[‖e‖² | x ∈ Low] / E[‖s‖² | x ∈ Low]`` under ``p_σ``).

The learned score: ``run(..., learned_score=score_fn)`` evaluates any ``score_fn(x, sigma)``
(the exact ``mixture.score`` gives errors that are zero up to float32 rounding). Without one, a
small σ-conditioned MLP denoiser is trained by ``scoregen.train`` (MSE, ``log σ`` uniform over
``TRAIN_SIGMA_RANGE``, EDM preconditioning and weighting; ``train_toy_denoiser`` in
``experiments._common``) and its Tweedie score is evaluated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from experiments._common import main, save_figure, train_toy_denoiser, write_json
from scoregen import plot, tweedie_score
from scoregen.gmm import preset

NAME = "score_fields"
FIELD_SIGMAS = (0.2, 0.5, 1.0, 2.0)
SIGMA_RANGE = (0.1, 3.0)  # the errors are reported on a geometric ladder over this range
TRAIN_SIGMA_RANGE = (0.05, 5.0)
BOX = 12.0  # quadrature box [−BOX, BOX]²
SHOWN = 8.0  # the figures show [−SHOWN, SHOWN]²
LOW_FRACTION = 0.1


# ---------------------------------------------------------------------- errors on a grid
def score_errors(mixture, learned_score, sigma: float, n_grid: int, low_fraction=LOW_FRACTION):
    """The numbers of the module docstring at one σ, plus the maps for the figure."""
    points, xs, _ = plot.grid_points(BOX, n_grid)
    points32 = points.float()
    at = points32.double()  # the exact score at the very points the learned one sees
    step = float(xs[1] - xs[0])
    w1 = torch.full((n_grid,), step, dtype=torch.float64)
    w1[[0, -1]] = step / 2
    cell = (w1[:, None] * w1[None, :]).reshape(-1)
    density = mixture.log_prob(at, sigma).exp()
    exact = mixture.score(at, sigma)
    with torch.no_grad():
        learned = learned_score(points32, sigma).double()
    err2 = ((learned - exact) ** 2).sum(1)
    norm2 = (exact**2).sum(1)
    mass = cell * density
    # Low_σ: the least dense cells, holding low_fraction of the box mass
    order = torch.argsort(density)
    cumulative = torch.cumsum(mass[order], 0)
    n_low = int(torch.searchsorted(cumulative, low_fraction * mass.sum(), right=True))
    low = torch.zeros_like(density, dtype=torch.bool)
    low[order[:n_low]] = True
    energy = float(mass @ norm2)
    numbers = {
        "sigma": sigma,
        "score_energy": energy,
        "rel_error": float(mass @ err2) / energy,
        "rel_error_low": float(cell[low] @ err2[low] / (cell[low] @ norm2[low])),
        "rel_error_low_pweighted": float(mass[low] @ err2[low] / (mass[low] @ norm2[low])),
        "low_mass": float(mass[low].sum() / mass.sum()),
        "low_area": float(cell[low].sum() / cell.sum()),
        "box_mass": float(mass.sum()),
    }
    maps = {
        "weighted_error": (density * err2 / energy).reshape(n_grid, n_grid),
        "log_relative_error": 0.5 * torch.log10(err2 / norm2.clamp_min(1e-300)).reshape(n_grid, n_grid),
        "low": low.reshape(n_grid, n_grid),
        "xs": xs,
    }  # fmt: skip
    return numbers, maps


# ---------------------------------------------------------------------- figures
def draw_fields(mixture, learned_score, sigmas, maps, path, n_arrows=19):
    box = (-SHOWN, SHOWN, -SHOWN, SHOWN)
    with plot.style():
        fig, axes = plot.new_figure(4, len(sigmas), panel_size=(2.9, 2.6))
        for row, sigma in enumerate(sigmas):
            ax_exact, ax_learned, ax_weighted, ax_relative = axes[row]
            # one arrow scale and colour range per row, taken from the exact field
            norms = mixture.score(plot.grid_points(box, n_arrows)[0], sigma).norm(dim=1)
            shared = {
                "mixture": mixture,
                "n_arrows": n_arrows,
                "magnitude_scale": 0.25 * float(norms.median()),
                "log_magnitude_range": (float(norms.max().log10()) - 3, float(norms.max().log10())),
            }
            plot.score_field(mixture.score, sigma, box, ax=ax_exact, colorbar=False,
                             title=f"exact score, σ = {sigma:g}", **shared)  # fmt: skip
            plot.score_field(learned_score, sigma, box, ax=ax_learned,
                             title=f"learned (Tweedie), σ = {sigma:g}", **shared)  # fmt: skip
            m = maps[row]
            plot.heatmap(m["weighted_error"], BOX, ax=ax_weighted, cmap=plot.ERROR_CMAP,
                         title=f"$p_σ‖ŝ − s‖^2 / E‖s‖^2$, σ = {sigma:g}")  # fmt: skip
            plot.heatmap(m["log_relative_error"], BOX, ax=ax_relative, cmap=plot.ERROR_CMAP,
                         vmin=-3.0, vmax=1.0, label=r"$\log_{10}$ rel. error",
                         title=f"‖ŝ − s‖ / ‖s‖, σ = {sigma:g}")  # fmt: skip
            ax_relative.contour(m["xs"], m["xs"], m["low"].double().numpy(), levels=[0.5],
                                colors="cyan", linewidths=0.8)  # fmt: skip
            for ax in (ax_weighted, ax_relative):
                ax.set(xlim=box[:2], ylim=box[2:])
        fig.suptitle("ring of 8 Gaussians: exact vs learned score of $p_σ$ (arrow colour: "
                     "$\\log_{10}‖s‖$; cyan line: edge of the low-density region)")  # fmt: skip
    save_figure(fig, path)


def draw_errors(rows, title, path):
    sigmas = [r["sigma"] for r in rows]
    with plot.style():
        fig, axes = plot.new_figure(1, panel_size=(4.6, 3.2))
        ax = axes[0, 0]
        for key, label, marker in (
            ("rel_error", "overall: $E_{p_σ}‖ŝ − s‖^2 / E_{p_σ}‖s‖^2$", "o"),
            ("rel_error_low", "low-density region, uniform weight", "s"),
            ("rel_error_low_pweighted", "low-density region, $p_σ$ weight", "^"),
        ):
            ax.loglog(sigmas, [r[key] for r in rows], marker=marker, ms=4, label=label)
        ax.set(xlabel="σ", ylabel="relative squared score error",
               xlim=(min(sigmas) / 1.3, max(sigmas) * 1.3))  # fmt: skip
        ax.set_title(title)
        ax.legend(loc="best")
    save_figure(fig, path)


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    learned_score=None,
    field_sigmas=FIELD_SIGMAS,
    n_error_sigmas: int | None = None,
    n_grid: int | None = None,
    train_steps: int | None = None,
    preset_name: str = "ring8",
) -> dict:
    """Train (unless ``learned_score`` is given), compute errors, draw, write; return the numbers."""
    out_dir = Path(out_dir)
    n_grid = n_grid or (385 if full else 193)
    n_error_sigmas = n_error_sigmas or (16 if full else 8)
    train_steps = train_steps or (20_000 if full else 3_000)
    mixture = preset(preset_name)

    training = {"learned": "given"}
    if learned_score is None:
        denoiser, info = train_toy_denoiser(
            preset_name, sigma_range=TRAIN_SIGMA_RANGE, steps=train_steps, seed=seed
        )
        learned_score = tweedie_score(denoiser)
        training = {"learned": "DAE trained by scoregen.train", **info}

    ladder = np.geomspace(*SIGMA_RANGE, n_error_sigmas).tolist()
    rows = [score_errors(mixture, learned_score, s, n_grid)[0] for s in ladder]
    field_rows, field_maps = zip(*(score_errors(mixture, learned_score, float(s), n_grid)
                                   for s in field_sigmas))  # fmt: skip

    draw_fields(mixture, learned_score, [float(s) for s in field_sigmas], field_maps,
                out_dir / f"{NAME}.png")  # fmt: skip
    if "sigma_range" in training:
        title = "learned score (trained on σ ∈ [{:g}, {:g}])".format(*training["sigma_range"])
    else:
        title = "the given score"
    draw_errors(rows, f"relative error of {title}", out_dir / f"{NAME}_errors.png")

    numbers = {
        "experiment": NAME,
        "preset": preset_name,
        "grid": {"half_width": BOX, "n": n_grid},
        "low_fraction": LOW_FRACTION,
        "training": training,
        "per_sigma": rows,
        "field_sigmas": list(field_rows),
        "figures": [f"{NAME}.png", f"{NAME}_errors.png"],
    }
    write_json(out_dir, NAME, numbers)
    return numbers


if __name__ == "__main__":
    main(run, __doc__)
