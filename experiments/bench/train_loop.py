"""Overhead of ``scoregen.train`` over a bare hand-written training loop, same model and data.

Contenders, run interleaved in one process, each for ``steps`` updates of the same model
(same initial weights), data, σ law, loss, learning-rate schedule and batch size:

* bare loop: the textbook PyTorch loop doing the same math as one ``train()`` step —
  draw a batch and σ, ``dae_loss``, ``zero_grad``, ``backward``, ``clip_grad_norm_``,
  ``torch.optim.AdamW`` with its default settings, and an EMA updated tensor by tensor;
* bare loop, no clip/EMA: the same without gradient clipping and EMA (what the two cost);
* ``train()``: :func:`scoregen.train` with ``progress=False`` (its σ-band loss window, its
  learning-rate schedule, fused AdamW, foreach clipping and EMA, the callback hook).

Times are per update, from the end of the first update to the end of the last (the set-up
of ``train()`` — data fingerprint and statistics, the memory probe, building the model — is
printed apart). Two workloads: the toy MLP on ``ncsn2d`` points and the digits U-Net
(channels (16, 32)) on 8×8 digits. The goal is ``train() / bare loop <= 1``. The final
weights of ``train()`` and of the bare loop are compared as a check that they do the same
updates (float rounding only: fused and per-tensor AdamW order their operations
differently).

    python -m experiments.bench.train_loop            # 5 trials of 60 steps per workload
    python -m experiments.bench.train_loop --quick    # a few seconds
    python -m experiments.bench.train_loop --device cuda

``section(quick=False, device="cpu")`` returns the printed table; ``cpu_section(args)`` is the
same as a section of experiments/bench/cpu.py (parsed options in, lines out).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from experiments.bench._timing import interleaved, timed
from scoregen import TrainConfig, train
from scoregen.data import load_dataset
from scoregen.losses import dae_loss
from scoregen.train import (
    _build_denoiser,
    ema_decay_at,
    estimate_sigma_data,
    learning_rate,
)

WORKLOADS = {
    "mlp on ncsn2d": dict(model="mlp", data="ncsn2d", model_config={}, batch_size=256),
    "unet on digits": dict(
        model="unet",
        data="digits",
        model_config={"channels": [16, 32]},
        batch_size=64,
        sigma_min=0.02,
        sigma_max=5.0,
    ),
}


@dataclass
class Workload:
    """One benchmark case: its configuration, its data and σ_data, built once."""

    name: str
    config: TrainConfig
    data: object
    sigma_data: float


def build_workload(name: str, steps: int, device: str) -> Workload:
    options = WORKLOADS[name]
    config = TrainConfig(
        **options, steps=steps, device=device, progress=False, log_every=max(steps // 4, 1),
        warmup=max(steps // 10, 1),
    )  # fmt: skip
    data = load_dataset(config.data)
    return Workload(name, config, data, estimate_sigma_data(data, seed=config.seed))


def bare_loop(work: Workload, clip_and_ema: bool = True) -> Callable[[], tuple[float, dict]]:
    """The plain loop, seeded as ``train()`` seeds its run (same weights, batches and σ)."""
    config, data, device = work.config, work.data, torch.device(work.config.device)

    def run() -> tuple[float, dict]:
        noise = config.noise_levels()
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            denoiser = _build_denoiser(config, data, work.sigma_data, None).to(device).train()
            ema = [p.detach().clone() for p in denoiser.parameters()]
            params = list(denoiser.parameters())
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            data_gen = torch.Generator().manual_seed(config.seed)
            noise_gen = torch.Generator(device).manual_seed(config.seed + 1)
            start = None
            for step in range(1, config.steps + 1):
                lr = learning_rate(step, lr=config.lr, steps=config.steps,
                                   warmup=config.warmup, schedule=config.lr_schedule)  # fmt: skip
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = data.sample(config.batch_size, data_gen).to(device)
                sigma = noise.sample(config.batch_size, noise_gen, device=device)
                loss = dae_loss(
                    denoiser, x, sigma, generator=noise_gen, weighting=config.weighting,
                    sigma_data=work.sigma_data,
                ).mean()  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_and_ema:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                if clip_and_ema:
                    decay = ema_decay_at(step, config.ema_decay, config.ema_warmup)
                    with torch.no_grad():
                        for averaged, current in zip(ema, params):
                            averaged.lerp_(current, 1.0 - decay)
                if step == 1:
                    _sync(device)
                    start = time.perf_counter()
            _sync(device)
            seconds = time.perf_counter() - start
        return seconds, {"model": [p.detach().cpu() for p in params], "ema": ema}

    return run


def with_train(work: Workload) -> Callable[[], tuple[float, dict]]:
    """``train()`` on the same workload, timed from its first update to its last."""
    device = torch.device(work.config.device)

    def run() -> tuple[float, dict]:
        stamps = {}

        def callback(info):
            if info["step"] == 1:
                _sync(device)
                stamps["first"] = time.perf_counter()

        begin = time.perf_counter()
        result = train(work.config, data=work.data, callback=callback)
        _sync(device)
        seconds = time.perf_counter() - stamps["first"]
        stamps["setup"] = stamps["first"] - begin
        model = [p.detach().cpu() for p in result.model.parameters()]
        ema = [p.detach().cpu() for p in result.denoiser.parameters()]
        return seconds, {"model": model, "ema": ema, "setup": stamps["setup"]}

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    steps: int = 60, repeats: int = 5, device: str = "cpu", seed: int = 0, workloads=None
) -> dict[str, dict]:
    """Time every contender on every workload ``repeats`` times (interleaved, shuffled).

    Returns, per workload, every contender's seconds for its last ``steps − 1`` updates
    (``times``) and for the whole call (``totals``, set-up included), and the largest weight
    difference between ``train()`` and the bare loop (model and EMA) after the last trial."""
    results = {}
    dev = torch.device(device)
    for name in workloads or WORKLOADS:
        work = build_workload(name, steps, device)
        contenders = {
            "bare loop": bare_loop(work),
            "bare loop, no clip/EMA": bare_loop(work, clip_and_ema=False),
            "train()": with_train(work),
        }
        per_update = {key: [] for key in contenders}

        def trial(key: str, table=contenders, per_update=per_update) -> tuple[float, dict]:
            total, (updates, out) = timed(table[key], dev)
            per_update[key].append(updates)
            return total, out

        trial("bare loop")  # warm-up: allocator, threads, kernels
        per_update["bare loop"].clear()
        totals, outputs = interleaved(contenders, trial, repeats, seed)
        ours, bare = outputs["train()"], outputs["bare loop"]
        results[name] = {
            "times": per_update,
            "totals": totals,
            "setup_s": ours["setup"],
            "max |Δ weights|": _max_difference(ours["model"], bare["model"]),
            "max |Δ EMA|": _max_difference(ours["ema"], bare["ema"]),
            "steps": steps,
        }
    return results


def _max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x.cpu() - y.cpu()).abs().max().item() for x, y in zip(a, b))


def report(results: dict[str, dict], device: str = "cpu") -> str:
    """The table: best and median ms per update of each contender, and the ratios."""
    where = device
    if torch.device(device).type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    lines = [
        f"train() vs a bare loop, device {where}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    ]
    for name, entry in results.items():
        updates = entry["steps"] - 1
        times = entry["times"]
        best = {k: min(v) for k, v in times.items()}
        median = {k: statistics.median(v) for k, v in times.items()}
        lines.append(
            f"{name}: {len(times['bare loop'])} trials of {entry['steps']} steps "
            f"(timed: the last {updates})"
        )
        lines.append(
            f"  {'contender':<24} {'best ms/step':>12} {'/ bare':>7} {'median ms/step':>15} "
            f"{'/ bare':>7}"
        )
        for key in times:
            lines.append(
                f"  {key:<24} {1e3 * best[key] / updates:>12.3f} "
                f"{best[key] / best['bare loop']:>7.3f} {1e3 * median[key] / updates:>15.3f} "
                f"{median[key] / median['bare loop']:>7.3f}"
            )
        total = {k: min(v) for k, v in entry["totals"].items()}
        lines.append(
            f"  whole call, best: bare loop {total['bare loop']:.3f} s, train() "
            f"{total['train()']:.3f} s (set-up {1e3 * entry['setup_s']:.0f} ms)"
        )
        lines.append(
            f"  max |train() − bare| after "
            f"{entry['steps']} steps: weights {entry['max |Δ weights|']:.2g}, EMA "
            f"{entry['max |Δ EMA|']:.2g}"
        )
    return "\n".join(lines)


def section(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> str:
    """The benchmark as one section of a larger report: 2 trials of 20 steps with ``quick``,
    else 5 (or ``repeats``) of 60."""
    steps = 20 if quick else 60
    repeats = repeats or (2 if quick else 5)
    return report(run(steps=steps, repeats=repeats, device=device), device)


def cpu_section(args) -> list[str]:
    """experiments/bench/cpu.py's form of a section (parsed options in, lines out):
    ``SECTIONS["train_loop"] = train_loop.cpu_section``."""
    quick = getattr(args, "quick", False)
    text = section(quick, getattr(args, "device", "cpu"), getattr(args, "repeats", None))
    return text.splitlines()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--steps", type=int, default=60, help="steps per trial")
    parser.add_argument("--repeats", type=int, default=5, help="trials per contender")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="2 trials of 20 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.repeats = 20, 2
    if not math.isfinite(args.steps) or args.steps < 2:
        parser.error("--steps must be >= 2")
    print(report(run(args.steps, args.repeats, args.device), args.device))


if __name__ == "__main__":
    main()
