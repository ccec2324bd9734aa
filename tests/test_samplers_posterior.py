"""Posterior sampling for linear inverse problems, checked against the closed-form posterior of a
Gaussian-mixture prior under a linear-Gaussian observation."""

import math

import pytest
import torch

from scoregen import GaussianMixture, annealed_langevin, geometric_sigmas, langevin, posterior_score


def exact_posterior(prior: GaussianMixture, matrix, y, noise_sigma) -> GaussianMixture:
    """p(x | y) for x ~ Σ w_k N(μ_k, Σ_k), y = A x + σ_n n: the mixture Σ w'_k N(m_k, S_k),

    S_k = (Σ_k⁻¹ + AᵀA/σ_n²)⁻¹,  m_k = S_k (Σ_k⁻¹ μ_k + Aᵀy/σ_n²),
    w'_k ∝ w_k N(y; A μ_k, A Σ_k Aᵀ + σ_n² I).
    """
    covs = prior.covs
    precisions = torch.linalg.inv(covs)
    s = torch.linalg.inv(precisions + matrix.T @ matrix / noise_sigma**2)
    s = 0.5 * (s + s.transpose(-1, -2))
    rhs = precisions @ prior.means[..., None] + (matrix.T @ y / noise_sigma**2)[None, :, None]
    means = (s @ rhs)[..., 0]
    predictive = torch.distributions.MultivariateNormal(
        prior.means @ matrix.T,
        matrix @ covs @ matrix.T + noise_sigma**2 * torch.eye(matrix.shape[0], dtype=covs.dtype),
    )
    weights = torch.softmax(prior.log_weights + predictive.log_prob(y), dim=0)
    return GaussianMixture(weights, means, s)


def two_mode_prior():
    return GaussianMixture(
        [0.6, 0.4],
        [[-1.5, 0.0], [1.5, 0.5]],
        [[[1.0, 0.3], [0.3, 0.8]], [[0.7, -0.2], [-0.2, 1.0]]],
    )


MATRIX = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
Y = torch.tensor([0.3], dtype=torch.float64)
NOISE_SIGMA = 0.7


def test_posterior_score_with_a_matrix_is_the_exact_posterior_score_at_sigma_zero():
    prior = two_mode_prior()
    posterior = exact_posterior(prior, MATRIX, Y, NOISE_SIGMA)
    x = 3 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = posterior_score(prior.score, Y, MATRIX, NOISE_SIGMA)
    assert (score(x, 0.0) - posterior.score(x)).abs().max() < 1e-10
    # One observation per chain ([B, m]) is the same as broadcasting a single one.
    per_chain = posterior_score(prior.score, Y.expand(100, 1), MATRIX, NOISE_SIGMA)
    assert (per_chain(x, 0.0) - score(x, 0.0)).abs().max() < 1e-12


def test_posterior_score_with_deepinv_physics_is_exact_on_images():
    dinv = pytest.importorskip("deepinv")
    # A 16-pixel "image" prior [B, 1, 4, 4]; deepinv's Inpainting keeps 7 of the pixels.
    g = torch.Generator().manual_seed(1)
    means = torch.randn(2, 16, generator=g, dtype=torch.float64)
    variances = 0.2 + torch.rand(2, 16, generator=g, dtype=torch.float64)
    prior = GaussianMixture([0.3, 0.7], means, variances)
    mask = (torch.rand(1, 4, 4, generator=g) < 0.5).to(torch.float64)
    physics = dinv.physics.Inpainting(
        img_size=(1, 4, 4), mask=mask, noise_model=dinv.physics.GaussianNoise(sigma=0.3)
    )
    x_true = prior.sample(1, generator=g).reshape(1, 1, 4, 4)
    y = physics.A(x_true) + 0.3 * torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    score = posterior_score(prior.score, y, physics)  # σ_n read from the physics
    assert score.noise_sigma == pytest.approx(0.3)  # a float32 tensor in deepinv
    posterior = exact_posterior(prior, torch.diag(mask.flatten()), y.flatten(), score.noise_sigma)
    x = torch.randn(50, 1, 4, 4, generator=g, dtype=torch.float64)
    got = score(x, 0.0)
    assert got.shape == x.shape
    assert (got - posterior.score(x)).abs().max() < 1e-9
    # A generic LinearPhysics built from callables goes through the same duck-typed path.
    matrix = torch.randn(5, 16, generator=g, dtype=torch.float64)
    linear = dinv.physics.LinearPhysics(
        A=lambda v: v.reshape(v.shape[0], -1) @ matrix.T,
        A_adjoint=lambda r: (r @ matrix).reshape(-1, 1, 4, 4),
    )
    y5 = torch.randn(1, 5, generator=g, dtype=torch.float64)
    posterior5 = exact_posterior(prior, matrix, y5[0], 0.5)
    got5 = posterior_score(prior.score, y5, linear, 0.5)(x, 0.0)
    assert (got5 - posterior5.score(x)).abs().max() < 1e-9


def test_ula_with_posterior_score_matches_exact_posterior_mean_and_covariance():
    prior = two_mode_prior()
    posterior = exact_posterior(prior, MATRIX, Y, NOISE_SIGMA)
    n_chains, step_size = 10_000, 0.005
    g = torch.Generator().manual_seed(0)
    x0 = 1.5 * torch.randn(n_chains, 2, generator=g, dtype=torch.float64)
    x = langevin(
        posterior_score(prior.score, Y, MATRIX, NOISE_SIGMA),
        x0,
        sigma=0.0,  # the posterior score is exact at σ = 0
        step_size=step_size,
        n_steps=1500,
        generator=g,
    )
    mean, cov = posterior.mean(), posterior.covariance()
    mean_se = (cov.diagonal() / n_chains).sqrt()
    z = ((x.mean(0) - mean) / mean_se).abs().max().item()
    assert z < 4, f"posterior mean {x.mean(0).tolist()} vs exact {mean.tolist()}: {z:.2f} SE"
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    cov_se = products.reshape(n_chains, 4).std(0).reshape(2, 2) / math.sqrt(n_chains)
    # ULA inflates a Gaussian's variance λ by 1/(1 − ε/(2λ)); at the narrowest posterior
    # component that is < 1 %, allowed on top of 4 standard errors.
    lam_min = torch.linalg.eigvalsh(posterior.covs).min().item()
    bias = (1 / (1 - step_size / (2 * lam_min)) - 1) * cov.abs()
    excess = ((torch.cov(x.T) - cov).abs() - (4 * cov_se + bias)).max().item()
    assert excess < 0, (
        f"posterior covariance {torch.cov(x.T).tolist()} vs exact {cov.tolist()} "
        f"(SE {cov_se.tolist()}): over the bound by {excess:.4f}"
    )


def test_annealed_posterior_sampling_runs_on_image_batches():
    # The likelihood term at σ > 0 is an approximation (documented); at the last level the
    # chains target N(0, (1 + σ_L²)I) × N(y; Ax, σ_n²I), whose observed pixels have mean
    # y / (σ_n² / (1 + σ_L²) + 1). Checks the plumbing on [B, 1, 4, 4] images.
    g = torch.Generator().manual_seed(2)
    prior = GaussianMixture([1.0], torch.zeros(1, 16), [1.0])
    matrix = torch.eye(16)[:8]
    noise_sigma, sigma_last, n_chains = 0.5, 0.1, 500
    y = torch.randn(1, 8, generator=g)
    x = annealed_langevin(
        posterior_score(prior.score, y, matrix, noise_sigma),
        torch.randn(n_chains, 1, 4, 4, generator=g),
        geometric_sigmas(1.0, sigma_last, 4),
        n_steps_each=300,
        step_lr=2e-3,  # α_0 = 0.2: stable for the likelihood's curvature 1/σ_n² = 4
        final_denoise=False,
        generator=g,
    )
    assert x.shape == (n_chains, 1, 4, 4) and x.dtype == torch.float32
    precision = 1 / (1 + sigma_last**2) + 1 / noise_sigma**2
    target = y[0] / noise_sigma**2 / precision
    se = math.sqrt(1 / precision / n_chains)
    error = (x.reshape(n_chains, 16)[:, :8].mean(0) - target).abs().max().item()
    assert error < 5 * se, f"observed-pixel means off by {error:.4f} (bound 5 SE = {5 * se:.4f})"


def test_posterior_score_argument_errors():
    prior = two_mode_prior()
    with pytest.raises(TypeError, match="physics must be"):
        posterior_score(prior.score, Y, "blur", 0.5)
    with pytest.raises(ValueError, match="noise_sigma is required"):
        posterior_score(prior.score, Y, MATRIX)
    with pytest.raises(ValueError, match="noise_sigma must be finite and > 0"):
        posterior_score(prior.score, Y, MATRIX, 0.0)
    with pytest.raises(ValueError, match=r"the matrix is \[m, d\] = \[1, 2\]"):
        posterior_score(prior.score, Y, MATRIX, 0.5)(torch.zeros(4, 3, dtype=torch.float64), 0.0)
