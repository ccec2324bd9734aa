"""The step rules the samplers promise, each against a hand-written reference or a closed form:
the predictor–corrector's corrector, ladders ending in 0, the ``denoised`` estimate in the
callback, and the curvature-adaptive step of annealed Langevin."""

import math

import pytest
import torch

from scoregen import (
    GaussianMixture,
    annealed_langevin,
    geometric_sigmas,
    karras_sigmas,
    predictor_corrector,
    probability_flow,
)
from scoregen.samplers._common import curvature_step

VARIANCE = 0.3  # a Gaussian target N(0.5, v I): p_σ = N(0.5, (v + σ²) I)


def gaussian_score(x, sigma):
    sigma = sigma if isinstance(sigma, float) else sigma.reshape(-1, *[1] * (x.ndim - 1))
    return -(x - 0.5) / (VARIANCE + sigma**2)


def reference_pc(score, x, sigmas, snr, generator):
    """score_sde's predictor–corrector for the VE SDE, written out: reverse-diffusion predictor
    from σ_i to σ_{i+1}, then one Langevin corrector at σ_{i+1} with
    ε = 2 (snr · mean‖z‖ / mean‖g‖)², then Tweedie at σ_L."""
    levels = sigmas.tolist()
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        variance = sigma**2 - sigma_next**2
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + variance * score(x, sigma) + math.sqrt(variance) * z
        g = score(x, sigma_next)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        eps = 2 * (snr * z.flatten(1).norm(dim=1).mean() / g.flatten(1).norm(dim=1).mean()) ** 2
        x = x + eps * g + (2 * eps).sqrt() * z
    return x + levels[-1] ** 2 * score(x, levels[-1])


def test_predictor_corrector_follows_the_reference_step_for_step():
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = geometric_sigmas(5.0, 0.05, 12, dtype=torch.float64)
    got = predictor_corrector(gaussian_score, x0, sigmas, snr=0.2,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    want = reference_pc(gaussian_score, x0, sigmas, 0.2, torch.Generator().manual_seed(1))
    # dropping the factor 2 in ε, or evaluating the corrector at σ_i, moves every chain
    assert torch.allclose(got, want, rtol=0, atol=1e-12), (got - want).abs().max()


def test_the_corrector_reports_its_level_and_step_to_the_callback():
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = geometric_sigmas(4.0, 0.1, 6, dtype=torch.float64).tolist()
    seen = []
    predictor_corrector(gaussian_score, x0, sigmas, snr=0.16, callback=seen.append,
                        generator=torch.Generator().manual_seed(2))  # fmt: skip
    correctors = [info for info in seen if info.get("phase") == "corrector"]
    assert [info["sigma"] for info in correctors] == sigmas[1:]
    previous = {i: info for i, info in enumerate(seen)}
    for info in correctors:
        before = previous[info["step"] - 1]["x"]
        g = gaussian_score(before, info["sigma"])
        noise = (info["x"] - before - info["step_size"] * g) / (2 * info["step_size"]).sqrt()
        ratio = 0.16 * noise.flatten(1).norm(dim=1).mean() / g.flatten(1).norm(dim=1).mean()
        assert torch.allclose(info["step_size"], 2 * ratio**2, rtol=1e-9), info["step"]


@pytest.mark.parametrize("sampler", ["annealed", "pc", "ode"])
def test_a_ladder_ending_in_zero_is_the_final_denoising_step(sampler):
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ladder = karras_sigmas(3.0, 0.1, 6, dtype=torch.float64)
    with_zero = torch.cat([ladder, torch.zeros(1, dtype=ladder.dtype)])

    def run(sigmas, **kw):
        g = torch.Generator().manual_seed(3)
        if sampler == "annealed":
            return annealed_langevin(gaussian_score, x0, sigmas, n_steps_each=3, generator=g, **kw)
        if sampler == "pc":
            return predictor_corrector(gaussian_score, x0, sigmas, generator=g, **kw)
        return probability_flow(gaussian_score, x0, sigmas, **kw)

    assert torch.equal(run(with_zero), run(ladder))
    assert not torch.equal(run(ladder, final_denoise=False), run(ladder))
    with pytest.raises(ValueError, match="ends in 0.*final_denoise=False"):
        run(with_zero, final_denoise=False)


@pytest.mark.parametrize("sampler", ["annealed", "pc", "ode"])
def test_the_callback_gets_tweedies_denoised_estimate(sampler):
    x0 = 3 * torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = geometric_sigmas(3.0, 0.2, 4, dtype=torch.float64)
    seen = []

    def keep(info):
        seen.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in info.items()})

    g = torch.Generator().manual_seed(1)
    if sampler == "annealed":
        annealed_langevin(gaussian_score, x0, sigmas, n_steps_each=2, callback=keep, generator=g)
    elif sampler == "pc":
        predictor_corrector(gaussian_score, x0, sigmas, callback=keep, generator=g)
    else:
        probability_flow(gaussian_score, x0, sigmas, callback=keep)
    previous = x0
    for info in seen:
        if info.get("phase") != "denoise":
            sigma = info["sigma"]
            want = previous + sigma**2 * gaussian_score(previous, sigma)  # at the step's input
            assert torch.allclose(info["denoised"], want, atol=1e-12), (sampler, info["step"])
        previous = info["x"]


@pytest.mark.parametrize(("sigma", "n", "d"), [(0.05, 4000, 2), (1.0, 4000, 2), (0.2, 500, 64)])
def test_the_curvature_step_is_step_scale_times_the_variance_of_p_sigma(sigma, n, d):
    # chains at equilibrium on N(0.5, (v + σ²) I): the mean curvature is 1/(v + σ²). One
    # Gaussian probe per chain: zᵀAz has variance 2 tr(A²) = 2d/(v + σ²)², so the mean over n
    # chains has relative standard error sqrt(2 / (n d)).
    g = torch.Generator().manual_seed(0)
    x = 0.5 + math.sqrt(VARIANCE + sigma**2) * torch.randn(n, d, generator=g, dtype=torch.float64)
    step, grad = curvature_step(gaussian_score, x, sigma, 0.1, g)
    assert torch.equal(grad, gaussian_score(x, sigma))
    want = 0.1 * (VARIANCE + sigma**2)
    bound = 5 * math.sqrt(2 / (n * d))
    assert abs(step / want - 1) < bound, (step, want, bound)


def test_the_curvature_step_stays_between_the_safe_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, generator=g, dtype=torch.float64)  # one chain: no spread to go by
    step, _ = curvature_step(gaussian_score, x, 0.3, 0.1, g)
    assert step == pytest.approx(0.1 * 0.3**2)
    flat = lambda x, sigma: torch.zeros_like(x)  # noqa: E731  (zero curvature)
    x = torch.randn(100, 2, generator=g, dtype=torch.float64)
    step, _ = curvature_step(flat, x, 0.3, 0.1, g)
    assert step == pytest.approx(0.1 * 0.3**2)


def test_adaptive_annealing_relaxes_where_sigma_squared_steps_stall():
    # a narrow mixture (std 0.1): the last levels lie far below its spread. α = 0.1 σ² leaves
    # the chains where the middle levels put them (too wide: with 20 steps a level, relaxing
    # takes 10 (1 + v/σ²) steps, so they freeze near σ = 0.1, std sqrt(2) too wide);
    # curvature-sized steps relax them.
    mixture = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.01, 0.01])
    g = torch.Generator().manual_seed(0)
    x0 = 4 * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    sigmas = geometric_sigmas(6.0, 0.002, 10, dtype=torch.float64)

    def spread(x):  # RMS distance to the nearest mean, per coordinate, over the true std
        d = torch.cdist(x, mixture.means).min(dim=1).values
        return float((d.square().mean() / 2).sqrt() / 0.1)

    fixed = annealed_langevin(mixture.score, x0, sigmas, n_steps_each=20,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    adaptive = annealed_langevin(mixture.score, x0, sigmas, n_steps_each=20, adaptive=True,
                                 generator=torch.Generator().manual_seed(1))  # fmt: skip
    # 4000 chains: the spread's standard error is about 1/sqrt(2·2·4000) = 0.008; ULA's bias at
    # α = 0.1 v is about 2.5 %
    assert abs(spread(adaptive) - 1) < 0.05, spread(adaptive)
    assert spread(fixed) > 1.2, spread(fixed)


def test_annealing_takes_one_step_rule():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="cannot be combined"):
        annealed_langevin(gaussian_score, x, [2.0, 1.0], step_lr=0.1, adaptive=True)
    with pytest.raises(ValueError, match="cannot be combined"):
        annealed_langevin(gaussian_score, x, [2.0, 1.0], step_lr=0.1, step_scale=0.2)
    with pytest.raises(ValueError, match="step_scale must be finite and > 0"):
        annealed_langevin(gaussian_score, x, [2.0, 1.0], step_scale=0)
