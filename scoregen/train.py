"""The training loop: a denoiser fitted by MSE is an MMSE estimator; EMA, AMP, metrics, resume.

One step, for the default objective::

    x ~ data,  σ ~ noise levels,  z ~ N(0, I)
    loss = mean_b λ(σ_b) ‖D(x_b + σ_b z_b, σ_b) − x_b‖² / d        (scoregen.losses.dae_loss)
    θ ← AdamW(θ, ∇loss) with warmup + cosine learning rate and gradient clipping
    θ_ema ← β_t θ_ema + (1 − β_t) θ                                   (the weights sampling uses)

Every random draw comes from one of three generators seeded from ``config.seed`` (data,
noise, and torch's global one for dropout inside the model), all saved in the resume file:
a run stopped and resumed gives, on CPU, exactly the weights of the uninterrupted run. The
resume file also records the data's fingerprint (a resume on other data is refused) and the
learning-rate schedule: resuming to another total number of steps under the cosine schedule
is refused unless asked for with ``extend=True``, and then recorded, so a later resume of the
extended run is exact too.

The files of a run (checkpoint, resume state, metrics) are written atomically, together, at
each checkpoint; a run over the files of another keeps them until its own first checkpoint
(its metrics lines go to ``METRICS.partial`` until then), and a lock file beside the
checkpoint (``CHECKPOINT.lock``, holding the PID) refuses a second run on the same files.
Before anything large is allocated, the model and one step's activations are estimated
against the memory available; a batch or a model that does not fit is a ValueError saying
what fits.

Data-parallel: launched by ``torchrun`` (``WORLD_SIZE`` > 1), or with ``torch.distributed``
already initialised by the caller, every process trains a replica wrapped in
``DistributedDataParallel``. Each draws its own ``batch_size`` examples from generators seeded
from (seed, rank), so one update sees ``world_size × batch_size`` examples; DDP averages the
gradients, so the replicas stay equal. Rank 0 draws exactly what a single process would, and
alone writes the checkpoint, the resume state (holding every rank's generators) and the
metrics; logged losses are averaged over the ranks.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen._run_files import OutputLockedError, RunFiles, locked, run_paths
from scoregen._util import append_dims, available_memory, format_bytes, jsonable, resolve_device
from scoregen.config import OBJECTIVES, TrainConfig
from scoregen.losses import (
    dae_loss,
    esm_loss,
    loss_weight,
    noise2noise_loss,
    noisy_pair,
    ssm_loss,
)
from scoregen.noise_levels import NoiseLevels

__all__ = [
    "OBJECTIVES",
    "OutputLockedError",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "ema_decay_at",
    "ema_update",
    "estimate_sigma_data",
    "learning_rate",
    "schedule_total",
    "train",
]

# Explicit score matching costs one backward pass per dimension: toys only.
ESM_MAX_DIM = 64
# Fields that change the trajectory: a resumed run must agree on all of them.
_RESUME_FIELDS = (
    "model", "model_config", "precond", "sigma_data", "data", "data_options", "noise", "sigma",
    "sigma_min", "sigma_max", "n_levels", "p_mean", "p_std", "objective", "weighting",
    "n_projections", "projection", "batch_size", "lr", "lr_schedule", "warmup",
    "weight_decay", "grad_clip", "ema_decay", "ema_warmup", "seed", "amp",
)  # fmt: skip
# The share of the available memory a run plans to fill; the rest covers what the estimate
# leaves out (the allocator's slack, the data set's own copies, Python).
MEMORY_FRACTION = 0.8


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after update ``step``; ``checkpoint`` is where that step was saved
    (None when it could not be: no checkpoint path, or the files there are another run's)."""

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(step, checkpoint)
        self.step, self.checkpoint = step, checkpoint


@dataclass
class TrainResult:
    """What :func:`train` returns: the EMA denoiser (eval mode), the raw trained one, the
    logged history (one dict per log line), the checkpoint path (or None) and a summary."""

    denoiser: torch.nn.Module
    model: torch.nn.Module
    history: list[dict[str, Any]]
    checkpoint: Path | None
    summary: dict[str, Any]

    @property
    def score(self):
        """The Tweedie score of the EMA denoiser, ``(D(x, σ) − x)/σ²``."""
        from scoregen.score import tweedie_score

        return tweedie_score(self.denoiser)


# ---------------------------------------------------------------------- small pure pieces
def learning_rate(step: int, *, lr: float, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate of update ``step`` (1-based): linear warmup ``lr·step/warmup``, then
    ``lr`` (constant) or ``lr·½(1 + cos(π p))`` with ``p`` going from 0 to 1 over the rest."""
    if warmup > 0 and step <= warmup:
        return lr * step / warmup
    if schedule == "constant":
        return lr
    progress = (step - 1 - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def schedule_total(step: int, segments: list[list[int]]) -> int:
    """The total number of steps whose schedule update ``step`` follows.

    ``segments`` is ``[[0, N₀], [s₁, N₁], ...]``: a run planned for ``N₀`` steps, extended at
    step ``s₁`` to ``N₁`` (and so on). Updates ``≤ s₁`` follow the schedule of an ``N₀``-step
    run; later ones that of an ``N₁``-step run (as if it had been planned from the start).
    """
    total = segments[0][1]
    for start, extended in segments[1:]:
        if step > start:
            total = extended
    return total


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """EMA decay after update ``step`` (1-based): ``min(β, (1 + t)/(10 + t))`` with warmup,
    so the average of a short run is not dominated by the random initial weights."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``θ_ema ← β θ_ema + (1 − β) θ`` for every parameter; buffers are copied."""
    _EMA(ema, model).update(decay)


class _EMA:
    """The EMA's parameter and buffer lists, made once: one foreach kernel per update."""

    def __init__(self, ema: torch.nn.Module, model: torch.nn.Module):
        self.averaged, self.current = list(ema.parameters()), list(model.parameters())
        self.averaged_buffers = list(ema.buffers())
        self.current_buffers = list(model.buffers())

    @torch.no_grad()
    def update(self, decay: float) -> None:
        # lerp(a, b, w) = a + w (b − a) = β a + (1 − β) b for w = 1 − β
        torch._foreach_lerp_(self.averaged, self.current, 1.0 - decay)
        if self.averaged_buffers:
            torch._foreach_copy_(self.averaged_buffers, self.current_buffers)


def estimate_sigma_data(data, n: int = 4096, seed: int = 0) -> float:
    """The data's standard deviation over all numbers (EDM's σ_data) from ``n`` draws.

    Uses its own generator, so the training draws do not depend on it. For data made only
    of noisy pairs it removes the known pair noise: ``sqrt(max(var(y) − σ_pair², ε))``.
    """
    generator = torch.Generator().manual_seed(seed + 7919)
    if data.sampler is None and data.train is None:
        noisy, _ = data.sample_pairs(n, generator)
        var = noisy.double().var().item() - float(data.info["pair_sigma"]) ** 2
        return math.sqrt(max(var, 1e-6))
    return max(data.sample(n, generator).double().std().item(), 1e-3)


# ---------------------------------------------------------------------- data parallel
@dataclass
class _Parallel:
    """This process's place in a data-parallel run (world_size 1: a single process)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # train() initialised the process group, so it destroys it

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def seed(self, seed: int, stream: str) -> int:
        """The seed of one random stream on this rank: rank 0 keeps the single-process
        ``seed``; the others get independent ones hashed from (seed, rank, stream)."""
        if self.rank == 0:
            return seed
        digest = hashlib.blake2b(f"{seed}/{self.rank}/{stream}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "little") >> 1  # manual_seed takes < 2⁶³

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place."""
        if self.active:
            torch.distributed.all_reduce(tensor)
        return tensor

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None on the others."""
        if not self.active:
            return [obj]
        gathered = [None] * self.world_size if self.rank == 0 else None
        torch.distributed.gather_object(obj, gathered, dst=0)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _join_process_group(device_choice: str) -> tuple[_Parallel, torch.device]:
    """The process group this run trains in (initialised here when launched by torchrun)
    and this rank's device: ``cuda:LOCAL_RANK`` for device auto / cuda."""
    device = resolve_device(device_choice)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        owns = False
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch was built without distributed")
        owns = True
    else:
        return _Parallel(), device
    if device.type == "cuda" and device_choice in ("auto", "cuda"):
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is None:
            local_rank = dist.get_rank() % torch.cuda.device_count() if not owns else 0
        device = torch.device("cuda", int(local_rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    elif device.type == "cpu" and dist.get_backend() == "nccl":
        raise ValueError(
            "device='cpu' but the process group's backend is nccl, which reduces only CUDA "
            "tensors; train on device='cuda' or initialise the group with backend='gloo'"
        )
    return _Parallel(dist.get_rank(), dist.get_world_size(), owns), device


# ---------------------------------------------------------------------- one step's loss
def _step_loss(
    config: TrainConfig,
    denoiser,
    data,
    noise: NoiseLevels,
    sigma_data: float,
    generators: dict[str, torch.Generator],
    device: torch.device,
    n: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch's per-example losses: (weighted [B], unweighted [B], σ [B]); ``n`` examples
    (default ``config.batch_size``)."""
    n = config.batch_size if n is None else n
    # batches in the model's dtype (float32 unless the caller's data says otherwise)
    dtype = next(denoiser.parameters()).dtype
    if config.objective == "n2n" and data.pairs is not None:
        # real noisy pairs: the input's level is the data's pair_sigma
        noisy, target = data.sample_pairs(n, generators["data"])
        noisy, target = noisy.to(device, dtype), target.to(device, dtype)
    else:
        x = data.sample(n, generators["data"]).to(device, dtype)
    sigma = noise.sample(n, generators["noise"], device=device, dtype=dtype)
    weight_args = {"weighting": config.weighting, "sigma_data": sigma_data}

    if config.objective == "dae":
        per = dae_loss(denoiser, x, sigma, generator=generators["noise"], **weight_args)
    elif config.objective == "n2n":
        if data.pairs is None:  # clean data: synthesize both noisy copies
            noisy, target = noisy_pair(x, sigma, generator=generators["noise"])
        per = noise2noise_loss(denoiser, noisy, target, sigma, **weight_args)
    else:
        # Score matching on y ~ p_σ through the Tweedie score of the same denoiser. Scaled by
        # 2σ⁴/d it reads in MSE units: σ⁴‖s − ∇log p_σ‖²/d = ‖D − D*‖²/d, so its minimiser,
        # its gradient scale and λ(σ) mean what they mean for dae (up to a constant).
        y = x + append_dims(sigma, x.ndim) * torch.randn(
            x.shape, generator=generators["noise"], device=device, dtype=x.dtype
        )

        def score(v: Tensor, level: Tensor) -> Tensor:
            return (denoiser(v, level) - v) / append_dims(level, v.ndim) ** 2

        if config.objective == "esm":
            raw = esm_loss(score, y, sigma)
        else:
            raw = ssm_loss(
                score,
                y,
                sigma,
                n_projections=config.n_projections,
                projection=config.projection,
                generator=generators["noise"],
            )
        dim = x[0].numel()
        per = 2 * sigma**4 / dim * raw * loss_weight(sigma, **weight_args)
    unweighted = per.detach() / loss_weight(sigma, **weight_args)
    return per, unweighted, sigma


class _Window:
    """What the steps between two log lines leave for the log: per-step batch losses and
    gradient norms (kept as device tensors, no sync per step) and loss sums per σ bucket."""

    def __init__(self, edges: Tensor, device: torch.device):
        self.edges = edges
        self.inner = edges[1:-1].to(device=device, dtype=torch.float32)
        n_buckets = len(edges) - 1
        self.sums = torch.zeros(n_buckets, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_buckets, dtype=torch.float64, device=device)
        self.losses: list[Tensor] = []  # one 0-d tensor per step: summed at the log line, so
        self.grad_norms: list[Tensor] = []  # the sum does not depend on where a save fell
        self.ones: Tensor | None = None

    @property
    def steps(self) -> int:
        return len(self.losses)

    def add(self, loss: Tensor, unweighted: Tensor, sigma: Tensor, grad_norm: Tensor):
        bucket = torch.bucketize(sigma.detach(), self.inner)
        if self.ones is None or self.ones.shape != unweighted.shape:
            self.ones = torch.ones_like(unweighted, dtype=torch.float64)
        self.sums.index_add_(0, bucket, unweighted.double())
        self.counts.index_add_(0, bucket, self.ones)
        self.losses.append(loss.detach())
        self.grad_norms.append(grad_norm.detach())

    def state(self) -> dict[str, Any]:
        return {
            "sums": self.sums.cpu(),
            "counts": self.counts.cpu(),
            "loss": _stacked(self.losses).cpu(),
            "grad_norm": _stacked(self.grad_norms).cpu(),
            "steps": self.steps,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
        device = self.sums.device
        # a 0-d loss is the running sum an older scoregen kept: one entry standing for it
        self.losses = [t.to(device) for t in state["loss"].reshape(-1)]
        self.grad_norms = [t.to(device) for t in state["grad_norm"].reshape(-1)]
        if len(self.losses) != int(state["steps"]):
            self.losses += [torch.zeros((), device=device)] * (int(state["steps"]) - 1)
            self.grad_norms += [torch.zeros((), device=device)] * (int(state["steps"]) - 1)

    def flush(self, parallel: _Parallel) -> dict[str, Any]:
        """The window's means over all ranks, then reset."""
        steps = max(self.steps, 1)
        loss, grad_norm = _stacked(self.losses).sum(), _stacked(self.grad_norms).sum()
        if parallel.active:  # one collective per log line: sums, counts, loss, grad norm
            packed = parallel.sum_(torch.cat([self.sums, self.counts, loss[None], grad_norm[None]]))
            n = len(self.sums)
            self.sums.copy_(packed[:n])
            self.counts.copy_(packed[n : 2 * n])
            loss, grad_norm = (
                packed[2 * n] / parallel.world_size,
                packed[2 * n + 1] / parallel.world_size,
            )
        sums, counts = self.sums.tolist(), self.counts.tolist()
        edges = self.edges.tolist()
        by_sigma = {
            f"{edges[i]:.3g}-{edges[i + 1]:.3g}": (sums[i] / counts[i] if counts[i] else None)
            for i in range(len(sums))
        }
        out = {
            "loss": loss.item() / steps,
            "grad_norm": grad_norm.item() / steps,
            "loss_by_sigma": by_sigma,
        }
        self.sums.zero_()
        self.counts.zero_()
        self.losses, self.grad_norms = [], []
        return out


def _stacked(values: list[Tensor]) -> Tensor:
    """Per-step 0-d values as one float64 vector (empty when there are none)."""
    if not values:
        return torch.zeros(0, dtype=torch.float64)
    return torch.stack([v.double() for v in values])


# ---------------------------------------------------------------------- set-up: data, model
def _load_data(config: TrainConfig, data, parallel: _Parallel):
    """The caller's data as a Dataset, or ``config.data`` loaded (rank 0 first, so a data set
    it downloads is fetched once), checked against the objective."""
    from scoregen.data import as_dataset, load_dataset

    if data is not None:
        data = as_dataset(data)
    else:
        if parallel.rank > 0:
            parallel.barrier()
        try:
            data = load_dataset(config.data, **config.data_options)
        finally:
            if parallel.rank == 0:
                parallel.barrier()
    real_pairs = config.objective == "n2n" and data.pairs is not None
    if not real_pairs and data.sampler is None and data.train is None:
        raise ValueError(
            f"dataset {data.name!r} holds only noisy pairs; train it with objective='n2n'"
        )
    if config.objective == "esm" and math.prod(data.shape) > ESM_MAX_DIM:
        raise ValueError(
            f"objective='esm' computes the exact Jacobian trace (one backward pass per "
            f"dimension), allowed up to d={ESM_MAX_DIM}; the data has d={math.prod(data.shape)}. "
            "Use 'ssm' or 'dae'"
        )
    return data


def _noise_levels(config: TrainConfig, data) -> NoiseLevels:
    """The training σ law; real Noise2Noise pairs fix it at their ``pair_sigma``."""
    sigma = config.sigma
    if config.objective == "n2n" and data.pairs is not None:
        pair_sigma = data.info.get("pair_sigma")
        if pair_sigma is None:
            raise ValueError(f"dataset {data.name!r} has pairs but no info['pair_sigma']")
        if config.noise != "fixed" or (sigma is not None and abs(sigma - pair_sigma) > 1e-9):
            raise ValueError(
                f"real Noise2Noise pairs have one noise level, pair_sigma={pair_sigma}; "
                f"use noise='fixed' with sigma None or {pair_sigma}, got noise={config.noise!r}, "
                f"sigma={sigma}"
            )
        sigma = float(pair_sigma)
    return config.noise_levels(sigma)


def _data_identity(config: TrainConfig, data, given: bool) -> dict[str, Any]:
    """What the resume state records of the data: where it came from and its fingerprint."""
    from scoregen.data import fingerprint

    identity = {"source": "python" if given else "named", "name": data.name}
    if not given:
        identity["options"] = jsonable(config.data_options)
    identity["fingerprint"] = fingerprint(data)
    return identity


def _build_denoiser(config: TrainConfig, data, sigma_data: float, fixed_sigma: float | None):
    from scoregen.models import MODELS, Denoiser, build_net

    if config.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {config.model!r}")
    net_config = dict(config.model_config)
    fields = {f.name for f in dataclasses.fields(MODELS[config.model][0])}
    if "shape" in fields:
        given = net_config.setdefault("shape", tuple(data.shape))
        if not isinstance(given, (list, tuple)) or tuple(given) != tuple(data.shape):
            raise ValueError(
                f"model_config['shape'] = {tuple(given) if isinstance(given, list) else given!r} "
                f"but the data {data.name!r} has "
                f"examples of shape {tuple(data.shape)}"
            )
    try:
        net = build_net(config.model, **net_config)
    except (TypeError, RuntimeError, OverflowError) as e:
        # a width of the wrong type or sign reaches torch's constructors
        raise ValueError(
            f"model_config {jsonable(config.model_config)} cannot build a {config.model!r}: "
            f"{' '.join(str(e).split())}"
        ) from None
    options = {} if config.precond is None else {"precond": config.precond}
    return Denoiser(net, sigma_data=sigma_data, fixed_sigma=fixed_sigma, **options)


def _check_model_fits(config: TrainConfig, data, sigma_data, fixed_sigma, device) -> None:
    """Build the network on the meta device (no memory) and refuse one whose weights,
    gradients, AdamW moments and EMA copy would not fit."""
    try:
        # quiet: a zero width warns that initialising it is a no-op; it is refused below
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = _build_denoiser(config, data, sigma_data, fixed_sigma)
    except (RuntimeError, NotImplementedError):
        return  # an architecture that cannot be built on meta is checked when it is built
    parameters = dict(skeleton.named_parameters())
    empty = [name for name, p in parameters.items() if p.numel() == 0]
    if not parameters or empty:
        raise ValueError(
            f"model_config {jsonable(config.model_config)} builds a {config.model!r} with "
            f"empty weights ({', '.join(empty[:3]) or 'none at all'}): every width must be >= 1"
        )
    n_params = sum(p.numel() for p in parameters.values())
    # weights, gradients, AdamW's two moments and the EMA copy; buffers in the model and EMA
    needed = 5 * sum(p.numel() * p.element_size() for p in parameters.values())
    needed += 2 * sum(b.numel() * b.element_size() for b in skeleton.buffers())
    available = available_memory(device)
    if needed > MEMORY_FRACTION * available:
        raise ValueError(
            f"model_config {jsonable(config.model_config)} builds a {config.model} network of "
            f"{n_params:,} parameters, whose weights, gradients, AdamW moments and EMA copy "
            f"need about {format_bytes(needed)}; about {format_bytes(available)} is available "
            f"on {device}"
        )


def _activation_bytes(config, denoiser, data, noise, sigma_data, generators, device, use_amp):
    """Bytes one more example adds to a training step: the tensors autograd saves for the
    backward pass, measured on batches of 2 and 4 (copies of the generators, eval mode, the
    caller's random state untouched). A model that cannot process the data's examples
    fails here, before anything large is allocated."""
    saved = [0]

    def pack(t: Tensor) -> Tensor:
        saved[-1] += t.numel() * t.element_size()
        return t

    probes = {}
    for name, generator in generators.items():
        probes[name] = torch.Generator(generator.device)
        probes[name].set_state(generator.get_state())
    was_training = denoiser.training
    sizes = []
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            denoiser.eval()
            for n in (2, 4):
                saved.append(0)
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                        per, _, _ = _step_loss(
                            config, denoiser, data, noise, sigma_data, probes, device, n=n
                        )
                    per.mean().backward()
                sizes.append(saved[-1])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(
            f"model {config.model!r} with model_config {jsonable(config.model_config)} cannot "
            f"train on {data.name!r} examples of shape {list(data.shape)}: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    finally:
        denoiser.train(was_training)
        denoiser.zero_grad(set_to_none=True)
    return max((sizes[1] - sizes[0]) / 2, 4 * math.prod(data.shape))


def _check_batch_fits(
    config, per_example: float, example_numel: int, parallel: _Parallel, device
) -> None:
    """Refuse a batch whose step (saved activations, their gradients, the batch itself)
    would not fit in the memory available."""
    # backward holds the activations' gradients beside them; the draw of the batch, its noise
    # and targets (and a sampler's float64 temporaries) are another ~16 copies of an example
    per_example = 2 * per_example + 16 * 4 * example_numel
    needed = config.batch_size * per_example
    available = available_memory(device)
    if needed > MEMORY_FRACTION * available:
        most = int(MEMORY_FRACTION * available / per_example)
        where = f"{device}" + (" per process" if parallel.active else "")
        raise ValueError(
            f"batch_size={config.batch_size} needs about {format_bytes(needed)} per step "
            f"(about {format_bytes(per_example)} per example: the {config.model}'s activations, "
            f"their gradients and the batch); about {format_bytes(available)} is available "
            f"on {where}: use batch_size <= {max(most, 1):,}"
        )


# ---------------------------------------------------------------------- resume
def _read_resume_state(config: TrainConfig) -> tuple[dict[str, Any], Path]:
    """The resume state ``config.resume`` names (a checkpoint or its ``.resume.pt``), its
    fields checked; a :class:`~scoregen.checkpoint.CheckpointError` naming the file if not."""
    from scoregen.checkpoint import CheckpointError, load_resume_state, resume_path

    source = Path(config.resume)
    source = source if source.suffix == ".pt" else resume_path(source)
    state = load_resume_state(source)
    where = repr(str(source))

    def need(name: str, kind, check=lambda v: True, what: str = "") -> Any:
        value = state.get(name)
        if isinstance(value, bool) or not isinstance(value, kind) or not check(value):
            raise CheckpointError(
                f"{where} is not a usable resume state: {name} must be {what or kind}, got "
                f"{type(value).__name__}"
            )
        return value

    need("step", int, lambda v: v >= 0, "an integer >= 0")
    need("config", dict, what="a dict of TrainConfig fields")
    for name in ("model", "ema", "optimizer"):
        need(name, dict, what="a state dict")
    need("history", list, lambda v: all(isinstance(r, dict) for r in v), "a list of dicts")
    need("sigma_data", (int, float), lambda v: math.isfinite(v) and v > 0, "a number > 0")
    need("wall_time_s", (int, float), math.isfinite, "a finite number")
    world = state.get("world_size", 1)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise CheckpointError(f"{where} is not a usable resume state: world_size {world!r}")
    ranks = state.get("ranks") if world > 1 else [state]
    if not isinstance(ranks, list) or len(ranks) != world:
        raise CheckpointError(f"{where} is not a usable resume state: no state for every rank")
    for own in ranks:
        rng, window = own.get("rng"), own.get("window") if isinstance(own, dict) else None
        if not (
            isinstance(rng, dict)
            and all(isinstance(rng.get(k), Tensor) for k in ("data", "noise", "torch"))
            and isinstance(window, dict)
            and all(isinstance(window.get(k), Tensor) for k in ("sums", "counts", "loss"))
        ):
            raise CheckpointError(
                f"{where} is not a usable resume state: its random generator or log-window "
                "states are missing or not tensors"
            )
    segments = state.get("lr_segments", [[0, state["config"].get("steps")]])
    if not (
        isinstance(segments, list)
        and segments
        and all(
            isinstance(s, list) and len(s) == 2 and all(type(v) is int and v >= 0 for v in s)
            for s in segments
        )
    ):
        raise CheckpointError(f"{where} is not a usable resume state: lr_segments {segments!r}")
    saved = {k: v for k, v in state["config"].items() if k in _config_fields()}
    try:
        TrainConfig(**saved)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} holds an invalid training configuration: {e}") from None
    if state["step"] > segments[-1][1]:
        raise CheckpointError(
            f"{where} is not a usable resume state: step {state['step']} is past its schedule's "
            f"end {segments[-1][1]}"
        )
    return state, source


def _config_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def _check_resume(
    config: TrainConfig,
    state: dict[str, Any],
    source: Path,
    identity: dict[str, Any],
    parallel: _Parallel,
) -> list[list[int]]:
    """Refuse a resume that cannot continue the saved run exactly (another configuration,
    other data, another number of processes, a silently changed schedule); returns the
    learning-rate schedule segments the resumed run follows."""
    current, saved = jsonable(dataclasses.asdict(config)), jsonable(state["config"])
    differ = [
        f"{name}: saved {saved.get(name)!r}, now {current.get(name)!r}"
        for name in _RESUME_FIELDS
        if saved.get(name) != current.get(name)
    ]
    if differ:
        raise ValueError(
            f"resume={str(source)!r} was written by a run with a different configuration; an "
            f"exact resume needs the same values: {'; '.join(differ)}"
        )
    recorded = state.get("data")
    if isinstance(recorded, dict) and recorded.get("fingerprint") != identity["fingerprint"]:
        if recorded.get("source") == "python" and identity["source"] == "named":
            raise ValueError(
                f"resume={str(source)!r} was trained on data passed from Python "
                f"({recorded.get('name')!r}, fingerprint {str(recorded.get('fingerprint'))[:12]}); "
                f"the data set named in its configuration, {config.data!r}, is other data. "
                "Resume it from Python with train(config, data=<the same data>, resume=...)"
            )
        raise ValueError(
            f"resume={str(source)!r} was trained on other data than this run's "
            f"{identity['name']!r}: fingerprint saved {str(recorded.get('fingerprint'))[:12]}, "
            f"now {identity['fingerprint'][:12]} (the data's values, shape or normalisation "
            "changed); an exact resume needs the same data"
        )
    saved_world = int(state.get("world_size", 1))
    if saved_world != parallel.world_size:
        raise ValueError(
            f"resume={str(source)!r} was saved by a run on world_size={saved_world} "
            f"processes, but this run has world_size={parallel.world_size}; an exact "
            "resume continues every rank's own random streams, so it needs the same "
            "number of processes"
        )
    done = int(state["step"])
    segments = [list(s) for s in state.get("lr_segments", [[0, int(saved["steps"])]])]
    planned = segments[-1][1]
    if config.steps < done:
        raise ValueError(
            f"steps={config.steps} but the run in {str(source)!r} has already taken {done} "
            "steps; pass a total >= the steps taken"
        )
    if config.steps != planned:
        if config.lr_schedule == "cosine" and not config.extend:
            raise ValueError(
                f"steps={config.steps} but the run in {str(source)!r} was planned for "
                f"{planned} steps, and its cosine learning rate depends on the total: resuming "
                f"to another total would not continue that run. Resume with steps={planned}, "
                f"or pass extend=True (CLI: --extend) to have the updates after step {done} "
                f"follow the schedule of a {config.steps}-step run (recorded, so a later resume "
                "stays exact)"
            )
        # the constant schedule does not depend on the total: recorded all the same
        segments.append([done, config.steps])
    return segments


def _restore(run: _Run, state: dict[str, Any], source: Path) -> None:
    """Load the saved weights, optimizer, random streams and log window into ``run``."""
    from scoregen.checkpoint import CheckpointError

    try:
        run.denoiser.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.optimizer.load_state_dict(state["optimizer"])
        own = state["ranks"][run.parallel.rank] if run.parallel.active else state
        for name, generator in run.generators.items():
            generator.set_state(own["rng"][name])
        torch.set_rng_state(own["rng"]["torch"])
        if run.device.type == "cuda" and own["rng"].get("torch_cuda") is not None:
            torch.cuda.set_rng_state(own["rng"]["torch_cuda"], run.device)
        run.window.load(own["window"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{str(source)!r} does not fit the model its configuration builds: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    run.history = list(state["history"])
    run.step, run.wall_before = int(state["step"]), float(state["wall_time_s"])


@contextmanager
def _interrupts_between_steps(enabled: bool) -> Iterator[dict[str, bool]]:
    """While the loop runs, a first Ctrl-C (SIGINT) only raises a flag that the loop reads
    after the step in flight, so the run can save a whole step before it stops; a second one
    interrupts at once. Only in a single process's main thread."""
    flag = {"set": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main interpreter
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Everything one training run holds; the loop's named steps read and update it."""

    config: TrainConfig
    data: Any
    noise: NoiseLevels
    sigma_data: float
    denoiser: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    replica: torch.nn.Module
    generators: dict[str, torch.Generator]
    window: _Window
    parallel: _Parallel
    device: torch.device
    use_amp: bool
    data_record: dict[str, Any]
    data_identity: dict[str, Any]
    segments: list[list[int]]
    files: RunFiles
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0  # the last update done
    wall_before: float = 0.0  # seconds the run took before it was resumed
    wall: float = 0.0
    saved_step: int | None = None

    def __post_init__(self):
        self.params = [p for p in self.denoiser.parameters() if p.requires_grad]
        self.averager = _EMA(self.ema, self.denoiser)


def _optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as one fused kernel where torch has one for the device, else the foreach path
    (the same update, fewer kernels than the per-tensor loop)."""
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, foreach=True
        )


def _set_up(config, data, noise, sigma_data, parallel, device, files, identity, segments) -> _Run:
    """The model (its memory checked first), its EMA copy, the optimizer and the generators;
    torch's global generator seeded for the initial weights (the caller's state is restored
    by the surrounding fork_rng)."""
    from scoregen.data import dataset_stats

    fixed = noise.sigma if noise.is_fixed else None
    use_amp = config.amp and device.type == "cuda" and config.objective in ("dae", "n2n")
    _check_model_fits(config, data, sigma_data, fixed, device)
    _seed_torch(config.seed, device)
    denoiser = _build_denoiser(config, data, sigma_data, fixed).to(device).train()
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    optimizer = _optimizer(denoiser.parameters(), config, device)
    if parallel.rank > 0:  # same initial weights on every rank; its own dropout after
        _seed_torch(parallel.seed(config.seed, "torch"), device)
    generators = {
        "data": torch.Generator().manual_seed(parallel.seed(config.seed, "data")),
        "noise": torch.Generator(device).manual_seed(
            parallel.seed(_next_seed(config.seed), "noise")
        ),
    }
    per_example = _activation_bytes(
        config, denoiser, data, noise, sigma_data, generators, device, use_amp
    )
    _check_batch_fits(config, per_example, math.prod(data.shape), parallel, device)
    replica = denoiser  # what the steps run through; DDP averages its gradients over the ranks
    if parallel.active:
        replica = torch.nn.parallel.DistributedDataParallel(
            denoiser, device_ids=[device.index] if device.type == "cuda" else None
        )
    # what the checkpoint says of the data: its record and where it lies (the samplers' start)
    data_record = {**data.record(), "stats": dataset_stats(data, seed=config.seed)}
    return _Run(
        config=config, data=data, noise=noise, sigma_data=sigma_data, denoiser=denoiser,
        ema=ema, optimizer=optimizer, replica=replica, generators=generators,
        window=_Window(noise.bucket_edges(), device), parallel=parallel, device=device,
        use_amp=use_amp, data_record=data_record, data_identity=identity, segments=segments,
        files=files,
    )  # fmt: skip


def _next_seed(seed: int) -> int:
    """``seed + 1`` within torch's seed range (the noise stream's seed)."""
    return (seed + 1) % 2**63


def _seed_torch(seed: int, device: torch.device) -> None:
    """Seed torch's global generators (the model's initial weights, dropout)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)


def _train_step(run: _Run, step: int) -> tuple[Tensor, Tensor, float]:
    """One update: the learning rate of ``step``, the batch loss, backward, clipping, AdamW,
    the EMA; returns (loss, σ of the batch, lr)."""
    config = run.config
    lr = learning_rate(
        step,
        lr=config.lr,
        steps=schedule_total(step, run.segments),
        warmup=config.warmup,
        schedule=config.lr_schedule,
    )
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.use_amp):
        per, unweighted, sigmas = _step_loss(
            config, run.replica, run.data, run.noise, run.sigma_data, run.generators, run.device
        )
    loss = per.mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = _clip_gradients(run.params, config.grad_clip)
    run.optimizer.step()
    run.averager.update(ema_decay_at(step, config.ema_decay, config.ema_warmup))
    run.window.add(loss, unweighted, sigmas, grad_norm)
    run.step = step
    return loss, sigmas, lr


def _clip_gradients(params: list[Tensor], max_norm: float | None) -> Tensor:
    """The gradients' total 2-norm, after scaling them to at most ``max_norm`` (when set):
    ``torch.nn.utils.clip_grad_norm_``'s arithmetic in three foreach kernels."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if max_norm:
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))
    return total


def _log(run: _Run, step: int, lr: float, clock: dict[str, float]) -> dict[str, Any]:
    """One metrics line: the window's losses (by σ band), the lr, the throughput."""
    now = time.perf_counter()
    entry = {"step": step, **run.window.flush(run.parallel), "lr": lr}
    examples = (step - clock["step"]) * run.config.batch_size * run.parallel.world_size
    entry["examples_per_s"] = examples / max(now - clock["time"], 1e-9)
    entry["wall_time_s"] = run.wall_before + now - clock["start"]
    clock.update(time=now, step=step)
    if not math.isfinite(entry["loss"]):
        raise FloatingPointError(
            f"the training loss became {entry['loss']} by step {step} (lr={lr:g}, "
            f"grad_norm={entry['grad_norm']:g}); lower lr or set grad_clip"
        )
    run.history.append(entry)
    if run.parallel.rank == 0:
        run.files.append(entry)
    return entry


def _summary(run: _Run, step: int, wall: float) -> dict[str, Any]:
    last = run.history[-1] if run.history else {}
    return {
        "steps": step,
        "seed": run.config.seed,
        "objective": run.config.objective,
        "final_loss": last.get("loss"),
        "wall_time_s": wall,
        "device": str(run.device),
        "world_size": run.parallel.world_size,
        "global_batch_size": run.config.batch_size * run.parallel.world_size,
        "lr_segments": run.segments,
        "data": run.data_identity,
        "config": dataclasses.asdict(run.config),
    }


def _save(run: _Run, step: int, wall: float) -> None:
    """The resume state, the checkpoint, then the metrics (each atomic). Rank 0 writes; every
    rank calls it (it gathers their random states) and waits for the write, so none runs
    ahead of the last checkpoint."""
    from scoregen.checkpoint import resume_path, save_checkpoint, save_resume_state

    # never a checkpoint of diverged weights (a huge lr turns them inf before the loss shows)
    finite = torch.stack([torch.isfinite(p).all() for p in run.averager.averaged + run.params])
    if not bool(finite.all()):
        raise FloatingPointError(
            f"the weights became non-finite by step {step} (lr={run.optimizer.param_groups[0]['lr']:g}); "
            "lower lr or set grad_clip"
        )
    rng = {name: g.get_state() for name, g in run.generators.items()}
    rng["torch"] = torch.get_rng_state()
    rng["torch_cuda"] = torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None
    ranks = run.parallel.gather({"rng": rng, "window": run.window.state()})
    if run.parallel.rank == 0:
        state = {
            "step": step,
            "model": run.denoiser.state_dict(),
            "ema": run.ema.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            **ranks[0],
            "world_size": run.parallel.world_size,
            "history": run.history,
            "config": dataclasses.asdict(run.config),
            "sigma_data": run.sigma_data,
            "wall_time_s": wall,
            "lr_segments": run.segments,
            "data": run.data_identity,
        }
        if run.parallel.active:
            state["ranks"] = ranks
        checkpoint = run.files.checkpoint
        save_resume_state(resume_path(checkpoint), state)
        save_checkpoint(
            checkpoint,
            run.ema,
            data=run.data_record,
            sigma=run.noise.record(),
            training=_summary(run, step, wall),
        )
        run.files.saved(run.history)
    run.saved_step = step
    run.parallel.barrier()


def train(
    config: TrainConfig | None = None,
    data=None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a denoiser as an MMSE estimator (or, on toys, by score matching).

    ``config`` is a :class:`TrainConfig` (``overrides`` replace its fields). ``data`` replaces
    ``load_dataset(config.data, ...)``: a :class:`scoregen.data.Dataset`, or the examples
    themselves as a torch tensor or numpy array, points ``[N, d]`` or images ``[N, C, H, W]``
    (see :func:`scoregen.data.dataset_from_array` for the normalisation: floats as given,
    uint8 pixels mapped to [−1, 1]). ``callback(info)`` runs after every update with
    ``step``, ``loss`` (a 0-d tensor), ``lr``, ``denoiser``, ``ema`` and ``sigma``; raising
    from it stops the run (the last checkpoint stays valid). Returns a :class:`TrainResult`
    holding the EMA denoiser.

    ``config.resume`` continues a saved run exactly: the configuration, the data (by its
    fingerprint) and the number of processes must be those of the saved run, and a total
    ``steps`` other than the planned one needs ``extend=True`` under the cosine schedule.
    Output files: see the module docstring (written together at each checkpoint, a lock
    against a second run, files of another run kept until this one's first checkpoint). In
    a single process, a first Ctrl-C stops after the step in flight and saves it (when the
    run writes a checkpoint and its files are its own), then raises KeyboardInterrupt.

    Under ``torchrun`` (or an initialised ``torch.distributed``) it trains data-parallel, as
    the module docstring says; every rank calls it with the same config and returns the same
    weights. The callback's ``loss`` is then this rank's batch loss, and a callback that stops
    the run must raise on every rank. A process group this function initialised is destroyed
    before it returns.
    """
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    parallel, device = _join_process_group(config.device)
    try:
        return _train(config, data, callback, parallel, device)
    finally:
        if parallel.owns_group:
            torch.distributed.destroy_process_group()


def _train(
    config: TrainConfig,
    data,
    callback: Callable[[dict[str, Any]], None] | None,
    parallel: _Parallel,
    device: torch.device,
) -> TrainResult:
    # the run's files; a resumed run writes back where it was unless told otherwise
    state, source = _read_resume_state(config) if config.resume else (None, None)
    files = _run_files(config, state, source)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with locked(files.lock, parallel), torch.random.fork_rng(devices=cuda_devices):
        # the data, and what a resumed run must agree with
        given = data is not None
        data = _load_data(config, data, parallel)
        noise = _noise_levels(config, data)
        identity = _data_identity(config, data, given)
        if state is not None:
            segments = _check_resume(config, state, source, identity, parallel)
            sigma_data = float(state["sigma_data"])
        else:
            segments = [[0, config.steps]]
            sigma_data = config.sigma_data or estimate_sigma_data(data, seed=config.seed)
        # set-up (memory checked before the model and a step are allocated), resume
        run = _set_up(config, data, noise, sigma_data, parallel, device, files, identity,
                      segments)  # fmt: skip
        if state is not None:
            _restore(run, state, source)
        if parallel.rank == 0:
            files.start(run.history)
        _loop(run, callback)
    run.ema.eval()
    run.denoiser.eval()
    summary = {
        **_summary(run, run.step, run.wall),
        "sigma": noise.record(),
        "sigma_data": sigma_data,
    }
    return TrainResult(
        denoiser=run.ema, model=run.denoiser, history=run.history, checkpoint=files.checkpoint,
        summary=summary,
    )  # fmt: skip


def _loop(run: _Run, callback: Callable[[dict[str, Any]], None] | None) -> None:
    """The steps from the resumed one to ``config.steps``: update, log, checkpoint,
    callback; a final checkpoint. Ctrl-C stops after the step in flight (saved when the
    files are this run's); any failure leaves the files as the last checkpoint wrote them."""
    from tqdm.auto import tqdm

    config, files, start = run.config, run.files, run.step
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    bar = tqdm(total=config.steps, initial=start, desc="train", leave=False,
               disable=not show or run.parallel.rank != 0)  # fmt: skip
    clock = {"start": time.perf_counter(), "time": time.perf_counter(), "step": start}
    try:
        with _interrupts_between_steps(enabled=not run.parallel.active) as stop:
            for step in range(start + 1, config.steps + 1):
                loss, sigmas, lr = _train_step(run, step)
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    bar.set_postfix(loss=f"{_log(run, step, lr, clock)['loss']:.4g}")
                due = config.checkpoint_every and step % config.checkpoint_every == 0
                if files.checkpoint is not None and due and step != config.steps:
                    _save(run, step, _wall(run, clock))
                if callback is not None:
                    callback({"step": step, "loss": loss.detach(), "lr": lr, "sigma": sigmas,
                              "denoiser": run.denoiser, "ema": run.ema})  # fmt: skip
                if stop["set"]:  # a whole step is done: keep it, if the files are this run's
                    keep = files.checkpoint is not None and files.owned
                    if keep and run.saved_step != step:
                        _save(run, step, _wall(run, clock))
                    raise TrainingInterrupted(step, files.checkpoint if keep else None)
        run.wall = _wall(run, clock)
        if files.checkpoint is not None and run.step > start:
            _save(run, run.step, run.wall)
    except BaseException:
        if run.parallel.rank == 0:
            files.abandon()
        raise
    finally:
        bar.close()


def _run_files(config: TrainConfig, state, source: Path | None) -> RunFiles:
    """Where the run writes: ``config``'s paths, or back into the resumed checkpoint."""
    checkpoint, metrics = run_paths(config)
    if state is not None and checkpoint is None:
        checkpoint = source.with_name(source.name.removesuffix(".resume.pt") + ".safetensors")
    in_place = (
        state is not None
        and checkpoint is not None
        and _same_file(checkpoint.with_name(checkpoint.stem + ".resume.pt"), source)
    )
    return RunFiles(checkpoint, metrics, in_place=in_place)


def _wall(run: _Run, clock: dict[str, float]) -> float:
    return run.wall_before + time.perf_counter() - clock["start"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
