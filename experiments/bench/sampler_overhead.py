"""Overhead of ``scoregen.langevin`` over a bare hand-written ULA loop on the same score.

Contenders, run interleaved in one process on the same score (a small σ-conditioned MLP
denoiser through Tweedie's formula) and the same starting batch:

* floor: the score evaluations alone (``n_steps`` calls, no update, no noise);
* bare loop: ``x = x + ε s(x, σ) + sqrt(2ε) z`` written out by hand;
* ``langevin(progress=False)`` and ``langevin()`` (auto progress, the default), which add
  the argument checks, the callback hook and the divergence guard.

Each contender runs ``--repeats`` short trials of ``--steps`` steps, the contenders taking
turns in a fresh random order every round, so a burst of load from other processes hits all
of them alike. The table shows the best trial (the least disturbed estimate of the cost) and
the median. The goal is ``langevin / bare <= 1.1``.

    python -m experiments.bench.sampler_overhead            # 10k particles, 20 x 50 steps
    python -m experiments.bench.sampler_overhead --quick    # a few seconds
    python -m experiments.bench.sampler_overhead --device cuda
    python -m experiments.bench.sampler_overhead --score linear  # bookkeeping cost exposed

``--score linear`` swaps the MLP for ``s(x) = −x``, so that the per-step cost of the
sampler's own bookkeeping (a few small kernels and Python calls) is not hidden by the network.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import torch

from experiments.bench._timing import interleaved, timed
from scoregen import langevin, tweedie_score
from scoregen.models import Denoiser
from scoregen.models.mlp import MLP, MLPConfig

SIGMA = 0.5
STEP_SIZE = 1e-3


def linear_score(x, sigma):
    """Score of N(0, I): almost free, so the sampler's own per-step cost shows."""
    return -x


def build_score(
    device: torch.device, kind: str = "mlp", hidden: int = 128, depth: int = 3, seed: int = 0
):
    """The benchmark's score: Tweedie on an EDM-preconditioned MLP denoiser for 2-D points
    (``kind="mlp"``), or the trivial ``s(x) = −x`` (``kind="linear"``)."""
    if kind == "linear":
        return linear_score
    if kind != "mlp":
        raise ValueError(f"kind must be 'mlp' or 'linear', got {kind!r}")
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
    def sample(score, x, n_steps: int, generator) -> torch.Tensor:
        return langevin(
            score,
            x,
            sigma=SIGMA,
            step_size=STEP_SIZE,
            n_steps=n_steps,
            generator=generator,
            progress=progress,
        )

    return sample


def _time(fn: Callable, score, x, n_steps: int, seed: int) -> tuple[float, torch.Tensor]:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return timed(lambda: fn(score, x, n_steps, generator), x.device)


def run(
    n_particles: int = 10_000,
    n_steps: int = 50,
    repeats: int = 20,
    device: str = "cpu",
    seed: int = 0,
    score_kind: str = "mlp",
) -> dict[str, list[float]]:
    """Time every contender ``repeats`` times (interleaved, shuffled); return all the times."""
    device = torch.device(device)
    score = build_score(device, score_kind)
    x0 = torch.randn(n_particles, 2, generator=torch.Generator().manual_seed(1)).to(device)
    contenders = {
        "floor (score only)": score_floor,
        "bare loop": bare_loop,
        "langevin(progress=False)": ours(False),
        "langevin() (auto progress)": ours(None),
    }
    _time(bare_loop, score, x0, min(n_steps, 5), 0)  # warm-up (allocator, threads, kernels)
    times, outputs = interleaved(
        contenders,
        lambda name: _time(contenders[name], score, x0, n_steps, seed=123),
        repeats,
        seed,
    )
    # Same generator seed, same update: the chains must agree up to float rounding.
    diff = (outputs["langevin(progress=False)"] - outputs["bare loop"]).abs().max().item()
    times["max |langevin - bare|"] = [diff]
    return times


def report(
    times: dict[str, list[float]], n_particles: int, n_steps: int, device: str, score: str = "mlp"
) -> str:
    """The table: best and median time per step of each contender, and their ratios."""
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    name = device
    if torch.device(device).type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    repeats = len(times["bare loop"])
    lines = [
        f"ULA overhead, {score} score: {n_particles} particles x 2-D, {repeats} trials of {n_steps} steps, "
        f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"{'contender':<28} {'best ms/step':>12} {'/ bare':>7} {'/ floor':>8} "
        f"{'median ms/step':>15} {'/ bare':>7}",
    ]
    for key in times:
        if key.startswith("max"):
            continue
        lines.append(
            f"{key:<28} {1e3 * best[key] / n_steps:>12.3f} {best[key] / best['bare loop']:>7.3f} "
            f"{best[key] / best['floor (score only)']:>8.3f} {1e3 * median[key] / n_steps:>15.3f} "
            f"{median[key] / median['bare loop']:>7.3f}"
        )
    lines.append(
        f"max |langevin - bare| after a trial (same seed): {best['max |langevin - bare|']:.3g}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=50, help="steps per trial")
    parser.add_argument("--repeats", type=int, default=20, help="trials per contender")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--score", choices=["mlp", "linear"], default="mlp")
    parser.add_argument("--quick", action="store_true", help="1,000 particles, 3 x 20 steps")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.particles, args.steps, args.repeats = 1_000, 20, 3
    times = run(args.particles, args.steps, args.repeats, args.device, score_kind=args.score)
    print(report(times, args.particles, args.steps, args.device, args.score))


if __name__ == "__main__":
    main()
