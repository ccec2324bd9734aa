"""Running a sampling plan: starting batches, the sampler, chunks, and data space."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scoregen.sampling.plan import SamplingPlan, plan_sampling

__all__ = ["SampleRun", "data_start", "held_out_examples", "run_plan", "sample"]


@dataclass
class SampleRun:
    """What :func:`run_plan` returns: the samples in model space (on the model's device),
    the wall time (compilation included), MALA's acceptance rate (None for the other
    samplers), and with ``compile=True`` the time the first call took to compile (or why it
    fell back to eager)."""

    samples: Tensor
    seconds: float
    acceptance_rate: float | None = None
    compile_seconds: float | None = None
    compile_fallback: str | None = None


def held_out_examples(model) -> Tensor:
    """The held-out examples of the data set a checkpoint was trained on, in model space
    (the start of ``init="data"``). A ValueError when the data cannot be rebuilt from its
    record (data passed from Python, or files that are not here)."""
    from scoregen.data import DATASETS, dataset_options, load_dataset

    record = model.data
    name = record.get("name")
    if name not in DATASETS:
        raise ValueError(
            f"init='data': {model.name} was trained on data {name!r}, which scoregen cannot "
            "rebuild from the checkpoint; pass the examples to start from (data=... in "
            "scoregen.sample, --init-data FILE on the command line)"
        )
    allowed = dataset_options(name)
    options = {k: v for k, v in record.items() if k in allowed and k != "n_test"}
    try:
        dataset = load_dataset(name, **options)
    except (ValueError, OSError) as e:
        raise ValueError(f"init='data': cannot load the data set {name!r}: {e}") from None
    examples = dataset.test if dataset.test is not None else dataset.train
    if examples is None:
        raise ValueError(f"init='data': the data set {name!r} has no examples to start from")
    return examples.float()


def _per_entry(values, shape: tuple[int, ...], device, dtype) -> Tensor:
    """Per-channel (images) or per-coordinate (points) values shaped to broadcast over one
    example: ``[C, 1, 1]`` or ``[d]``."""
    t = torch.tensor(values, device=device, dtype=dtype)
    return t.reshape((len(values),) + (1,) * (len(shape) - 1))


def _gaussian(mean, std, shape: tuple[int, ...], generator, dtype) -> Tensor:
    """``mean + std · z`` with one mean and std per channel (images) or coordinate (points)."""
    device, example = generator.device, tuple(shape[1:])
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return _per_entry(mean, example, device, dtype) + _per_entry(std, example, device, dtype) * noise


def data_start(model, shape: tuple[int, ...], sigma: float, generator, dtype=torch.float32) -> Tensor:
    """Chains ``shape = (n, *example)`` around where the data lies: the data's mean plus noise
    of variance ``σ² + s²`` per channel or coordinate, with the data's mean and std ``s`` that
    the checkpoint recorded (``model.data_stats``): the mean and variance of ``p_σ``."""
    mean, std, _ = model.data_stats
    spread = [math.sqrt(s**2 + sigma**2) for s in std.tolist()]
    return _gaussian(mean.tolist(), spread, shape, generator, dtype)


def _start(model, plan: SamplingPlan, n: int, generator, examples: Tensor | None) -> Tensor:
    device, dtype = generator.device, torch.float32
    shape = (n, *plan.shape)
    if plan.init == "exact":
        mixture = model.oracle.to(device=device)
        draws = mixture.blurred(plan.start_std[0]).sample(n, generator=generator)
        return draws.reshape(shape).to(dtype)
    if plan.init == "uniform":
        low, high = plan.uniform_range
        return low + (high - low) * torch.rand(shape, generator=generator, device=device, dtype=dtype)  # fmt: skip
    if plan.start_cov is not None:  # points: the data's covariance + σ²I, by its Cholesky factor
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        chol = torch.linalg.cholesky(torch.tensor(plan.start_cov, dtype=torch.float64))
        mean = torch.tensor(plan.start_mean, device=device, dtype=dtype)
        return mean + noise @ chol.T.to(device=device, dtype=dtype)
    if plan.init == "data":
        start = _gaussian([0.0] * len(plan.start_std), plan.start_std, shape, generator, dtype)
        index = torch.randint(examples.shape[0], (n,), generator=generator, device=device)
        return examples.to(device=device, dtype=dtype)[index] + start
    return _gaussian(plan.start_mean, plan.start_std, shape, generator, dtype)


def run_plan(
    model,
    plan: SamplingPlan,
    *,
    examples: Tensor | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    progress: bool | None = None,
    compile: bool = False,
) -> SampleRun:
    """Run ``plan`` (from :func:`plan_sampling`) on ``model``: ``plan.n`` chains in batches of
    ``plan.batch_size``, one ``torch.Generator`` seeded with ``plan.seed`` on the model's
    device drawing every start and every step, so a run is reproducible bit for bit.

    ``examples`` (model space) are the starts of ``init="data"`` (default: the model's
    held-out data, :func:`held_out_examples`). ``callback`` sees every step of every batch;
    its dict has ``"batch"`` (the batch index) beside the sampler's own keys. ``compile=True``
    runs the score through :func:`scoregen.compiled.compile_score` (σ a tensor input: one
    graph for the whole ladder; eager with a warning where compiling fails).
    """
    from scoregen.samplers import (
        annealed_langevin,
        mala,
        predictor_corrector,
        probability_flow,
    )
    from scoregen.samplers import langevin as ula

    device = model.device
    score = model.score
    if compile:
        from scoregen.compiled import compile_score

        score = compile_score(model, batch_size=plan.batch_size)
    if plan.init == "data" and examples is None:
        examples = held_out_examples(model)
    generator = torch.Generator(device).manual_seed(plan.seed)
    chunks, accepted = [], 0.0
    start_time = time.perf_counter()
    for index, first in enumerate(range(0, plan.n, plan.batch_size)):
        size = min(plan.batch_size, plan.n - first)
        x0 = _start(model, plan, size, generator, examples)
        hook = None
        if callback is not None:

            def hook(info, batch=index):
                callback({**info, "batch": batch})

        common = {"callback": hook, "progress": progress}
        if plan.sampler == "langevin":
            x = ula(score, x0, sigma=plan.sigma, step_size=plan.step_size,
                    n_steps=plan.n_steps, temperature=plan.temperature, generator=generator,
                    **common)  # fmt: skip
        elif plan.sampler == "mala":
            x, stats = mala(model.log_prob, x0, sigma=plan.sigma, step_size=plan.step_size,
                            n_steps=plan.n_steps, score=score, return_stats=True,
                            generator=generator, **common)  # fmt: skip
            accepted += stats.acceptance_rate * size
        elif plan.sampler == "annealed":
            x = annealed_langevin(score, x0, plan.sigmas, n_steps_each=plan.n_steps_each,
                                  step_lr=plan.step_lr, step_scale=plan.step_scale,
                                  adaptive=plan.adaptive, temperature=plan.temperature,
                                  final_denoise=plan.final_denoise, generator=generator,
                                  **common)  # fmt: skip
        elif plan.sampler == "pc":
            x = predictor_corrector(score, x0, plan.sigmas, snr=plan.snr,
                                    final_denoise=plan.final_denoise, generator=generator,
                                    **common)  # fmt: skip
        else:
            x = probability_flow(score, x0, plan.sigmas, final_denoise=plan.final_denoise,
                                 **common)  # fmt: skip
        chunks.append(x)
    samples = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    seconds = time.perf_counter() - start_time
    rate = accepted / plan.n if plan.sampler == "mala" else None
    return SampleRun(
        samples=samples,
        seconds=seconds,
        acceptance_rate=rate,
        compile_seconds=getattr(score, "compile_seconds", None),
        compile_fallback=getattr(score, "fallback", None),
    )


def sample(
    model,
    n: int | None = None,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    device=None,
    data: Tensor | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    progress: bool | None = None,
    compile: bool = False,
    **options: Any,
) -> Tensor:
    """Draw ``n`` samples from ``model``: exactly what ``scoregen sample`` draws.

    ``model`` is ``"builtin:NAME"``, a checkpoint path or a loaded
    :class:`~scoregen.checkpoint.ScoreModel` (a name or path is loaded onto ``device``,
    default CUDA when available). ``sampler``, ``steps`` and the other ``options``
    (``sigma``, ``step_size``, ``sigma_max``, ``sigma_min``, ``levels``, ``step_lr``,
    ``snr``, ``temperature``, ``init``, ``batch_size``) are those of :func:`plan_sampling`,
    whose defaults are the command line's. ``data`` are examples in data space to start
    from with ``init="data"`` (default: the checkpoint's held-out data). ``compile=True``
    compiles the score once for the whole σ ladder (see :func:`run_plan`).

    Returns the samples in data space (pixels in [0, 1] for images), on the CPU::

        x = scoregen.sample("builtin:ncsn2d-dae", 1000, steps=5000, seed=0)
    """
    from scoregen.builtins import load_model

    model = load_model(model, "auto" if device is None else device)
    plan = plan_sampling(model, n, sampler=sampler, steps=steps, seed=seed, **options)
    examples = None if data is None else model.from_data_space(torch.as_tensor(data).float())
    run = run_plan(model, plan, examples=examples, callback=callback, progress=progress,
                   compile=compile)  # fmt: skip
    return model.to_data_space(run.samples).cpu()
