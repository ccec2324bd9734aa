"""The training loop: a denoiser fitted by MSE is an MMSE estimator; EMA, AMP, metrics, resume.

One step, for the default objective::

    x ~ data,  σ ~ noise levels,  z ~ N(0, I)
    loss = mean_b λ(σ_b) ‖D(x_b + σ_b z_b, σ_b) − x_b‖² / d        (scoregen.losses.dae_loss)
    θ ← AdamW(θ, ∇loss) with warmup + cosine learning rate and gradient clipping
    θ_ema ← β_t θ_ema + (1 − β_t) θ                                   (the weights sampling uses)

Every random draw comes from one of three generators seeded from ``config.seed`` (data,
noise, and torch's global one for dropout inside the model), all saved in the resume file:
a run stopped and resumed gives, on CPU, exactly the weights of the uninterrupted run.

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
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scoregen._util import append_dims, resolve_device
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
    "TrainConfig",
    "TrainResult",
    "ema_decay_at",
    "ema_update",
    "estimate_sigma_data",
    "learning_rate",
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


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """EMA decay after update ``step`` (1-based): ``min(β, (1 + t)/(10 + t))`` with warmup,
    so the average of a short run is not dominated by the random initial weights."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``θ_ema ← β θ_ema + (1 − β) θ`` for every parameter; buffers are copied."""
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current, 1.0 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)


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


# ---------------------------------------------------------------------- one step
def _step_loss(
    config: TrainConfig,
    denoiser,
    data,
    noise: NoiseLevels,
    sigma_data: float,
    generators: dict[str, torch.Generator],
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch's per-example losses: (weighted [B], unweighted [B], σ [B])."""
    n = config.batch_size
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
    """Loss sums per σ bucket between two log lines (device tensors: no sync per step)."""

    def __init__(self, edges: Tensor, device: torch.device):
        self.edges = edges
        self.inner = edges[1:-1].to(device=device, dtype=torch.float32)
        n_buckets = len(edges) - 1
        self.sums = torch.zeros(n_buckets, dtype=torch.float64, device=device)
        self.counts = torch.zeros(n_buckets, dtype=torch.float64, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, weighted: Tensor, unweighted: Tensor, sigma: Tensor, grad_norm: Tensor):
        bucket = torch.bucketize(sigma.detach().float(), self.inner)
        self.sums.index_add_(0, bucket, unweighted.double())
        self.counts.index_add_(0, bucket, torch.ones_like(unweighted, dtype=torch.float64))
        self.loss += weighted.detach().double().mean()
        self.grad_norm += grad_norm.detach().double()
        self.steps += 1

    def state(self) -> dict[str, Any]:
        return {
            "sums": self.sums.cpu(),
            "counts": self.counts.cpu(),
            "loss": self.loss.cpu(),
            "grad_norm": self.grad_norm.cpu(),
            "steps": self.steps,
        }

    def load(self, state: dict[str, Any]) -> None:
        for name in ("sums", "counts", "loss", "grad_norm"):
            getattr(self, name).copy_(state[name])
        self.steps = int(state["steps"])

    def flush(self, parallel: _Parallel) -> dict[str, Any]:
        """The window's means over all ranks, then reset."""
        if parallel.active:  # one collective per log line: sums, counts, loss, grad norm
            packed = parallel.sum_(
                torch.cat([self.sums, self.counts, self.loss[None], self.grad_norm[None]])
            )
            n = len(self.sums)
            self.sums.copy_(packed[:n])
            self.counts.copy_(packed[n : 2 * n])
            self.loss.copy_(packed[2 * n] / parallel.world_size)
            self.grad_norm.copy_(packed[2 * n + 1] / parallel.world_size)
        sums, counts = self.sums.tolist(), self.counts.tolist()
        edges = self.edges.tolist()
        by_sigma = {
            f"{edges[i]:.3g}-{edges[i + 1]:.3g}": (sums[i] / counts[i] if counts[i] else None)
            for i in range(len(sums))
        }
        out = {
            "loss": self.loss.item() / max(self.steps, 1),
            "grad_norm": self.grad_norm.item() / max(self.steps, 1),
            "loss_by_sigma": by_sigma,
        }
        for t in (self.sums, self.counts, self.loss, self.grad_norm):
            t.zero_()
        self.steps = 0
        return out


# ---------------------------------------------------------------------- the loop
def _build_denoiser(config: TrainConfig, data, sigma_data: float, fixed_sigma: float | None):
    from scoregen.models import MODELS, Denoiser, build_net

    if config.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {config.model!r}")
    net_config = dict(config.model_config)
    fields = {f.name for f in dataclasses.fields(MODELS[config.model][0])}
    if "shape" in fields:
        given = net_config.setdefault("shape", tuple(data.shape))
        if tuple(given) != tuple(data.shape):
            raise ValueError(
                f"model_config['shape'] = {tuple(given)} but the data {data.name!r} has "
                f"examples of shape {tuple(data.shape)}"
            )
    net = build_net(config.model, **net_config)
    options = {} if config.precond is None else {"precond": config.precond}
    return Denoiser(net, sigma_data=sigma_data, fixed_sigma=fixed_sigma, **options)


def _paths(config: TrainConfig) -> tuple[Path | None, Path | None]:
    out = Path(config.out_dir) if config.out_dir else None
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    if checkpoint is None and out is not None:
        checkpoint = out / "checkpoint.safetensors"
    metrics = Path(config.metrics_file) if config.metrics_file else None
    if metrics is None and out is not None:
        metrics = out / "metrics.jsonl"
    return checkpoint, metrics


def _check_resume_config(config: TrainConfig, saved: dict[str, Any], path: Path) -> None:
    current = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    saved = json.loads(json.dumps(saved, default=str))
    differ = [
        f"{name}: saved {saved.get(name)!r}, now {current.get(name)!r}"
        for name in _RESUME_FIELDS
        if saved.get(name) != current.get(name)
    ]
    if differ:
        raise ValueError(
            f"resume={str(path)!r} was written by a run with a different configuration; an "
            f"exact resume needs the same values: {'; '.join(differ)}"
        )


def train(
    config: TrainConfig | None = None,
    data=None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a denoiser as an MMSE estimator (or, on toys, by score matching).

    ``config`` is a :class:`TrainConfig` (``overrides`` replace its fields); ``data`` a
    :class:`scoregen.data.Dataset` to use instead of ``load_dataset(config.data, ...)``.
    ``callback(info)`` runs after every update with ``step``, ``loss`` (a 0-d tensor),
    ``lr``, ``denoiser``, ``ema`` and ``sigma``; raising from it stops the run (the last
    checkpoint stays valid). Returns a :class:`TrainResult` holding the EMA denoiser.

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
    from tqdm.auto import tqdm

    from scoregen.checkpoint import (
        load_resume_state,
        resume_path,
        save_checkpoint,
        save_resume_state,
    )
    from scoregen.data import dataset_stats, load_dataset

    if data is None:
        # rank 0 loads first, so a data set it downloads is fetched once, then the others
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
    sigma = config.sigma
    if real_pairs:
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
    noise = config.noise_levels(sigma)
    if config.objective == "esm" and math.prod(data.shape) > ESM_MAX_DIM:
        raise ValueError(
            f"objective='esm' computes the exact Jacobian trace (one backward pass per "
            f"dimension), allowed up to d={ESM_MAX_DIM}; the data has d={math.prod(data.shape)}. "
            "Use 'ssm' or 'dae'"
        )
    state = None
    if config.resume:
        source = Path(config.resume)
        source = source if source.suffix == ".pt" else resume_path(source)
        state = load_resume_state(source)
        _check_resume_config(config, state["config"], source)
        saved_world = int(state.get("world_size", 1))
        if saved_world != parallel.world_size:
            raise ValueError(
                f"resume={str(source)!r} was saved by a run on world_size={saved_world} "
                f"processes, but this run has world_size={parallel.world_size}; an exact "
                "resume continues every rank's own random streams, so it needs the same "
                "number of processes"
            )
    if state is not None:
        sigma_data = float(state["sigma_data"])
    else:
        sigma_data = config.sigma_data or estimate_sigma_data(data, seed=config.seed)
    # what the checkpoint says of the data: its record and where it lies (the samplers' start)
    data_record = {**data.record(), "stats": dataset_stats(data, seed=config.seed)}
    checkpoint_path, metrics_path = _paths(config)
    if state is not None and checkpoint_path is None:  # continue writing where it was
        checkpoint_path = source.with_name(source.name.removesuffix(".resume.pt") + ".safetensors")
    use_amp = config.amp and device.type == "cuda" and config.objective in ("dae", "n2n")

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        # The model's initial weights and any dropout come from torch's global generator,
        # seeded here and restored afterwards: the caller's random state is left alone.
        def seed_torch(seed: int) -> None:
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                torch.cuda.default_generators[cuda_devices[0]].manual_seed(seed)

        seed_torch(config.seed)
        denoiser = _build_denoiser(
            config, data, sigma_data, noise.sigma if noise.is_fixed else None
        )
        denoiser = denoiser.to(device).train()
        ema = copy.deepcopy(denoiser).requires_grad_(False)
        optimizer = torch.optim.AdamW(
            denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        if parallel.rank > 0:  # same initial weights on every rank; its own dropout after
            seed_torch(parallel.seed(config.seed, "torch"))
        generators = {
            "data": torch.Generator().manual_seed(parallel.seed(config.seed, "data")),
            "noise": torch.Generator(device).manual_seed(parallel.seed(config.seed + 1, "noise")),
        }
        window = _Window(noise.bucket_edges(), device)
        history: list[dict[str, Any]] = []
        start, wall_before = 0, 0.0

        if state is not None:
            denoiser.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            own = state["ranks"][parallel.rank] if parallel.active else state
            for name, generator in generators.items():
                generator.set_state(own["rng"][name])
            torch.set_rng_state(own["rng"]["torch"])
            if device.type == "cuda" and own["rng"].get("torch_cuda") is not None:
                torch.cuda.set_rng_state(own["rng"]["torch_cuda"], device)
            window.load(own["window"])
            history = list(state["history"])
            start, wall_before = int(state["step"]), float(state["wall_time_s"])
            if metrics_path is not None and parallel.rank == 0:  # drop lines after the step
                _rewrite_jsonl(metrics_path, history)
        elif metrics_path is not None and parallel.rank == 0:
            _rewrite_jsonl(metrics_path, [])
        # what the steps run through; DDP averages its gradients over the ranks
        replica = denoiser
        if parallel.active:
            replica = torch.nn.parallel.DistributedDataParallel(
                denoiser, device_ids=[device.index] if device.type == "cuda" else None
            )

        def training_summary(step: int, wall: float) -> dict[str, Any]:
            last = history[-1] if history else {}
            return {
                "steps": step,
                "seed": config.seed,
                "objective": config.objective,
                "final_loss": last.get("loss"),
                "wall_time_s": wall,
                "device": str(device),
                "world_size": parallel.world_size,
                "global_batch_size": config.batch_size * parallel.world_size,
                "config": dataclasses.asdict(config),
            }

        def save(step: int, wall: float) -> None:
            """Rank 0 writes; every rank calls it (it gathers their random states) and waits
            for the write, so none runs ahead of the last checkpoint."""
            rng = {name: g.get_state() for name, g in generators.items()}
            rng["torch"] = torch.get_rng_state()
            rng["torch_cuda"] = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            ranks = parallel.gather({"rng": rng, "window": window.state()})
            if parallel.rank == 0:
                resume_state = {
                    "step": step,
                    "model": denoiser.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    **ranks[0],
                    "world_size": parallel.world_size,
                    "history": history,
                    "config": dataclasses.asdict(config),
                    "sigma_data": sigma_data,
                    "wall_time_s": wall,
                }
                if parallel.active:
                    resume_state["ranks"] = ranks
                save_resume_state(resume_path(checkpoint_path), resume_state)
                save_checkpoint(
                    checkpoint_path,
                    ema,
                    data=data_record,
                    sigma=noise.record(),
                    training=training_summary(step, wall),
                )
            parallel.barrier()

        params = [p for p in denoiser.parameters() if p.requires_grad]
        max_norm = config.grad_clip if config.grad_clip else math.inf
        t_start = time.perf_counter()
        t_log, examples_since_log = t_start, 0
        bar = tqdm(
            total=config.steps,
            initial=start,
            disable=not config.progress or parallel.rank != 0,
            desc="train",
            leave=False,
        )
        step = start
        try:
            for step in range(start + 1, config.steps + 1):
                lr = learning_rate(
                    step,
                    lr=config.lr,
                    steps=config.steps,
                    warmup=config.warmup,
                    schedule=config.lr_schedule,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    per, unweighted, sigmas = _step_loss(
                        config, replica, data, noise, sigma_data, generators, device
                    )
                loss = per.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                optimizer.step()
                ema_update(ema, denoiser, ema_decay_at(step, config.ema_decay, config.ema_warmup))
                window.add(per, unweighted, sigmas, grad_norm)
                examples_since_log += config.batch_size * parallel.world_size
                bar.update(1)

                if step % config.log_every == 0 or step == config.steps:
                    now = time.perf_counter()
                    entry = {"step": step, **window.flush(parallel), "lr": lr}
                    entry["examples_per_s"] = examples_since_log / max(now - t_log, 1e-9)
                    entry["wall_time_s"] = wall_before + now - t_start
                    t_log, examples_since_log = now, 0
                    if not math.isfinite(entry["loss"]):
                        raise FloatingPointError(
                            f"the training loss became {entry['loss']} by step {step} "
                            f"(lr={lr:g}, grad_norm={entry['grad_norm']:g}); lower lr or "
                            "set grad_clip"
                        )
                    history.append(entry)
                    if metrics_path is not None and parallel.rank == 0:
                        with open(metrics_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(entry) + "\n")
                    bar.set_postfix(loss=f"{entry['loss']:.4g}")
                if (
                    checkpoint_path is not None
                    and config.checkpoint_every
                    and step % config.checkpoint_every == 0
                    and step != config.steps
                ):
                    save(step, wall_before + time.perf_counter() - t_start)
                if callback is not None:
                    callback(
                        {
                            "step": step,
                            "loss": loss.detach(),
                            "lr": lr,
                            "sigma": sigmas,
                            "denoiser": denoiser,
                            "ema": ema,
                        }
                    )
        finally:
            bar.close()
        wall = wall_before + time.perf_counter() - t_start
        if checkpoint_path is not None and step > start:
            save(step, wall)

    ema.eval()
    denoiser.eval()
    summary = training_summary(step, wall)
    summary["sigma"] = noise.record()
    summary["sigma_data"] = sigma_data
    return TrainResult(
        denoiser=ema, model=denoiser, history=history, checkpoint=checkpoint_path, summary=summary
    )


def _rewrite_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from scoregen._io import atomic_write

    atomic_write(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows), mode="w")
