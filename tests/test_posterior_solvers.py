"""The posterior solvers against closed forms: the exact posterior of a Gaussian-mixture prior under
``y = A x + σ_n n`` (``mixture_posterior``), and the exact law of each solver's chain on a Gaussian
prior, where every step is affine in the state and the law propagates in closed form.

Annealed posterior Langevin is exact on its last level's target (up to ULA's step, which for a
Gaussian is exact too: ULA with step α on N(m, P⁻¹) is the affine map x ↦ x − αP(x − m) +
sqrt(2α) z). DiffPIR and DPS are exact for an isotropic Gaussian prior, where their estimate of
E[x | x_σ, y] is exact; their chain then is the ancestral sampler, whose law the tests
propagate.
"""

import math

import pytest
import torch

from scoregen import GaussianMixture, annealed_langevin, geometric_sigmas, posterior_score
from scoregen.builtins import ScoreModel
from scoregen.samplers import (
    GaussianLikelihood,
    SamplerDivergence,
    annealed_posterior_langevin,
    diffpir,
    dps,
    mixture_posterior,
)
from scoregen.sampling.posterior import plan_posterior, posterior_sample

F64 = torch.float64


def gaussian_problem(seed=0, d=4, m=3, noise_sigma=0.4, isotropic=None):
    """A Gaussian prior (full covariance, or s² I), a random A [m, d] and one observation."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(1, d, generator=g, dtype=F64)
    if isotropic is None:
        a = torch.randn(d, d, generator=g, dtype=F64)
        cov = (a @ a.T / d + 0.3 * torch.eye(d, dtype=F64))[None]
    else:
        cov = torch.full((1,), isotropic**2, dtype=F64)
    prior = GaussianMixture([1.0], mean, cov)
    matrix = torch.randn(m, d, generator=g, dtype=F64)
    x_true = prior.sample(1, generator=g)
    y = x_true @ matrix.T + noise_sigma * torch.randn(1, m, generator=g, dtype=F64)
    return prior, matrix, y, noise_sigma, g


def moments_z(samples, mean, cov):
    """Largest |z| of the sample mean and of the sample covariance entries against (mean, cov),
    with standard errors from the samples themselves."""
    n = samples.shape[0]
    mean_z = ((samples.mean(0) - mean) / (cov.diagonal() / n).sqrt()).abs().max().item()
    centred = samples - samples.mean(0)
    products = (centred[:, :, None] * centred[:, None, :]).reshape(n, -1)
    cov_se = products.std(0).reshape(cov.shape) / math.sqrt(n)
    cov_z = ((torch.cov(samples.T) - cov).abs() / cov_se).max().item()
    return mean_z, cov_z


# ---------------------------------------------------------------------------- the closed form
def test_mixture_posterior_score_is_prior_score_plus_likelihood_gradient():
    # ∇ log p(x | y) = ∇ log p(x) + Aᵀ(y − A x)/σ_n² for every x: checks the weights, the means
    # and the covariances of the posterior mixture at once.
    g = torch.Generator().manual_seed(3)
    prior = GaussianMixture(
        [0.5, 0.3, 0.2],
        3 * torch.randn(3, 3, generator=g, dtype=F64),
        0.3 + torch.rand(3, 3, generator=g, dtype=F64),
    )
    matrix = torch.randn(2, 3, generator=g, dtype=F64)
    y = torch.randn(2, generator=g, dtype=F64)
    posterior = mixture_posterior(prior, matrix, y, 0.6)
    x = 3 * torch.randn(200, 3, generator=g, dtype=F64)
    expected = prior.score(x) + (y - x @ matrix.T) @ matrix / 0.36
    assert (posterior.score(x) - expected).abs().max() < 1e-9
    assert abs(posterior.weights.sum().item() - 1) < 1e-12


def test_mixture_posterior_with_the_identity_is_the_denoising_posterior():
    g = torch.Generator().manual_seed(4)
    prior = GaussianMixture([0.7, 0.3], [[-1.0, 0.0], [2.0, 1.0]], [0.5, 0.8])
    y = torch.randn(1, 2, generator=g, dtype=F64)
    posterior = mixture_posterior(prior, torch.eye(2, dtype=F64), y, 0.5)
    assert (posterior.mean() - prior.denoise(y, 0.5)[0]).abs().max() < 1e-12


# ---------------------------------------------------------------------------- Langevin
def ula_law(levels, mean, cov):
    """Propagate (mean, cov) through ULA levels [(α, n_steps, m, S)], each targeting N(m, S)."""
    d = mean.shape[0]
    eye = torch.eye(d, dtype=F64)
    for alpha, n_steps, target_mean, target_cov in levels:
        precision = torch.linalg.inv(target_cov)
        k = eye - alpha * precision
        for _ in range(n_steps):
            mean = k @ mean + alpha * precision @ target_mean
            cov = k @ cov @ k.T + 2 * alpha * eye
    return mean, cov


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_annealed_posterior_langevin_matches_its_exact_chain_law_on_a_gaussian(gamma):
    prior, matrix, y, noise_sigma, g = gaussian_problem()
    sigmas = geometric_sigmas(4.0, 0.3, 5, dtype=F64).tolist()
    step_scale, n_each, n_last, n_chains = 0.5, 30, 120, 20_000
    sqnorm = torch.linalg.eigvalsh(matrix.T @ matrix).max().item()
    levels = []
    for i, s in enumerate(sigmas):
        widened = math.sqrt(noise_sigma**2 + gamma**2 * s**2)
        target = mixture_posterior(prior.blurred(s), matrix, y, widened)
        alpha = step_scale / (1 / s**2 + sqnorm / widened**2)
        n_steps = n_last if i == len(sigmas) - 1 else n_each
        levels.append((alpha, n_steps, target.means[0], target.covs[0]))
    mean, cov = ula_law(levels, torch.zeros(4, dtype=F64), sigmas[0] ** 2 * torch.eye(4, dtype=F64))
    # the final Tweedie step x + σ_L² g(x), g(x) = −P_L (x − m_L): an affine map
    precision = torch.linalg.inv(levels[-1][3])
    tweedie = torch.eye(4, dtype=F64) - sigmas[-1] ** 2 * precision
    denoised_mean = tweedie @ mean + sigmas[-1] ** 2 * precision @ levels[-1][2]
    denoised_cov = tweedie @ cov @ tweedie.T

    before_denoise = []
    x = annealed_posterior_langevin(
        prior.score,
        sigmas[0] * torch.randn(n_chains, 4, generator=g, dtype=F64),
        sigmas,
        likelihood=GaussianLikelihood(y, matrix, noise_sigma),
        n_steps_each=n_each,
        n_steps_last=n_last,
        step_scale=step_scale,
        gamma=gamma,
        generator=g,
        callback=lambda info: (
            before_denoise.append(info["x"]) if info.get("phase") != "denoise" else None
        ),
    )
    for name, samples, m, c in (
        ("last level", before_denoise[-1], mean, cov),
        ("after the Tweedie step", x, denoised_mean, denoised_cov),
    ):
        mean_z, cov_z = moments_z(samples, m, c)
        assert mean_z < 4.5 and cov_z < 4.5, f"{name}: mean {mean_z:.2f} SE, cov {cov_z:.2f} SE"


def test_annealed_posterior_langevin_samples_the_mode_weights_of_a_two_mode_posterior():
    # Two modes that overlap at the last level σ_L, where a long run mixes between them: its
    # target is the posterior of the σ_L-blurred mixture under the widened likelihood (a
    # mixture in closed form). E_π[P(k | x)] = w'_k, so the mean responsibility of the samples
    # estimates each posterior weight, with a standard error from the responsibilities'
    # spread. (With σ_L far below the modes' overlap the chains could not cross between them at
    # the last level, and the weights would be those frozen in on the way down.)
    g = torch.Generator().manual_seed(5)
    prior = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.3]], [0.6, 0.6])
    matrix = torch.tensor([[0.3, 1.0]], dtype=F64)
    y = torch.tensor([[0.5]], dtype=F64)
    noise_sigma, sigma_last, n_chains = 0.5, 0.5, 8_000
    x = annealed_posterior_langevin(
        prior.score,
        3 * torch.randn(n_chains, 2, generator=g, dtype=F64),
        geometric_sigmas(3.0, sigma_last, 6, dtype=F64),
        likelihood=GaussianLikelihood(y, matrix, noise_sigma),
        n_steps_each=30,
        n_steps_last=400,
        step_scale=0.2,
        final_denoise=False,
        generator=g,
    )
    target = mixture_posterior(
        prior.blurred(sigma_last), matrix, y, math.sqrt(noise_sigma**2 + sigma_last**2)
    )
    log_joint = torch.stack(
        [
            torch.distributions.MultivariateNormal(target.means[k], target.covs[k]).log_prob(x)
            for k in range(2)
        ],
        dim=1,
    ) + torch.log(target.weights)
    resp = torch.softmax(log_joint, dim=1)
    se = resp.std(0) / math.sqrt(n_chains)
    z = ((resp.mean(0) - target.weights) / se).abs().max().item()
    assert z < 4.5, f"weights {resp.mean(0).tolist()} vs {target.weights.tolist()}: {z:.2f} SE"


def test_posterior_score_widens_the_likelihood_variance_by_gamma_sigma():
    prior, matrix, y, noise_sigma, g = gaussian_problem(seed=6)
    x = torch.randn(10, 4, generator=g, dtype=F64)
    score = posterior_score(prior.score, y, matrix, noise_sigma, gamma=0.5)
    expected = prior.score(x, 0.8) + (y - x @ matrix.T) @ matrix / (noise_sigma**2 + 0.25 * 0.64)
    assert (score(x, 0.8) - expected).abs().max() < 1e-12
    assert score.gamma == 0.5 and score.likelihood.noise_sigma == noise_sigma


def test_a_posterior_chain_that_diverges_names_the_likelihood_term():
    # The trap of annealing with the exact likelihood: NCSN's step at σ_1 = 4 is far above the
    # stable bound 2σ_n²/‖A‖² of the likelihood; the curvature-bounded sampler is stable.
    prior, matrix, y, _, g = gaussian_problem(seed=7, noise_sigma=0.05)
    sigmas = geometric_sigmas(4.0, 0.05, 5, dtype=F64)
    x0 = 4 * torch.randn(64, 4, generator=g, dtype=F64)
    with pytest.raises(SamplerDivergence, match="the likelihood term's step is too large"):
        annealed_langevin(
            posterior_score(prior.score, y, matrix, 0.05),
            x0,
            sigmas,
            n_steps_each=20,
            step_lr=0.05 * 0.05**2,
            generator=g,
        )
    x = annealed_posterior_langevin(
        prior.score, x0, sigmas, likelihood=GaussianLikelihood(y, matrix, 0.05), generator=g
    )
    assert torch.isfinite(x).all()


# ---------------------------------------------------------------------------- DiffPIR and DPS
def ancestral_law(prior_mean, prior_var, matrix, y, noise_sigma, sigmas, start_var):
    """The exact law of the ancestral chain x ← x̂₀ + b (x − x̂₀) + sqrt(σ'²(1 − b)) z,
    b = σ'²/σ², driven by the exact E[x | x_σ, y] of the prior N(μ, s² I): affine in x,
    x̂₀ = M x + v with M = S/σ², v = S (μ/s² + Aᵀy/σ_n²), S = (I/s² + I/σ² + AᵀA/σ_n²)⁻¹.
    The output is the last level's x̂₀."""
    d = prior_mean.shape[0]
    eye = torch.eye(d, dtype=F64)
    fixed = eye / prior_var + matrix.T @ matrix / noise_sigma**2
    data = prior_mean / prior_var + matrix.T @ y.reshape(-1) / noise_sigma**2
    mean, cov = torch.zeros(d, dtype=F64), start_var * eye
    for i, sigma in enumerate(sigmas):
        s = torch.linalg.inv(fixed + eye / sigma**2)
        gain, offset = s / sigma**2, s @ data
        if i == len(sigmas) - 1:
            return gain @ mean + offset, gain @ cov @ gain.T
        b = sigmas[i + 1] ** 2 / sigma**2
        k = (1 - b) * gain + b * eye
        mean = k @ mean + (1 - b) * offset
        cov = k @ cov @ k.T + sigmas[i + 1] ** 2 * (1 - b) * eye


@pytest.mark.parametrize("solver", ["diffpir", "dps"])
def test_diffpir_and_dps_follow_the_exact_ancestral_law_on_an_isotropic_gaussian(solver):
    s = 0.8
    prior, matrix, y, noise_sigma, g = gaussian_problem(seed=1, isotropic=s)
    sigmas = geometric_sigmas(10.0, 0.01, 60, dtype=F64).tolist()
    n_chains = 20_000
    x0 = sigmas[0] * torch.randn(n_chains, 4, generator=g, dtype=F64)
    likelihood = GaussianLikelihood(y, matrix, noise_sigma)
    if solver == "diffpir":
        x = diffpir(prior.score, x0, sigmas, likelihood=likelihood, sigma_data=s, generator=g)
    else:  # the probed error variance is exact here: J_D = s²/(s² + σ²) I
        x = dps(prior.score, x0, sigmas, likelihood=likelihood, generator=g)
    mean, cov = ancestral_law(prior.means[0], s**2, matrix, y, noise_sigma, sigmas, sigmas[0] ** 2)
    mean_z, cov_z = moments_z(x, mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, f"{solver}: mean {mean_z:.2f} SE, cov {cov_z:.2f} SE"


def test_ancestral_law_tends_to_the_posterior_as_the_ladder_refines():
    # The law the two solvers follow has the posterior as its limit: its covariance error
    # halves when the number of levels doubles (the ancestral step drops a variance
    # (1 − b)² Cov[x | x_σ, y] per level, O(1/N) in all), and its mean error is set by the
    # start at σ_1 = 10 alone.
    s = 0.8
    prior, matrix, y, noise_sigma, _ = gaussian_problem(seed=1, isotropic=s)
    exact = mixture_posterior(prior, matrix, y, noise_sigma)
    cov_errors, mean_errors = [], []
    for n_levels in (60, 120, 240, 480):
        sigmas = geometric_sigmas(10.0, 0.01, n_levels, dtype=F64).tolist()
        mean, cov = ancestral_law(prior.means[0], s**2, matrix, y, noise_sigma, sigmas, 100.0)
        cov_errors.append((cov - exact.covariance()).abs().max().item())
        mean_errors.append((mean - exact.mean()).abs().max().item())
    ratios = [a / b for a, b in zip(cov_errors, cov_errors[1:])]
    assert all(1.8 < r < 2.2 for r in ratios), (cov_errors, ratios)
    assert max(mean_errors) < 0.01 * exact.covariance().diagonal().sqrt().min(), mean_errors


def test_dps_gaussian_guidance_equals_pigdm_when_a_has_orthonormal_rows():
    # A Aᵀ = I makes (r² A Aᵀ + σ_n² I)⁻¹ = I/(r² + σ_n²): the two guidances coincide exactly.
    prior, _, _, noise_sigma, g = gaussian_problem(seed=2, isotropic=0.7)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))
    matrix = q[:2]
    y = torch.randn(1, 2, generator=g, dtype=F64)
    x0 = 5 * torch.randn(50, 4, generator=g, dtype=F64)
    sigmas = geometric_sigmas(5.0, 0.05, 12, dtype=F64)
    outs = [
        dps(
            prior.score,
            x0,
            sigmas,
            likelihood=GaussianLikelihood(y, matrix, noise_sigma),
            guidance=guidance,
            error_variance="isotropic",
            sigma_data=0.7,
            zeta=0.0,
        )
        for guidance in ("gaussian", "pigdm")
    ]
    assert (outs[0] - outs[1]).abs().max() < 1e-10


def test_dps_norm_guidance_and_fixed_zeta_run_and_fit_the_observation():
    prior, matrix, y, noise_sigma, g = gaussian_problem(seed=8, isotropic=1.0)
    likelihood = GaussianLikelihood(y, matrix, noise_sigma)
    sigmas = geometric_sigmas(10.0, 0.01, 50, dtype=F64)
    x0 = 10 * torch.randn(500, 4, generator=g, dtype=F64)
    prior_residual = (y - prior.sample(500, generator=g) @ matrix.T).norm(dim=1).mean()
    for kwargs in ({"guidance": "norm", "weight": 0.5}, {"zeta": 0.3}):
        x = dps(prior.score, x0, sigmas, likelihood=likelihood, generator=g, **kwargs)
        residual = (y - x @ matrix.T).norm(dim=1).mean()
        assert torch.isfinite(x).all() and residual < 0.5 * prior_residual, (kwargs, residual)


# ---------------------------------------------------------------------------- posterior_sample
def mixture_model(prior, scale, shift, sigma_data, sigma_range=(0.01, 20.0)):
    """A ScoreModel whose score is the oracle's, with a data record mapping model space to
    data space as x·scale + shift (as scoregen's image sets do)."""
    return ScoreModel(
        name="oracle",
        score=prior.score,
        denoiser=prior.denoise,
        metadata={
            "data": {"normalization": {"scale": scale, "shift": shift}, "shape": [prior.dim]},
            "sigma": {"min": sigma_range[0], "max": sigma_range[1]},
            "model": {"sigma_data": sigma_data},
        },
    )


def test_posterior_sample_maps_data_space_observations_into_the_model_and_back():
    # The model is N(μ, s² I) in model space; data = 0.5 x + 0.5. Everything is affine, so
    # the chain's law in data space is the ancestral law of the data-space prior
    # N(0.5 μ + 0.5, 0.25 s² I) on the data-space ladder 0.5 σ_i with the data-space y and σ_n.
    s, scale, shift = 0.9, 0.5, 0.5
    prior, matrix, _, noise_sigma, g = gaussian_problem(seed=9, isotropic=s, noise_sigma=0.1)
    x_data = scale * prior.sample(1, generator=g) + shift
    y = x_data @ matrix.T + noise_sigma * torch.randn(1, 3, generator=g, dtype=F64)
    model = mixture_model(prior, scale, shift, sigma_data=s)
    result = posterior_sample(
        model,
        y,
        matrix,
        20_000,
        sampler="dps",
        steps=60,
        seed=3,
        noise_sigma=noise_sigma,
        zeta=None,  # the ancestral step, whose law is known (the plan's default is ζ = 0.2)
    )
    assert result.samples.shape == (1, 20_000, 4) and result.mean.shape == (1, 4)
    sigmas = [scale * v for v in result.plan.sigmas]
    mean, cov = ancestral_law(
        scale * prior.means[0] + shift,
        (scale * s) ** 2,
        matrix,
        y,
        noise_sigma,
        sigmas,
        sigmas[0] ** 2,
    )
    mean_z, cov_z = moments_z(result.samples[0], mean, cov)
    assert mean_z < 4.5 and cov_z < 4.5, f"mean {mean_z:.2f} SE, cov {cov_z:.2f} SE"
    assert (result.std[0] - cov.diagonal().sqrt()).abs().max() < 0.05 * cov.diagonal().sqrt().max()


def test_posterior_sample_runs_every_sampler_on_a_batch_of_observations():
    prior, matrix, _, noise_sigma, g = gaussian_problem(seed=10, isotropic=1.0)
    y = torch.randn(3, 3, generator=g, dtype=F64)
    model = mixture_model(prior, 1.0, 0.0, sigma_data=1.0)
    for sampler in ("dps", "diffpir", "langevin"):
        result = posterior_sample(model, y, matrix, 5, sampler=sampler, steps=20, noise_sigma=0.4)
        assert result.samples.shape == (3, 5, 4) and torch.isfinite(result.samples).all()
        assert result.std.shape == (3, 4) and result.plan.sampler == sampler
    again = posterior_sample(model, y, matrix, 5, steps=20, noise_sigma=0.4, seed=0)
    assert torch.equal(
        again.samples, posterior_sample(model, y, matrix, 5, steps=20, noise_sigma=0.4).samples
    )


def test_plan_posterior_defaults_and_errors():
    prior = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    model = mixture_model(prior, 0.5, 0.5, sigma_data=1.0, sigma_range=(0.02, 5.0))
    plan = plan_posterior(model)
    assert plan.sampler == "dps" and len(plan.sigmas) == plan.steps == 100
    assert plan.sigmas[0] == pytest.approx(5.0) and plan.sigmas[-1] == pytest.approx(0.02)
    langevin_plan = plan_posterior(model, "langevin", noise_sigma=0.2)
    assert langevin_plan.sigmas[-1] == pytest.approx(0.1)  # max(σ_min, σ_n / 2)
    assert langevin_plan.steps == 10 * len(langevin_plan.sigmas) + 1
    with pytest.raises(ValueError, match="sampler must be one of"):
        plan_posterior(model, "ddrm")
    fixed = ScoreModel("fixed", prior.score, prior.denoise, {"sigma": {"fixed": 0.1}})
    with pytest.raises(ValueError, match="single noise level"):
        plan_posterior(fixed)


def test_solver_argument_errors():
    prior, matrix, y, noise_sigma, _ = gaussian_problem()
    likelihood = GaussianLikelihood(y, matrix, noise_sigma)
    x = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(ValueError, match="step_scale must be in"):
        annealed_posterior_langevin(prior.score, x, [1.0, 0.1], likelihood=likelihood, step_scale=2)
    with pytest.raises(TypeError, match="likelihood must be a GaussianLikelihood"):
        diffpir(prior.score, x, [1.0, 0.1], likelihood=(y, matrix), sigma_data=1.0)
    with pytest.raises(ValueError, match="zeta must be in"):
        diffpir(prior.score, x, [1.0, 0.1], likelihood=likelihood, sigma_data=1.0, zeta=1.5)
    with pytest.raises(ValueError, match="guidance must be one of"):
        dps(prior.score, x, [1.0, 0.1], likelihood=likelihood, guidance="l1")
    with pytest.raises(ValueError, match="sigma_data is required"):
        dps(prior.score, x, [1.0, 0.1], likelihood=likelihood, error_variance="isotropic")
