"""How good are digit samples? Each sampler × a few step budgets on the shipped ``builtin:digits-dae``,
scored by ``scoregen.metrics.image_quality`` against the real-vs-real band.

Rows: annealed Langevin (10 geometric levels σ_max → σ_min, α_i = 0.1 σ_i², steps split
evenly), predictor–corrector (reverse-diffusion predictor + one Langevin corrector, snr 0.16,
a geometric ladder of steps/2 + 1 levels), the probability-flow ODE (Heun on a Karras ρ = 7
ladder of steps + 1 levels, 2 score calls per step but the last) and, for contrast, Langevin
at one fixed σ started from held-out digits plus that noise (it stays near its start, so
it is not generation: its numbers show what "near real digits" gives). Annealed, PC and ODE
start from ``N(μ_c, σ_max² + σ_c²)`` with the training digits' per-channel mean and standard
deviation (model space), all chains from one seeded generator; every run ends with the
Tweedie denoising step; samples are mapped to pixels and clipped to [0, 1].

Columns: FD ratio (Fréchet distance in the digits classifier's features to the held-out
digits, over the median of the same distance from as many training digits; the band is
5–95 % over the reference draws), KID ×10³, class shares (TV to uniform, weakest class),
memorised fraction (closer to a training digit than 1 % of held-out digits are) and the
nearest-training-distance ratio, seconds of sampling (one CPU thread unless ``--threads``).

Figures: ``digits_quality_samples.png`` (the chosen default row's samples beside held-out
digits) and ``digits_quality_classes.png`` (the same samples grouped by predicted class).

    python -m experiments.digits_quality --out out/digits_quality [--full] [--seed 0]

``--full``: 1,000 samples per row and every budget (about 15 CPU-minutes); otherwise 200
samples and the smaller budgets.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor

from experiments._common import main, save_figure, write_json
from scoregen import plot
from scoregen.builtins import load_score_model
from scoregen.data import load_dataset
from scoregen.metrics import image_quality
from scoregen.models.classifier import load_classifier
from scoregen.samplers import (
    annealed_langevin,
    geometric_sigmas,
    karras_sigmas,
    langevin,
    predictor_corrector,
    probability_flow,
)

NAME = "digits_quality"
CKPT = "builtin:digits-dae"
# (sampler, total steps): the score-call budget of each row is about the step count (ODE: 2×)
FULL_ROWS = (
    ("annealed", 200),
    ("annealed", 500),
    ("annealed", 1000),
    ("annealed", 2000),
    ("pc", 100),
    ("pc", 500),
    ("pc", 1000),
    ("ode", 10),
    ("ode", 25),
    ("ode", 50),
    ("ode", 100),
    ("langevin_data", 100),
    ("langevin_data", 1000),
)
QUICK_ROWS = (
    ("annealed", 200),
    ("annealed", 1000),
    ("pc", 200),
    ("ode", 25),
    ("langevin_data", 100),
)
# the CLI's image default (what `scoregen sample` should draw): the row the figures show
DEFAULT_ROW = ("annealed", 2000, {})
ANNEALED_LEVELS = 10
RELATIVE_STEP = 0.1  # annealed α_i = 0.1 σ_i²; fixed-σ Langevin ε = 0.1 σ²
LANGEVIN_DATA_SIGMA = 0.2  # model space ([-1, 1]): 0.1 in pixels


def data_start(train: Tensor, n: int, sigma_max: float, generator: torch.Generator) -> Tensor:
    """``n`` draws of ``N(μ_c, σ_max² + σ_c²)`` per channel ``c``, with the mean and standard
    deviation of channel ``c`` over the training images ``[N, C, H, W]`` (model space)."""
    dims = [0, *range(2, train.ndim)]
    mean = train.mean(dim=dims, keepdim=True)[0]
    std = train.std(dim=dims, keepdim=True)[0]
    noise = torch.randn((n, *train.shape[1:]), generator=generator)
    return mean + (sigma_max**2 + std**2).sqrt() * noise


def draw(
    model, sampler: str, steps: int, n: int, data, generator: torch.Generator, **options
) -> tuple[Tensor, dict]:
    """Samples in model space from one row's setting, and the setting as a dict.

    ``options`` override the defaults: ``sigma_min`` / ``sigma_max`` (the ladder's ends; the
    checkpoint's σ range by default), ``levels`` (annealed), ``relative_step`` (annealed
    ``α_i = relative_step · σ_i²``; fixed-σ Langevin ``ε = relative_step · σ²``), ``snr``
    (pc), ``sigma`` (langevin_data's level).
    """
    unknown = set(options) - {"sigma_min", "sigma_max", "levels", "relative_step", "snr", "sigma"}
    if unknown:
        raise ValueError(f"unknown row options {sorted(unknown)}")
    trained_min, trained_max = model.sigma_range
    sigma_min = options.get("sigma_min", trained_min)
    sigma_max = options.get("sigma_max", trained_max)
    relative_step = options.get("relative_step", RELATIVE_STEP)
    score = model.score
    common = {"progress": False}
    if sampler == "langevin_data":
        sigma = options.get("sigma", LANGEVIN_DATA_SIGMA)
        pick = torch.randint(0, data.test.shape[0], (n,), generator=generator)
        x0 = data.test[pick] + sigma * torch.randn((n, *data.shape), generator=generator)
        step_size = relative_step * sigma**2
        x = langevin(score, x0, sigma=sigma, step_size=step_size, n_steps=steps,
                     generator=generator, **common)  # fmt: skip
        x = model.denoiser(x, sigma)
        setting = {"sigma": sigma, "step_size": step_size, "start": "held-out digit + σ z"}
        return x, {**setting, "nfe": steps + 1}
    x0 = data_start(data.train, n, sigma_max, generator)
    setting = {"sigma_max": sigma_max, "sigma_min": sigma_min, "start": "N(μ_c, σ_max² + σ_c²)"}
    if sampler == "annealed":
        levels = options.get("levels", ANNEALED_LEVELS)
        sigmas = geometric_sigmas(sigma_max, sigma_min, levels)
        step_lr = relative_step * sigma_min**2
        x = annealed_langevin(score, x0, sigmas, n_steps_each=steps // levels, step_lr=step_lr,
                              generator=generator, **common)  # fmt: skip
        setting.update(
            levels=levels, n_steps_each=steps // levels, step=f"α_i = {relative_step:g} σ_i²"
        )
        return x, {**setting, "nfe": levels * (steps // levels) + 1}
    if sampler == "pc":
        levels = steps // 2 + 1
        snr = options.get("snr", 0.16)
        sigmas = geometric_sigmas(sigma_max, sigma_min, levels)
        x = predictor_corrector(score, x0, sigmas, snr=snr, generator=generator, **common)
        setting.update(levels=levels, snr=snr, n_corrector=1)
        return x, {**setting, "nfe": 2 * (levels - 1) + 1}
    if sampler == "ode":
        levels = steps + 1
        sigmas = karras_sigmas(sigma_max, sigma_min, levels)
        x = probability_flow(score, x0, sigmas, **common)
        setting.update(levels=levels, ladder="karras ρ=7", solver="heun")
        return x, {**setting, "nfe": 2 * (levels - 1) + 1}
    raise ValueError(f"unknown sampler {sampler!r}")


def _options_text(options: dict) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items()
    )


def summarise(qualities: list[dict]) -> dict:
    """One row's numbers over its seeds: medians, and the spread of the FD ratio; class
    shares and memorisation at their worst seed (the criteria a default must meet at every
    seed)."""

    def median(values) -> float:
        return float(torch.tensor(values, dtype=torch.float64).median())

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

    Every row is drawn ``n_seeds`` times, seed ``s`` from the generator seeded
    ``1000·seed + s``: the rows share their starting noise (common random numbers), so
    differences between rows are the samplers', not the draws'.
    """
    out_dir = Path(out_dir)
    n = n_samples or (1000 if full else 200)
    n_seeds = n_seeds or (3 if full else 1)
    rows = list(rows or (FULL_ROWS if full else QUICK_ROWS))
    model = load_score_model(ckpt)
    data = load_dataset("digits")
    classifier = load_classifier("digits")
    train_pixels, test_pixels = data.to_data_space(data.train), data.to_data_space(data.test)
    results, shown = [], None
    for sampler, steps, *extra in rows:
        options = dict(extra[0]) if extra else {}
        qualities, seconds = [], 0.0
        for s in range(n_seeds):
            generator = torch.Generator().manual_seed(seed * 1000 + s)
            start = time.perf_counter()
            with torch.no_grad():
                x, setting = draw(model, sampler, steps, n, data, generator, **options)
            seconds += time.perf_counter() - start
            pixels = data.to_data_space(x, clip=True)
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


if __name__ == "__main__":
    main(run, __doc__)
