"""Overhead of ``scoregen.langevin`` over a bare hand-written ULA loop on the same score.

Contenders, run interleaved in one process on the same score (a small σ-conditioned MLP
denoiser through Tweedie's formula) and the same starting batch:

* floor: the score evaluations alone (``n_steps`` calls, no update, no noise);
* bare loop: ``x = x + ε s(x, σ) + sqrt(2ε) z`` written out by hand;
* ``langevin(progress=False)`` and ``langevin()`` (auto progress, the default), which add
  the argument checks, the callback hook and the divergence guard.

The reported time of each is the minimum over ``--repeats`` runs (the machine is shared, so
the minimum is the least noisy estimate of the cost). The goal is ``langevin / bare <= 1.1``.

    python -m experiments.bench.sampler_overhead            # 10k particles, 200 steps
    python -m experiments.bench.sampler_overhead --quick    # a few seconds
    python -m experiments.bench.sampler_overhead --device cuda
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from scoregen import langevin, tweedie_score
from scoregen.models import Denoiser
from scoregen.models.mlp import MLP, MLPConfig

SIGMA = 0.5
STEP_SIZE = 1e-3


def build_score(device: torch.device, hidden: int = 128, depth: int = 3, seed: int = 0):
    """The benchmark's score: Tweedie on an EDM-preconditioned MLP denoiser for 2-D points."""
    torch.manual_seed(seed)
    net = MLP(MLPConfig(shape=(2,), hidden=[hidden] * depth, embed_dim=32))
    denoiser = Denoiser(net).to(device).eval()
    return tweedie_score(denoiser)


@torch.no_grad()
def score_floor(score, x, n_steps: int, generator) -> torch.Tensor:
    for _ in range(n_steps):
        out = score(x, SIGMA)
    return out


@torch.no_grad()
def bare_loop(score, x, n_steps: int, generator) -> torch.Tensor:
    noise_scale = math.sqrt(2.0 * STEP_SIZE)
    for _ in range(n_steps):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + STEP_SIZE * score(x, SIGMA) + noise_scale * noise
    return x


def ours(progress):
    def run(score, x, n_steps: int, generator) -> torch.Tensor:
        return langevin(
            score,
            x,
            sigma=SIGMA,
            step_size=STEP_SIZE,
            n_steps=n_steps,
            generator=generator,
            progress=progress,
        )

    return run


def _time(fn: Callable, score, x, n_steps: int, seed: int) -> tuple[float, torch.Tensor]:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    out = fn(score, x, n_steps, generator)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start, out


def run(
    n_particles: int = 10_000,
    n_steps: int = 200,
    repeats: int = 5,
    device: str = "cpu",
) -> dict[str, float]:
    """Time every contender ``repeats`` times (interleaved); return the best time of each."""
    device = torch.device(device)
    score = build_score(device)
    x0 = torch.randn(n_particles, 2, generator=torch.Generator().manual_seed(1)).to(device)
    contenders = {
        "floor (score only)": score_floor,
        "bare loop": bare_loop,
        "langevin(progress=False)": ours(False),
        "langevin() (auto progress)": ours(None),
    }
    _time(bare_loop, score, x0, min(n_steps, 5), 0)  # warm-up (allocator, threads, kernels)
    best = {name: math.inf for name in contenders}
    outputs = {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seconds, outputs[name] = _time(fn, score, x0, n_steps, seed=123)
            best[name] = min(best[name], seconds)
    # Same generator seed, same update: the chains must agree up to float rounding.
    diff = (outputs["langevin(progress=False)"] - outputs["bare loop"]).abs().max().item()
    best["max |langevin - bare|"] = diff
    return best


def report(best: dict[str, float], n_particles: int, n_steps: int, device: str) -> str:
    floor, bare = best["floor (score only)"], best["bare loop"]
    name = device
    if torch.device(device).type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    lines = [
        f"ULA overhead: {n_particles} particles x 2-D, {n_steps} steps, device {name}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"{'contender':<28} {'best s':>9} {'ms/step':>9} {'/ bare':>8} {'/ floor':>8}",
    ]
    for key, seconds in best.items():
        if key.startswith("max"):
            continue
        lines.append(
            f"{key:<28} {seconds:>9.4f} {1e3 * seconds / n_steps:>9.3f} "
            f"{seconds / bare:>8.3f} {seconds / floor:>8.3f}"
        )
    lines.append(
        f"max |langevin - bare| after the run (same seed): {best['max |langevin - bare|']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="1,000 particles, 20 steps, 2 repeats")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.particles, args.steps, args.repeats = 1_000, 20, 2
    best = run(args.particles, args.steps, args.repeats, args.device)
    print(report(best, args.particles, args.steps, args.device))


if __name__ == "__main__":
    main()
