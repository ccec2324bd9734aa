"""Sampling policy: from a loaded model and the user's options to one printable plan.

Every default that ``scoregen sample`` uses is decided here, by :func:`plan_sampling`, so a
script gets exactly the same run with one call. :data:`DEFAULTS` lists each default with the
reason for it; ``docs/cli.md`` shows that table (a test keeps the two equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from scoregen._util import check_positive_float, check_positive_int
from scoregen.config import SAMPLERS

__all__ = [
    "DEFAULTS",
    "SamplingPlan",
    "defaults_table",
    "plan_sampling",
]

# Points and images get different sample counts (a scatter wants many, a grid a few dozen).
POINT_SAMPLES, IMAGE_SAMPLES = 1000, 64
# Total steps when --steps is not given: a stochastic sampler needs its chains to relax at every
# level; the ODE is deterministic and second order (two score evaluations per step).
DEFAULT_STEPS = {"langevin": 2000, "mala": 2000, "annealed": 2000, "pc": 1000, "ode": 100}
ANNEALED_LEVELS = 10
# annealed, learned scores: α_i = STEP_SCALE σ_i². −log p_σ has curvature at most 1/σ²
# (Tweedie: its Hessian is I/σ² − Cov[x|y]/σ⁴), so this step is stable for any data; below the
# data's spread the chains barely move, a quench through the levels where a learned score is
# least reliable. Exact scores: α_i = STEP_SCALE / κ_i, κ_i the mean curvature of −log p_σi at
# the chains, so they relax at every level. ULA's bias on a Gaussian's variance v at step
# STEP_SCALE v is a factor 1/(1 − STEP_SCALE/2).
STEP_SCALE = 0.1
# annealed, learned image models: α_i = IMAGE_STEP_SCALE σ_i², chosen from the digits table
# (docs/image_quality.md). At 0.1 σ_i² the chains settle into the learned p_σ at every level,
# errors included, and on builtin:digits-dae that over-weighted the simplest digits and
# raised the Fréchet distance. 0.02 and 0.01 σ_i² both gave lower Fréchet and kernel distances,
# a smaller class TV and fewer near-copies (between them the Fréchet distance differed less
# than its seed-to-seed spread; 0.01 gave the more even class shares); at 0.01 a chain still
# moves about 2 σ_i per level in 200 steps, at 0.005 the chains no longer converged.
IMAGE_STEP_SCALE = 0.01
# A learned score is unreliable where σ is tiny next to the data (Tweedie divides the denoiser's
# error by σ²): the pc and ode ladders of learned models, whose chains follow the score to the
# end, stop at LEARNED_SIGMA_MIN σ_data (or the trained σ_min if higher); the final Tweedie step
# does the rest.
LEARNED_SIGMA_MIN = 0.05
PC_SNR = 0.16  # score_sde's value for the VE SDE
# pc on learned point models: a smaller corrector step. With 0.16 the corrector's Langevin
# steps carry the learned score's errors into the samples: on a moons MLP trained at the
# defaults the energy distance to held-out points was 0.0136 (exact-set band up to 0.0065),
# 0.0043 at 0.075; the ncsn2d models were right at either value.
LEARNED_POINT_SNR = 0.075
# langevin on a learned σ-conditioned model: ε = STEP_SCALE σ², with σ chosen so that the run's
# total movement sqrt(2 ε N) is MOVEMENT data standard deviations (chains relax within modes).
MOVEMENT = 3.0
# A run that moves less than this fraction of the data's spread gets a warning.
MOVEMENT_WARNING = 0.5
# The report and the start use at most this many bytes of memory per sampling batch by default.
BATCH_MEMORY_FRACTION = 0.25
MAX_SIGMA = 1e10  # σ² must stay finite in float32 with room to spare

# (what, default, why) — the table docs/cli.md shows.
DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("sampler", "annealed; langevin for a fixed-σ checkpoint",
     "annealing walks down the σ ladder, so chains cross between modes while σ is large and "
     "the score is trusted wherever they go; a fixed-σ model knows one level only"),
    ("number of samples", f"{POINT_SAMPLES} for points, {IMAGE_SAMPLES} for images",
     "enough for mode weights to ±0.013 (points); one 8×8 grid (images)"),
    ("steps", ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()),
     "stochastic samplers need their chains to relax at every level; the ODE is deterministic "
     "and second order (two score evaluations per step)"),
    ("σ ladder", "the model's σ range (trained range, or for an exact mixture from the largest "
     "distance between means + 3 std down to 5 % of the smallest std); pc and ode on learned "
     f"models stop at max(σ_min, {LEARNED_SIGMA_MIN} σ_data)",
     "a learned score is trusted only where it was trained, and least at small σ, where "
     "Tweedie's formula divides the denoiser's error by σ²: samplers that follow the score to "
     "the end (pc's corrector, the ODE) stop before it, and the final Tweedie step finishes"),
    ("annealed levels", f"{ANNEALED_LEVELS} geometric levels, steps split evenly",
     "NCSN's ladder: constant ratio between levels, so each level's noise ball overlaps the next"),
    ("annealed step", f"learned models: α_i = {STEP_SCALE} σ_i² (NCSN's rule with step_lr = "
     f"{STEP_SCALE} σ_min²), images {IMAGE_STEP_SCALE} σ_i²; exact mixtures: α_i = "
     f"{STEP_SCALE} / κ_i, κ_i the mean curvature of −log p_σi at the chains (one extra score "
     "evaluation per level)",
     "−log p_σ has curvature at most 1/σ², so σ_i² steps are stable for any data; below the "
     "data's spread they barely move the chains, a gentle quench where a learned score is least "
     "reliable. Images: chosen from the digits table (docs/image_quality.md), where "
     f"{STEP_SCALE} σ_i² let the chains settle into the learned score's errors (too many of the "
     "simplest digit, and a larger Fréchet distance); the smaller step gave lower Fréchet and "
     "kernel distances, a smaller class TV and fewer near-copies. "
     "An exact score is right at every σ, and curvature-sized steps let the chains "
     "relax at every level. Either way the discretisation bias on a level's variance is at most "
     "5 %"),
    ("pc", f"N // 2 predictor + corrector pairs on a geometric ladder of N // 2 + 1 levels, "
     f"snr {PC_SNR} (learned point models: {LEARNED_POINT_SNR})",
     "score_sde's corrector step ε = 2 (snr ‖z‖ / ‖s‖)² at the level reached; a learned 2-D "
     f"score's errors showed in the samples at {PC_SNR} (moons: energy distance twice its band), "
     f"not at {LEARNED_POINT_SNR}"),
    ("ode", "N Heun steps on a Karras ladder (ρ = 7) of N + 1 levels",
     "second order; EDM's ladder spends its steps where the flow curves most"),
    ("final step", "one Tweedie denoising step x + σ_min² s(x, σ_min) (annealed, pc, ode)",
     "removes the last level's noise: the samples target p, not p_σmin"),
    ("start", "N(μ, (σ_max² + s²) I) per channel or coordinate, with the data's mean μ and std "
     "s recorded at training (langevin/mala: σ instead of σ_max)",
     "p_σmax has that mean and variance; a start that ignores where the data lies is a bias a "
     "deterministic ODE carries to the end"),
    ("langevin σ and step", f"exact mixtures: σ = σ_min, ε = {STEP_SCALE} (σ² + smallest "
     f"component variance); learned models: ε = {STEP_SCALE} σ² with σ such that "
     f"sqrt(2εN) = {MOVEMENT:g} σ_data, within the trained range",
     "a learned score's curvature is known only to be ≤ 1/σ², so the step scales with σ², and σ "
     "must be large enough for the chains to cross a mode in N steps; the samples then target "
     "p_σ, which the report compares them with"),
    ("batch", "all chains at once when they fit in a quarter of the free memory",
     "one batch is fastest; larger runs are chunked, the generator continuing across chunks"),
    ("seed", "0", "every run is reproducible bit for bit"),
)  # fmt: skip


def defaults_table() -> str:
    """:data:`DEFAULTS` as the Markdown table that docs/cli.md shows."""
    rows = ["| what | default | why |", "| --- | --- | --- |"]
    rows += [f"| {what} | {default} | {why} |" for what, default, why in DEFAULTS]
    return "\n".join(rows)


@dataclass(frozen=True)
class SamplingPlan:
    """Everything a sampling run does, decided before it starts (see :func:`plan_sampling`).

    Ladder samplers (annealed, pc, ode) use ``sigmas`` (descending, in model units) and end
    with one Tweedie step when ``final_denoise``; single-level samplers (langevin, mala) use
    ``sigma``, ``step_size`` and ``n_steps``. Chains start from ``N(start_mean, start_std²)``
    per channel/coordinate (``init="noise"``), from exact draws of ``p_σ`` (``"exact"``,
    oracles only), a uniform box (``"uniform"``) or held-out examples plus noise
    (``"data"``). ``target_sigma`` is the σ of the density ``p_σ`` the samples should follow.
    ``notes`` are remarks the command line prints (fallbacks, warnings).
    """

    sampler: str
    n: int
    shape: tuple[int, ...]
    batch_size: int
    seed: int
    init: str
    start_mean: tuple[float, ...]
    start_std: tuple[float, ...]
    target_sigma: float
    start_cov: tuple[tuple[float, ...], ...] | None = None
    sigmas: tuple[float, ...] | None = None
    n_steps_each: int | None = None
    step_lr: float | None = None
    step_scale: float | None = None
    adaptive: bool = False
    snr: float | None = None
    final_denoise: bool = True
    sigma: float | None = None
    step_size: float | None = None
    n_steps: int | None = None
    temperature: float = 1.0
    uniform_range: tuple[float, float] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def total_steps(self) -> int:
        """Updates per chain, the final Tweedie step included."""
        if self.sampler in ("langevin", "mala"):
            return self.n_steps
        levels = len(self.sigmas)
        if self.sampler == "annealed":
            return levels * self.n_steps_each + self.final_denoise
        if self.sampler == "pc":
            return 2 * (levels - 1) + self.final_denoise
        return levels - 1 + self.final_denoise

    @property
    def movement(self) -> float | None:
        """``sqrt(2 Σ ε)`` over the run: how far the noise alone carries a chain (None for
        the ODE and the predictor–corrector, whose ladder does the moving)."""
        if self.sampler in ("langevin", "mala"):
            return math.sqrt(2.0 * self.step_size * self.n_steps)
        if self.sampler == "annealed":
            # (the adaptive step is at least step_scale σ_i²: then a lower bound)
            factor = self.step_scale if self.step_lr is None else self.step_lr / self.sigmas[-1] ** 2  # fmt: skip
            total = sum(factor * s**2 for s in self.sigmas)
            return math.sqrt(2.0 * total * self.n_steps_each)
        return None

    def describe(self) -> str:
        """One sentence: the sampler, its ladder or level, its steps."""

        def fmt(v: float) -> str:
            return f"{v:.4g}"

        if self.sampler in ("langevin", "mala"):
            name = "Langevin (ULA)" if self.sampler == "langevin" else "MALA"
            text = (
                f"{name} at σ={fmt(self.sigma)}, step {fmt(self.step_size)}, "
                f"{self.n_steps} steps"
            )
            if self.temperature != 1.0:
                text += f", temperature {fmt(self.temperature)}"
            return text
        ladder = f"σ {fmt(self.sigmas[0])} → {fmt(self.sigmas[-1])}"
        end = ", then one Tweedie denoising step" if self.final_denoise else ""
        if self.sampler == "annealed":
            if self.adaptive:
                rule = (
                    f"step α_i = {fmt(self.step_scale)} / (mean curvature of −log p_σi), "
                    f"≥ {fmt(self.step_scale)}·σ_i²"
                )
            elif self.step_lr is None:
                rule = f"step α_i = {fmt(self.step_scale)}·σ_i²"
            else:
                rule = (
                    f"step α_i = {fmt(self.step_lr)}·σ_i²/σ_min² "
                    f"= {fmt(self.step_lr / self.sigmas[-1] ** 2)}·σ_i²"
                )
            text = (
                f"annealed Langevin over {len(self.sigmas)} geometric levels ({ladder}), "
                f"{self.n_steps_each} steps each, {rule}"
            )
            if self.temperature != 1.0:
                text += f", temperature {fmt(self.temperature)}"
            return text + end
        if self.sampler == "pc":
            return (
                f"predictor–corrector over {len(self.sigmas)} geometric levels ({ladder}), "
                f"{len(self.sigmas) - 1} predictor + corrector pairs, snr {fmt(self.snr)}{end}"
            )
        return (
            f"probability-flow ODE (Heun) over {len(self.sigmas)} Karras levels ({ladder}), "
            f"{len(self.sigmas) - 1} steps{end}"
        )

    def describe_start(self) -> str:
        if self.init == "exact":
            return f"exact draws of p_σ at σ={self.start_std[0]:.4g}"
        if self.init == "uniform":
            low, high = self.uniform_range
            return f"uniform on [{low:.4g}, {high:.4g}] per coordinate"
        spread = _fmt_values(self.start_std)
        if self.init == "data":
            return f"held-out examples plus noise of std {spread}"
        shape = "full covariance of the data + σ²I" if self.start_cov is not None else "std"
        return f"N(μ={_fmt_values(self.start_mean)}, {shape} {spread})"

    def __str__(self) -> str:
        return f"{self.describe()}; {self.n} samples from {self.describe_start()}"


def _fmt_values(values) -> str:
    values = list(values)
    if max(values) - min(values) <= 1e-9 * max(1.0, abs(max(values))):
        return f"{values[0]:.3g}"
    shown = ", ".join(f"{v:.3g}" for v in values[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


# ---------------------------------------------------------------------- the policy
def _available_memory(device) -> int:
    """Bytes free for a new allocation on ``device`` (CPU: MemAvailable; CUDA: free memory)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30  # unknown platform: assume a laptop's share


def _bytes_per_chain(model, numel: int) -> int:
    """A generous estimate of the memory one chain needs while a step runs (float32 state,
    score, noise and the network's or mixture's intermediates)."""
    if model.oracle is not None and model.exact:
        return 8 * numel * (6 + 3 * model.oracle.n_components)
    return 4 * numel * 64


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def _check_sigma(value: float, name: str, model) -> float:
    """A σ option against the range the model is trusted on (a learned model: its trained
    range; an exact mixture: any σ >= 0)."""
    if value > MAX_SIGMA:
        raise ValueError(f"{name} must be <= {MAX_SIGMA:g}, got {value:g}")
    rng = model.sigma_range
    if rng is not None and not model.exact:
        low, high = rng
        if not low * (1 - 1e-6) <= value <= high * (1 + 1e-6):
            raise ValueError(
                f"{name}={value:g} is outside the σ range {model.name} was trained on "
                f"[{low:g}, {high:g}]; its score is not trusted there"
            )
    return value


def plan_sampling(
    model,
    n: int | None = None,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    sigma: float | None = None,
    step_size: float | None = None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    levels: int | None = None,
    step_lr: float | None = None,
    snr: float | None = None,
    temperature: float = 1.0,
    init: str = "noise",
    batch_size: int | None = None,
) -> SamplingPlan:
    """The plan ``scoregen sample`` would run for ``model`` with these options.

    ``model`` is a :class:`~scoregen.checkpoint.ScoreModel` (see :func:`scoregen.load_model`).
    Options left at None take the defaults in :data:`DEFAULTS`. Options a sampler would
    ignore are refused (``levels`` belongs to annealed, ``sigma``/``step_size`` to
    langevin/mala, ``step_lr`` to annealed, ``snr`` to pc, ``temperature`` to
    langevin/annealed), as are σ outside a learned model's trained range. Every problem is
    a ValueError naming the option, the value and what is allowed.
    """
    from scoregen.checkpoint import ScoreModel

    if not isinstance(model, ScoreModel):
        raise TypeError(
            f"model must be a ScoreModel (scoregen.load_model(...)), got {type(model).__name__}"
        )
    shape = model.shape
    if shape is None:
        raise ValueError(
            f"{model.name} does not record the shape of its examples (data.shape), which "
            "sampling needs; save it with save_checkpoint(..., data={'shape': [...]})"
        )
    notes: list[str] = []
    fixed, trained_range = model.fixed_sigma, model.sigma_range
    if sampler is None:
        sampler = "langevin" if fixed is not None else "annealed"
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    is_image = len(shape) == 3
    n = check_positive_int("n", n) if n is not None else (IMAGE_SAMPLES if is_image else POINT_SAMPLES)
    seed = check_positive_int("seed", seed, minimum=0, maximum=2**63 - 1)
    temperature = check_positive_float("temperature", temperature, allow_zero=True)
    steps = DEFAULT_STEPS[sampler] if steps is None else check_positive_int("steps", steps)

    if sampler == "mala" and not model.exact:
        from scoregen.builtins import oracle_names

        raise ValueError(
            f"sampler='mala' needs an exact log-density, which {model.name} does not have; "
            f"the builtin oracles have one ({', '.join(oracle_names())}); use 'langevin' or "
            "'annealed'"
        )
    if fixed is not None and sampler != "langevin":
        raise ValueError(
            f"sampler={sampler!r} walks down a σ ladder, but {model.name} was trained at the "
            f"single level σ={fixed:g}; use sampler='langevin'"
        )
    ignored = {
        "levels": (levels, ("annealed",)),
        "step_lr": (step_lr, ("annealed",)),
        "snr": (snr, ("pc",)),
        "sigma": (sigma, ("langevin", "mala")),
        "step_size": (step_size, ("langevin", "mala")),
        "sigma_max": (sigma_max, ("annealed", "pc", "ode")),
        "sigma_min": (sigma_min, ("annealed", "pc", "ode")),
        "temperature": (None if temperature == 1.0 else temperature, ("langevin", "annealed")),
    }
    for name, (value, users) in ignored.items():
        if value is not None and sampler not in users:
            raise ValueError(
                f"{name} applies to {' and '.join(users)} only; sampler={sampler!r} does not "
                f"use it"
            )
    if init not in ("noise", "uniform", "data", "exact"):
        raise ValueError(f"init must be 'noise', 'uniform', 'data' or 'exact', got {init!r}")
    if init == "exact" and model.oracle is None:
        raise ValueError(
            f"init='exact' draws from the exact p_σ, which only a model of a mixture preset has "
            f"({model.name} has none); use 'noise'"
        )
    mean, std, stats_note = model.data_stats
    if stats_note is not None and init == "noise":
        notes.append(stats_note)
    from scoregen._util import resolve_device

    device = resolve_device(model.device)
    available = _available_memory(device)
    # a ladder costs ~50 bytes a level (a float64 tensor, then Python floats)
    ladder_levels = {"pc": steps // 2 + 1, "ode": steps + 1, "annealed": levels or 0}
    if ladder_levels.get(sampler, 0) * 50 > 0.25 * available:
        name, value = ("levels", levels) if sampler == "annealed" else ("steps", steps)
        most = int(0.25 * available / 50) // (2 if sampler == "pc" else 1)
        raise ValueError(
            f"{name}={value} would need {_gib(ladder_levels[sampler] * 50)} for the σ ladder and "
            f"its bookkeeping; about {_gib(available)} is free: use at most {most:,}"
        )

    plan: dict[str, Any] = {}
    if sampler in ("langevin", "mala"):
        plan.update(_single_level(model, sampler, steps, sigma, step_size))
        start_sigma = plan["sigma"]
        target_sigma = plan["sigma"]
    else:
        low, high = trained_range
        if not model.exact and sampler in ("pc", "ode"):
            low = min(max(low, LEARNED_SIGMA_MIN * model.sigma_data), high)
        top = _check_sigma(check_positive_float("sigma_max", sigma_max), "sigma_max", model) if sigma_max is not None else high  # fmt: skip
        bottom = _check_sigma(check_positive_float("sigma_min", sigma_min), "sigma_min", model) if sigma_min is not None else low  # fmt: skip
        if bottom >= top:
            raise ValueError(f"sigma_min={bottom:g} must be below sigma_max={top:g}")
        scale = IMAGE_STEP_SCALE if is_image and not model.exact else STEP_SCALE
        if snr is None and sampler == "pc":
            snr = LEARNED_POINT_SNR if not is_image and not model.exact else PC_SNR
        plan.update(_ladder(sampler, steps, top, bottom, levels, step_lr, snr, scale))
        if sampler == "annealed" and step_lr is None:
            plan["adaptive"] = model.exact
        start_sigma = top
        target_sigma = 0.0
    plan["temperature"] = temperature

    # where the chains start
    start_cov = None
    if init == "exact":
        start_mean, start_std = tuple(mean.tolist()), (start_sigma,) * len(mean)
    else:
        start_mean = tuple(mean.tolist())
        start_std = tuple(math.sqrt(s**2 + start_sigma**2) for s in std.tolist())
        if init == "data":
            start_std = (start_sigma,) * len(mean)
        elif model.data_covariance is not None:
            cov = model.data_covariance
            cov = cov + start_sigma**2 * torch_eye(cov.shape[0])
            start_cov = tuple(tuple(row) for row in cov.tolist())
    uniform_range = None
    if init == "uniform":
        if model.data.get("value_range") is not None:
            norm = model.data.get("normalization") or {}
            scale, shift = norm.get("scale", 1.0), norm.get("shift", 0.0)
            uniform_range = tuple((v - shift) / scale for v in model.data["value_range"])
        else:
            centre = float(mean.mean())
            half = 3.0 * float(std.max())
            uniform_range = (centre - half, centre + half)

    # memory: the samples themselves must fit; the batch is what fits beside them
    numel = math.prod(shape)
    output_bytes = 4 * n * numel * (2 if device.type == "cuda" else 1)  # + the CPU copy
    if output_bytes > 0.5 * available:
        raise ValueError(
            f"n={n} samples of shape {list(shape)} need {_gib(4 * n * numel)} for the samples "
            f"alone; about {_gib(0.5 * available)} is free for them on {device}: ask for at "
            f"most {int(0.5 * available / (4 * numel)):,} samples per run"
        )
    per_chain = _bytes_per_chain(model, numel)
    fits = max(1, int(BATCH_MEMORY_FRACTION * available / per_chain))
    if batch_size is None:
        batch_size = min(n, fits)
        if batch_size < n:
            notes.append(f"sampling in batches of {batch_size} chains (what fits in memory)")
    else:
        batch_size = min(check_positive_int("batch_size", batch_size), n)
        if batch_size > 4 * fits:
            raise ValueError(
                f"batch_size={batch_size} chains of shape {list(shape)} need about "
                f"{_gib(batch_size * per_chain)} while a step runs; about {_gib(available)} is "
                f"free on {device}: use batch_size <= {fits}"
            )
    result = SamplingPlan(
        sampler=sampler,
        n=n,
        shape=tuple(shape),
        batch_size=batch_size,
        seed=seed,
        init=init,
        start_mean=start_mean,
        start_std=start_std,
        target_sigma=target_sigma,
        start_cov=start_cov,
        uniform_range=uniform_range,
        **plan,
    )
    movement = result.movement
    if movement is not None and movement < MOVEMENT_WARNING * model.sigma_data:
        notes.append(
            f"the chains can move only about {movement:.3g} in {result.total_steps} steps "
            f"(sqrt(2 Σ step)), far less than the data's spread (σ_data={model.sigma_data:.3g}): "
            "they may not converge; raise the steps or the step size"
        )
    return replace(result, notes=tuple(notes))


def _single_level(model, sampler, steps, sigma, step_size) -> dict[str, Any]:
    """σ and ε of Langevin/MALA at one level (see :data:`DEFAULTS`)."""
    fixed, trained_range = model.fixed_sigma, model.sigma_range
    if sigma is not None:
        sigma = check_positive_float("sigma", sigma, allow_zero=True)
    if fixed is not None:
        if sigma is not None and abs(sigma - fixed) > 1e-4 * fixed:
            raise ValueError(
                f"sigma={sigma:g}, but {model.name} was trained at the single level σ={fixed:g}"
            )
        sigma = fixed
    elif sigma is None:
        low, high = trained_range
        if model.exact:
            sigma = low
        else:
            # ε = s σ² moves a chain sqrt(2 s σ² N); make that MOVEMENT data std
            wanted = MOVEMENT * model.sigma_data / math.sqrt(2.0 * STEP_SCALE * steps)
            sigma = min(max(wanted, low), high)
    if sigma == 0 and not model.exact:
        raise ValueError(
            "sigma must be > 0 for a learned denoiser (its score (D(x, σ) − x)/σ² needs σ > 0)"
        )
    sigma = _check_sigma(sigma, "sigma", model)
    if step_size is None:
        floor = model.oracle.eigvals.min().item() if model.exact else 0.0
        step_size = STEP_SCALE * (sigma**2 + floor)
    else:
        step_size = check_positive_float("step_size", step_size)
    return {"sigma": float(sigma), "step_size": float(step_size), "n_steps": steps}


def _ladder(sampler, steps, top, bottom, levels, step_lr, snr, step_scale) -> dict[str, Any]:
    """The σ ladder and its step rule for annealed / pc / ode (see :data:`DEFAULTS`);
    ``step_scale`` is annealed's α_i / σ_i² when ``step_lr`` is not given, ``snr`` pc's
    corrector snr (the caller has filled in its default)."""
    from scoregen.samplers import geometric_sigmas, karras_sigmas

    if sampler == "annealed":
        levels = ANNEALED_LEVELS if levels is None else check_positive_int("levels", levels, minimum=2)  # fmt: skip
        if steps < levels:
            raise ValueError(
                f"steps={steps} is fewer than the annealing levels (levels={levels}): annealed "
                f"splits the steps across the levels, so it needs at least {levels}"
            )
        sigmas = geometric_sigmas(top, bottom, levels, dtype=_f64())
        if step_lr is not None:
            step_lr = check_positive_float("step_lr", step_lr)
        return {
            "sigmas": tuple(sigmas.tolist()),
            "n_steps_each": steps // levels,
            "step_lr": step_lr,
            "step_scale": None if step_lr is not None else step_scale,
        }
    if steps < 2:
        raise ValueError(
            f"{sampler} needs steps >= 2 ("
            + ("one predictor and one corrector step" if sampler == "pc" else "a ladder of 3 levels")
            + f"), got {steps}"
        )
    if sampler == "pc":
        sigmas = geometric_sigmas(top, bottom, steps // 2 + 1, dtype=_f64())
        return {"sigmas": tuple(sigmas.tolist()), "snr": float(check_positive_float("snr", snr))}
    sigmas = karras_sigmas(top, bottom, steps + 1, dtype=_f64())
    return {"sigmas": tuple(sigmas.tolist())}


def _f64():
    import torch

    return torch.float64


def torch_eye(d: int):
    import torch

    return torch.eye(d, dtype=torch.float64)
