"""Posterior sampling with ``scoregen.langevin`` against deepinv's ``ULA`` on the same problem.

One image inverse problem (inpainting with noise, ``y = M x + σ_n n`` on a batch of 1×32×32
images), one denoiser (a small DnCNN behind scoregen's EDM wrapper), one step size, one
denoiser σ, one starting point. Contenders, run interleaved in one process:

* ``deepinv ULA``: ``deepinv.sampling.ULA(ScorePrior(D), L2(σ_n), ...).sample(y, physics)``,
  no burn-in, thinning 1, no clipping, Welford mean and variance of every state;
* ``scoregen + Welford``: ``langevin(posterior_score(tweedie_score(D), y, physics), ...)``
  with a callback that keeps the same running mean and variance;
* ``scoregen (final state)``: the same chain without statistics (what a sampler returns);
* ``bare loop``: the update written out by hand, the floor for any library;
* ``floor (denoiser only)``: the ``n_steps`` denoiser evaluations alone.

Both libraries compute ``x + ε (Aᵀ(y − Ax)/σ_n² + (D(x, σ) − x)/σ²) + sqrt(2ε) z`` per step,
so the table measures their overheads. On the CPU both take their noise from a generator
seeded alike, so their running posterior means must agree to float rounding: the last line.

    python -m experiments.bench.deepinv_ula              # 16 images, 10 trials of 50 steps
    python -m experiments.bench.deepinv_ula --quick      # a few seconds
    python -m experiments.bench.deepinv_ula --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from experiments.bench._timing import interleaved, timed
from scoregen import langevin, posterior_score, tweedie_score
from scoregen.models import Denoiser
from scoregen.models.dncnn import DnCNNConfig, DnCNNNet

STEP_SIZE = 1e-4
SIGMA = 0.05  # the denoiser's σ (deepinv ULA's ``sigma``)
NOISE_SIGMA = 0.05  # σ_n of the observation


class Welford:
    """Running mean and (population) variance, updated in place; the same recursion deepinv uses."""

    def __init__(self, x: torch.Tensor):
        self.n = 1
        self.mean = x.clone()
        self.m2 = torch.zeros_like(x)

    def update(self, x: torch.Tensor) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def var(self) -> torch.Tensor:
        return self.m2 / self.n


def build_problem(device: torch.device, batch: int, size: int = 32, seed: int = 0):
    """Denoiser, deepinv inpainting physics with Gaussian noise, observation and start."""
    import deepinv as dinv

    torch.manual_seed(seed)
    net = DnCNNNet(DnCNNConfig(shape=(1, size, size), depth=8, nf=32))
    denoiser = Denoiser(net, sigma_data=0.5).to(device).eval()
    for p in denoiser.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(batch, 1, size, size, generator=generator).to(device)
    physics = dinv.physics.Inpainting(
        img_size=(1, size, size),
        mask=0.5,
        noise_model=dinv.physics.GaussianNoise(sigma=NOISE_SIGMA),
        device=device,
    )
    y = physics(clean)
    x0 = physics.A_adjoint(y)
    return denoiser, physics, y, x0


def make_contenders(denoiser, physics, y):
    import deepinv as dinv

    score = posterior_score(tweedie_score(denoiser), y, physics, noise_sigma=NOISE_SIGMA)

    @torch.no_grad()
    def deepinv_ula(x0, n_steps, seed):
        sampler = dinv.sampling.ULA(
            prior=dinv.optim.ScorePrior(denoiser),
            data_fidelity=dinv.optim.data_fidelity.L2(sigma=NOISE_SIGMA),
            step_size=STEP_SIZE,
            sigma=SIGMA,
            alpha=1.0,
            max_iter=n_steps,
            thinning=1,
            burnin_ratio=0.0,
            clip=None,
            verbose=False,
        )
        return sampler.sample(y, physics, x_init=x0, seed=seed)[0]

    def ours(with_stats: bool):
        def sample(x0, n_steps, seed):
            generator = torch.Generator(device=x0.device).manual_seed(seed)
            stats = Welford(x0) if with_stats else None
            out = langevin(
                score,
                x0,
                sigma=SIGMA,
                step_size=STEP_SIZE,
                n_steps=n_steps,
                generator=generator,
                callback=(lambda info: stats.update(info["x"])) if with_stats else None,
                progress=False,
            )
            return stats.mean if with_stats else out

        return sample

    @torch.no_grad()
    def bare(x0, n_steps, seed):
        generator = torch.Generator(device=x0.device).manual_seed(seed)
        x, scale = x0, math.sqrt(2 * STEP_SIZE)
        for _ in range(n_steps):
            drift = physics.A_adjoint(y - physics.A(x)) / NOISE_SIGMA**2
            drift = drift + (denoiser(x, SIGMA) - x) / SIGMA**2
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + STEP_SIZE * drift + scale * z
        return x

    @torch.no_grad()
    def floor(x0, n_steps, seed):
        for _ in range(n_steps):
            out = denoiser(x0, SIGMA)
        return out

    return {
        "floor (denoiser only)": floor,
        "bare loop": bare,
        "deepinv ULA": deepinv_ula,
        "scoregen + Welford": ours(True),
        "scoregen (final state)": ours(False),
    }


def _time(fn, x0, n_steps, seed):
    return timed(lambda: fn(x0, n_steps, seed), x0.device)


def run(batch=16, n_steps=50, repeats=10, device="cpu", seed=0):
    device = torch.device(device)
    denoiser, physics, y, x0 = build_problem(device, batch, seed=seed)
    contenders = make_contenders(denoiser, physics, y)
    _time(contenders["bare loop"], x0, 3, 0)  # warm-up
    times, _ = interleaved(
        contenders, lambda name: _time(contenders[name], x0, n_steps, seed=123), repeats, seed
    )
    # Agreement: on the CPU both draw one standard normal per step from a generator seeded
    # alike (deepinv through torch.manual_seed), so the two running means must coincide up to
    # float rounding; a different update or bookkeeping would show as a gap of order sqrt(2ε).
    ours_mean = contenders["scoregen + Welford"](x0, n_steps, 7)
    theirs_mean = contenders["deepinv ULA"](x0, n_steps, 7)
    gap = (ours_mean - theirs_mean).abs().max().item()
    return times, {"max |Δ posterior mean|": gap, "noise per step": math.sqrt(2 * STEP_SIZE)}


def report(times, check, batch, n_steps, device) -> str:
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    name = str(device)
    if torch.device(device).type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    lines = [
        f"posterior ULA, inpainting {batch}x1x32x32, {len(times['bare loop'])} trials of "
        f"{n_steps} steps, device {name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"{'contender':<24} {'best ms/step':>12} {'/ floor':>8} {'/ bare':>7} {'/ deepinv':>10} "
        f"{'median ms/step':>15} {'/ deepinv':>10}",
    ]
    for key in times:
        lines.append(
            f"{key:<24} {1e3 * best[key] / n_steps:>12.3f} "
            f"{best[key] / best['floor (denoiser only)']:>8.3f} {best[key] / best['bare loop']:>7.3f} "
            f"{best[key] / best['deepinv ULA']:>10.3f} {1e3 * median[key] / n_steps:>15.3f} "
            f"{median[key] / median['deepinv ULA']:>10.3f}"
        )
    lines.append(
        f"max |scoregen mean - deepinv mean| (same seed) = {check['max |Δ posterior mean|']:.3g} "
        f"(noise per step sqrt(2ε) = {check['noise per step']:.3g}; equal streams on the CPU only)"
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="steps per trial")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="4 images, 3 x 20 steps")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.steps, args.repeats = 4, 20, 3
    times, check = run(args.batch, args.steps, args.repeats, args.device)
    print(report(times, check, args.batch, args.steps, args.device))


if __name__ == "__main__":
    main()
