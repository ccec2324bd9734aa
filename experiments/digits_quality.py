"""How good are digit samples? Each sampler × a few step budgets on the shipped ``builtin:digits-dae``,
scored by ``scoregen.metrics.image_quality`` against the real-vs-real band.

Every row is drawn through the sampling layer, ``plan_sampling(model, n, sampler=...,
steps=..., seed=..., **options)`` then ``run_plan``: exactly what ``scoregen sample --ckpt
builtin:digits-dae --sampler S --steps N`` (plus the row's options) draws, so the row with no
options at the CLI's default sampler and steps is the command line's default. The samplers:
annealed Langevin (the CLI default: 10 geometric levels, steps split evenly, α_i = 0.01 σ_i²
for images; rows with ``step_lr`` = r·σ_min² step α_i = r σ_i²: r = 0.1 is NCSN's rule, the
points' default, which this table replaced for images), predictor–corrector (reverse-diffusion predictor + one Langevin corrector, snr 0.16,
steps/2 + 1 geometric levels), the probability-flow ODE (Heun on a Karras ρ = 7 ladder of
steps + 1 levels) and, for contrast, Langevin at one σ started from held-out digits plus
that noise (``init="data"``; it stays near its start, so it is not generation: its numbers
show what "near real digits" gives; one Tweedie step ``D(x, σ)`` after the chain removes the
noise it targets). Row options (``sigma_max``, ``sigma_min``, ``levels``, ``step_lr``,
``snr``, ``sigma``, ``init``) are ``plan_sampling``'s; the plan's defaults and reasons are
in ``docs/cli.md``. Samples are mapped to pixels and clipped to [0, 1].

Columns: FD ratio (Fréchet distance in the digits classifier's features to the held-out
digits, over the median of the same distance from as many training digits; the band is
5–95 % over the reference draws, widened for fresh draws), KID ×10³, class shares (TV to
uniform, weakest and largest class), memorised fraction (closer to a training digit than
1 % of held-out digits are) and the nearest-training-distance ratio, score evaluations per
chain (NFE) and seconds of sampling (one CPU thread unless ``--threads``).

Figures: ``digits_quality_samples.png`` (the default row's samples beside held-out digits)
and ``digits_quality_classes.png`` (the same samples grouped by predicted class).

    python -m experiments.digits_quality --out out/digits_quality [--full] [--seed 0]

``--full``: 500 samples per row, 3 seeds and more budgets (about 30 CPU-minutes);
otherwise 300 samples, 2 seeds and the CLI's default budgets (about 10 CPU-minutes).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from experiments._common import main, save_figure, write_json
from scoregen import plot
from scoregen.builtins import load_model
from scoregen.data import load_dataset
from scoregen.metrics import image_quality
from scoregen.models.classifier import load_classifier
from scoregen.sampling import SamplingPlan, plan_sampling, run_plan

NAME = "digits_quality"
CKPT = "builtin:digits-dae"
# annealed steps α_i = r σ_i² other than the image default (0.01): step_lr = r σ_min², with the
# builtin's σ_min = 0.02. r = 0.1 is NCSN's rule, the default for points (and for images before
# this table chose 0.01).
STEP = {r: {"step_lr": r * 0.02**2} for r in (0.1, 0.02, 0.005)}
# (sampler, total steps[, plan_sampling options]): the score-call budget of each row is about
# the step count (ODE: 2×); "langevin_data" is langevin with init="data" and σ = 0.2
FULL_ROWS = (
    ("annealed", 500),
    ("annealed", 1000),
    ("annealed", 2000),
    ("annealed", 2000, STEP[0.1]),
    ("annealed", 2000, STEP[0.02]),
    ("annealed", 2000, STEP[0.005]),
    ("pc", 500),
    ("pc", 1000),
    ("ode", 50),
    ("ode", 100),
    ("langevin_data", 1000),
)
QUICK_ROWS = (
    ("annealed", 2000),
    ("annealed", 2000, STEP[0.1]),
    ("annealed", 2000, STEP[0.02]),
    ("annealed", 2000, STEP[0.005]),
    ("pc", 1000),
    ("ode", 100),
    ("langevin_data", 100),
)
# the CLI's image default (what `scoregen sample` draws): the row the figures show
DEFAULT_ROW = ("annealed", 2000, {})
LANGEVIN_DATA = {"init": "data", "sigma": 0.2}  # model space ([-1, 1]): 0.1 in pixels


def nfe(plan: SamplingPlan) -> int:
    """Score evaluations per chain of ``plan`` (the final Tweedie step counts one)."""
    final = int(plan.final_denoise) if plan.sampler in ("annealed", "pc", "ode") else 0
    if plan.sampler in ("langevin", "mala"):
        return plan.n_steps
    levels = len(plan.sigmas)
    if plan.sampler == "annealed":
        return levels * (plan.n_steps_each + plan.adaptive) + final
    # pc: one predictor and one corrector call per step; ode: Heun's two calls per step
    return 2 * (levels - 1) + final


def draw(model, sampler: str, steps: int, n: int, seed: int, **options) -> tuple[Tensor, dict]:
    """``n`` samples (pixels in [0, 1]) of one row and its setting: the plan that
    ``plan_sampling(model, n, sampler=sampler, steps=steps, seed=seed, **options)`` makes,
    run by ``run_plan`` (so ``scoregen.sample`` with the same arguments gives the same
    pixels). ``sampler="langevin_data"`` is langevin from held-out digits plus noise
    (:data:`LANGEVIN_DATA`, overridable by ``options``) followed by one Tweedie step."""
    denoise_after = sampler == "langevin_data"
    if denoise_after:
        sampler, options = "langevin", {**LANGEVIN_DATA, **options}
    plan = plan_sampling(model, n, sampler=sampler, steps=steps, seed=seed, **options)
    x = run_plan(model, plan, progress=False).samples
    count = nfe(plan)
    if denoise_after:
        x, count = model.denoiser(x, plan.sigma), count + 1
    setting = {"plan": plan.describe(), "start": plan.describe_start(), "nfe": count}
    if denoise_after:
        setting["plan"] += ", then one Tweedie denoising step"
    return model.to_data_space(x, clip=True).cpu(), setting


def _options_text(options: dict) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items()
    )


def summarise(qualities: list[dict]) -> dict:
    """One row's numbers over its seeds: medians, and the spread of the FD ratio; class
    shares and memorisation at their worst seed (the criteria a default must meet at every
    seed)."""

    def median(values) -> float:
        return float(statistics.median(values))  # of an even count: the middle two's mean

    ratios = [q["fd_ratio"] for q in qualities]
    bands = qualities[0]["bands"]
    return {
        "fd_ratio": median(ratios),
        "fd_ratio_range": [min(ratios), max(ratios)],
        "fd_band": [
            bands["fd"]["low"] / bands["fd"]["median"],
            bands["fd"]["high"] / bands["fd"]["median"],
        ],  # fmt: skip
        "kid": median([q["bands"]["kid"]["value"] for q in qualities]),
        "kid_real": bands["kid"]["median"],
        "class_tv": median([q["bands"]["class_tv"]["value"] for q in qualities]),
        "class_tv_real": bands["class_tv"]["median"],
        "class_share_range": [
            min(q["class_share_range"][0] for q in qualities),
            max(q["class_share_range"][1] for q in qualities),
        ],
        "memorised": max(q["bands"]["memorised"]["value"] for q in qualities),
        "memorised_band_high": bands["memorised"]["high"],
        "nn_ratio": median([q["bands"]["nn_ratio"]["value"] for q in qualities]),
    }


def table_markdown(rows: list[dict], n_samples: int, n_seeds: int) -> str:
    """The table as Markdown (one line per row)."""
    lines = [
        "| sampler | steps | NFE | FD ratio | KID ×10³ | class TV | class shares | "
        "memorised | NN ratio | seconds |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        m = row["summary"]
        options = f" ({_options_text(row['options'])})" if row["options"] else ""
        spread = (
            f" ({m['fd_ratio_range'][0]:.2f}–{m['fd_ratio_range'][1]:.2f})" if n_seeds > 1 else ""
        )
        lines.append(
            f"| {row['sampler']}{options} | {row['steps']} | {row['setting']['nfe']} | "
            f"{m['fd_ratio']:.2f}{spread} | {1e3 * m['kid']:.1f} | {m['class_tv']:.3f} | "
            f"{m['class_share_range'][0]:.1%}–{m['class_share_range'][1]:.1%} | "
            f"{m['memorised']:.1%} | {m['nn_ratio']:.2f} | {row['seconds']:.0f} |"
        )
    m = rows[0]["summary"]
    lines.append(
        f"\n{n_samples} samples per row and seed, {n_seeds} seed(s) (the same starting noise "
        f"for every row); FD ratio: median over seeds (min–max). Real digits at this size: FD "
        f"ratio 1 (band {m['fd_band'][0]:.2f}–{m['fd_band'][1]:.2f}), KID ×10³ "
        f"{1e3 * m['kid_real']:.1f}, class TV {m['class_tv_real']:.3f}, memorised ≤ "
        f"{m['memorised_band_high']:.1%} (95 %), NN ratio 1."
    )
    return "\n".join(lines)


def run(
    out_dir,
    full: bool = False,
    seed: int = 0,
    *,
    ckpt: str = CKPT,
    n_samples: int | None = None,
    n_seeds: int | None = None,
    rows=None,
    n_reference_draws: int = 20,
) -> dict:
    """Sample every row, score it, write the table, the JSON and the figures into ``out_dir``.

    Every row is drawn ``n_seeds`` times, draw ``s`` with the plan's seed ``1000·seed + s``:
    the rows share their starting noise (common random numbers), so differences between rows
    are the samplers', not the draws'.
    """
    out_dir = Path(out_dir)
    n = n_samples or (500 if full else 300)
    n_seeds = n_seeds or (3 if full else 2)
    rows = list(rows or (FULL_ROWS if full else QUICK_ROWS))
    model = load_model(ckpt, "cpu")
    data = load_dataset("digits")
    classifier = load_classifier("digits")
    train_pixels, test_pixels = data.to_data_space(data.train), data.to_data_space(data.test)
    results, shown = [], None
    for sampler, steps, *extra in rows:
        options = dict(extra[0]) if extra else {}
        qualities, seconds = [], 0.0
        for s in range(n_seeds):
            start = time.perf_counter()
            with torch.no_grad():
                pixels, setting = draw(model, sampler, steps, n, 1000 * seed + s, **options)
            seconds += time.perf_counter() - start
            quality = image_quality(
                pixels, classifier=classifier, train=train_pixels, test=test_pixels,
                n_reference_draws=n_reference_draws, seed=seed,
            )  # fmt: skip
            qualities.append(quality.to_dict())
            if s == 0 and (shown is None or (sampler, steps, options) == DEFAULT_ROW):
                shown = (sampler, steps, options, pixels, quality)
        row = {"sampler": sampler, "steps": steps, "options": options, "setting": setting,
               "seconds": seconds / n_seeds, "summary": summarise(qualities),
               "seeds": qualities}  # fmt: skip
        results.append(row)
        ratios = ", ".join(f"{q['fd_ratio']:.2f}" for q in qualities)
        print(f"[{NAME}] {sampler} {steps} {_options_text(options)}: FD ratio {ratios}; "
              f"shares {row['summary']['class_share_range']} ({row['seconds']:.0f} s)",
              flush=True)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler, steps, options, pixels, quality = shown
    label = f"{ckpt}, {sampler} {steps} steps" + (f" ({_options_text(options)})" if options else "")
    save_figure(
        plot.sample_sheet(
            pixels, test_pixels, suptitle=f"{label}: FD {quality.fd_ratio:.2f}× real"
        ),
        out_dir / f"{NAME}_samples.png",
    )
    _, labels = classifier.embed(pixels)
    save_figure(
        plot.class_panel(
            pixels, labels, n_classes=10, title=f"{label}:\nsamples by predicted class"
        ),
        out_dir / f"{NAME}_classes.png",
    )
    table = table_markdown(results, n, n_seeds)
    (out_dir / f"{NAME}.md").write_text(table + "\n")
    numbers = {
        "ckpt": ckpt,
        "n_samples": n,
        "n_seeds": n_seeds,
        "seed": seed,
        "classifier_held_out_accuracy": classifier.record.get("held_out_accuracy"),
        "rows": results,
        "figure_row": {"sampler": sampler, "steps": steps, "options": options},
        "table": table,
    }
    write_json(out_dir, NAME, numbers)
    return numbers


def summarize(numbers: dict) -> str:
    """The table, for the terminal (the JSON holds every seed's numbers)."""
    return numbers["table"]


if __name__ == "__main__":
    main(run, __doc__)
