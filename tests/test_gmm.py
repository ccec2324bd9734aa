"""The Gaussian-mixture oracle against quadrature, grid search, finite differences and textbook formulas."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from scoregen import GaussianMixture, tweedie_score
from scoregen.gmm import PRESETS, preset
from tests.conftest import random_mixture


def _np_posterior_1d(mix: GaussianMixture, y: float, sigma: float):
    """Unnormalised 1-D posterior density p(x) N(y; x, σ²) from scipy, independent of scoregen."""
    w = mix.weights.numpy()
    mu = mix.means[:, 0].numpy()
    sd = np.sqrt(mix.covs[:, 0, 0].numpy())

    def density(x):  # works on a scalar (for quad) and on an array (for the grid)
        x = np.asarray(x, dtype=float)[..., None]
        prior = np.sum(w * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), -1)
        return prior * np.exp(-0.5 * ((y - x[..., 0]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))

    return density, mu, sd


def _random_1d(seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    n_components = 1 + seed % 4
    return random_mixture(g, n_components, 1, cov_type="scalar", spread=2.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 3.0])
def test_posterior_mean_and_map_match_quadrature_1d(seed, sigma):
    mix = _random_1d(seed)
    ys = torch.tensor([[-3.0], [-0.7], [0.0], [0.4], [2.2]], dtype=torch.float64)
    means = mix.denoise(ys, sigma)[:, 0]
    maps = mix.map(ys, sigma)[:, 0]
    for i, y in enumerate(ys[:, 0].tolist()):
        density, mu, sd = _np_posterior_1d(mix, y, sigma)
        lo, hi = (
            min(mu.min() - 10 * sd.max(), y - 10 * sigma),
            max(mu.max() + 10 * sd.max(), y + 10 * sigma),
        )
        points = sorted(set(mu.tolist() + [y]))
        z = integrate.quad(density, lo, hi, points=points, epsabs=0, epsrel=1e-12, limit=500)[0]
        m = (
            integrate.quad(
                lambda x: x * density(x), lo, hi, points=points, epsabs=0, epsrel=1e-12, limit=500
            )[0]
            / z
        )
        assert abs(means[i].item() - m) < 1e-6, (
            f"posterior mean {means[i].item()} vs quadrature {m} (y={y}, σ={sigma})"
        )
        # MAP: dense grid, then a bounded 1-D refinement around the best grid point
        grid = np.linspace(lo, hi, 400_001)
        best = grid[density(grid).argmax()]
        h = (grid[1] - grid[0]) * 2
        res = optimize.minimize_scalar(
            lambda x: -np.log(density(x)),
            bounds=(best - h, best + h),
            method="bounded",
            options={"xatol": 1e-11},
        )
        assert abs(maps[i].item() - res.x) < 1e-6, (
            f"MAP {maps[i].item()} vs grid search {res.x} (y={y}, σ={sigma})"
        )


@pytest.mark.parametrize("seed", range(3))
def test_map_matches_multistart_optimizer_2d(seed):
    g = torch.Generator().manual_seed(100 + seed)
    mix = random_mixture(g, 4, 2, cov_type="full", spread=2.0)
    sigma = 0.8
    ys = torch.randn(6, 2, generator=g, dtype=torch.float64) * 2
    maps = mix.map(ys, sigma)
    for i in range(ys.shape[0]):
        post = mix.posterior(ys[i], sigma)

        def neg(x):
            return -post.log_prob(torch.as_tensor(x)[None]).item()

        starts = [m.numpy() for m in post.means] + [np.zeros(2)]
        best = min(
            (
                optimize.minimize(
                    neg,
                    s,
                    method="Nelder-Mead",
                    options={"xatol": 1e-11, "fatol": 1e-14, "maxiter": 20000},
                )
                for s in starts
            ),
            key=lambda r: r.fun,
        )
        err = np.abs(maps[i].numpy() - best.x).max()
        assert err < 1e-6, f"2-D MAP off by {err:.3g} from Nelder-Mead (y={ys[i].tolist()})"
        assert post.log_prob(maps[i][None]).item() >= -best.fun - 1e-10


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 2.0])
def test_score_matches_finite_differences_of_log_prob(dim, sigma):
    g = torch.Generator().manual_seed(dim)
    mix = random_mixture(g, 3, dim)
    x = torch.randn(4, dim, generator=g, dtype=torch.float64) * 2
    h = 1e-5
    eye = torch.eye(dim, dtype=torch.float64)
    fd = torch.stack(
        [
            (mix.log_prob(x + h * eye[j], sigma) - mix.log_prob(x - h * eye[j], sigma)) / (2 * h)
            for j in range(dim)
        ],
        dim=1,
    )
    err = (mix.score(x, sigma) - fd).abs().max().item()
    assert err < 1e-6, f"score vs central differences: max error {err:.3g} > 1e-6"


@pytest.mark.parametrize("cov_type", ["scalar", "diag", "full"])
def test_tweedie_of_exact_denoiser_is_exact_score(cov_type):
    g = torch.Generator().manual_seed(7)
    mix = random_mixture(g, 5, 3, cov_type=cov_type)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * 3
    score = tweedie_score(mix.denoise)
    for sigma in (0.05, 0.5, 4.0):
        err = (score(x, sigma) - mix.score(x, sigma)).abs().max().item()
        assert err < 1e-10, f"Tweedie(denoise) vs score at σ={sigma}: {err:.3g}"
    sigmas = torch.linspace(0.1, 3.0, 64, dtype=torch.float64)
    err = (score(x, sigmas) - mix.score(x, sigmas)).abs().max().item()
    assert err < 1e-10, f"per-example σ: {err:.3g}"


def test_log_prob_matches_scipy_and_blurred():
    g = torch.Generator().manual_seed(3)
    mix = random_mixture(g, 3, 3)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    sigma = 0.7
    ref = np.log(
        sum(
            w * stats.multivariate_normal(m, c + sigma**2 * np.eye(3)).pdf(x.numpy())
            for w, m, c in zip(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy())
        )
    )
    np.testing.assert_allclose(mix.log_prob(x, sigma).numpy(), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mix.blurred(sigma).log_prob(x).numpy(), ref, rtol=0, atol=1e-10)


def test_covariance_types_agree():
    g = torch.Generator().manual_seed(11)
    variances = 0.3 + torch.rand(3, generator=g, dtype=torch.float64)
    means = torch.randn(3, 2, generator=g, dtype=torch.float64) * 2
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    mixes = [
        GaussianMixture(w, means, variances),
        GaussianMixture(w, means, variances[:, None].expand(3, 2)),
        GaussianMixture(w, means, variances[:, None, None] * eye),
    ]
    y = torch.randn(20, 2, generator=g, dtype=torch.float64) * 2
    for other in mixes[1:]:
        for method in ("log_prob", "score"):
            a, b = getattr(mixes[0], method)(y, 0.4), getattr(other, method)(y, 0.4)
            assert (a - b).abs().max() < 1e-12, method
        assert (mixes[0].denoise(y, 0.4) - other.denoise(y, 0.4)).abs().max() < 1e-12
        assert (mixes[0].map(y, 0.4) - other.map(y, 0.4)).abs().max() < 1e-8


def test_posterior_weights_sum_to_one_and_mean_is_denoiser():
    g = torch.Generator().manual_seed(5)
    mix = random_mixture(g, 6, 3)
    for y in torch.randn(5, 3, generator=g, dtype=torch.float64) * 3:
        post = mix.posterior(y, 0.9)
        assert abs(post.weights.sum().item() - 1) < 1e-12
        assert (post.mean() - mix.denoise(y[None], 0.9)[0]).abs().max() < 1e-12


def test_posterior_of_one_gaussian_is_textbook():
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(1, 3, generator=g, dtype=torch.float64)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64)
    mix = GaussianMixture([1.0], mu, cov[None])
    y = torch.randn(3, generator=g, dtype=torch.float64)
    sigma = 0.6
    prec = torch.linalg.inv(cov) + torch.eye(3, dtype=torch.float64) / sigma**2
    s = torch.linalg.inv(prec)
    m = s @ (torch.linalg.inv(cov) @ mu[0] + y / sigma**2)
    post = mix.posterior(y, sigma)
    assert (post.means[0] - m).abs().max() < 1e-12
    assert (post.covs[0] - s).abs().max() < 1e-12
    assert (
        mix.map(y[None], sigma)[0] - m
    ).abs().max() < 1e-10  # the mode of a Gaussian is its mean


def test_sample_moments_within_sampling_error():
    g = torch.Generator().manual_seed(0)
    mix = random_mixture(g, 4, 3)
    n = 200_000
    x = mix.sample(n, generator=g)
    mean, cov = mix.mean(), mix.covariance()
    # Standard errors from the sample itself; 5 standard errors is a 1-in-10^6 event per entry.
    se_mean = (torch.diagonal(cov) / n).sqrt()
    err = (x.mean(0) - mean).abs()
    assert (err < 5 * se_mean).all(), f"mean error {err.tolist()} vs 5·SE {(5 * se_mean).tolist()}"
    centred = x - mean
    prods = centred[:, :, None] * centred[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    err = (prods.mean(0) - cov).abs()
    assert (err < 5 * se_cov).all(), (
        f"covariance error {err.max():.3g}, 5·SE {(5 * se_cov).min():.3g}"
    )


def test_sampling_is_reproducible_and_weighted():
    mix = preset("ncsn2d")
    a = mix.sample(1000, generator=torch.Generator().manual_seed(1))
    b = mix.sample(1000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    n = 100_000
    frac = (
        (mix.sample(n, generator=torch.Generator().manual_seed(2))[:, 0] > 0).double().mean().item()
    )
    bound = 5 * math.sqrt(0.8 * 0.2 / n)
    assert abs(frac - 0.8) < bound, f"weight of the (5, 5) mode {frac:.4f}, bound 0.8 ± {bound:.4f}"


@pytest.mark.parametrize("sigma", [1e-4, 1e3])
def test_extremes_are_finite_with_correct_limits(sigma):
    g = torch.Generator().manual_seed(9)
    mix = random_mixture(g, 50, 784, cov_type="diag", spread=1.0)
    y = mix.sample(4, generator=g) + sigma * torch.randn(4, 784, generator=g, dtype=torch.float64)
    for value in (mix.log_prob(y, sigma), mix.score(y, sigma), mix.denoise(y, sigma)):
        assert torch.isfinite(value).all()
    d = mix.denoise(y, sigma)
    if sigma < 1:
        # D(y) − y = σ² s(y): of order σ² · |y − μ| / λ, far below σ.
        assert (d - y).abs().max() < 1e-5
    else:
        # As σ → ∞ the posterior forgets y: D → prior mean up to O(λ/σ²)·|y|.
        assert (d - mix.mean()).abs().max() < 2e-2
    assert torch.isfinite(mix.map(y[:1], sigma)).all()


def test_full_covariance_high_dimension_is_finite():
    g = torch.Generator().manual_seed(4)
    mix = random_mixture(g, 3, 784, cov_type="full", spread=1.0)
    y = mix.sample(2, generator=g)
    for sigma in (1e-4, 1.0, 1e3):
        assert torch.isfinite(mix.score(y, sigma)).all()
        assert torch.isfinite(mix.denoise(y, sigma)).all()
        assert torch.isfinite(mix.log_prob(y, sigma)).all()


def test_any_shape_and_dtype_in_same_out():
    g = torch.Generator().manual_seed(1)
    mix = random_mixture(g, 3, 16, cov_type="diag")
    x = torch.randn(5, 1, 4, 4, generator=g)
    s = mix.score(x, 0.5)
    assert s.shape == x.shape and s.dtype == torch.float32
    ref = mix.score(x.double().reshape(5, 16), 0.5).reshape(5, 1, 4, 4)
    assert (s.double() - ref).abs().max() < 1e-5


def test_presets_are_valid():
    assert set(PRESETS) >= {"ncsn2d", "bimodal1d", "ring8", "grid25"}
    ncsn = preset("ncsn2d")
    assert ncsn.weights.tolist() == [0.8, 0.2]
    assert ncsn.means.tolist() == [[5.0, 5.0], [-5.0, -5.0]]
    assert preset("ring8").n_components == 8 and preset("grid25").n_components == 25
    # the 1-D preset's posterior mean and MAP disagree visibly at σ = 1 between the modes
    bi = preset("bimodal1d")
    y = torch.tensor([[0.0]], dtype=torch.float64)
    assert abs(bi.denoise(y, 1.0) - bi.map(y, 1.0)).item() > 0.5
    with pytest.raises(ValueError, match="unknown mixture preset 'nope'"):
        preset("nope")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covs=[1.0, 1.0]), "weights must sum to 1"),
        (
            dict(weights=[1.2, -0.2], means=[[0.0], [1.0]], covs=[1.0, 1.0]),
            "weights must be finite and non-negative",
        ),
        (
            dict(weights=[0.5, 0.5], means=[[0.0], [1.0], [2.0]], covs=[1.0, 1.0]),
            "means must have shape",
        ),
        (
            dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[1.0, 1.0, 1.0]),
            "covs must have shape",
        ),
        (
            dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[1.0, -1.0]),
            "covs must be positive definite",
        ),
        (
            dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [0.0, 1.0]]]),
            "covs must be symmetric",
        ),
    ],
)
def test_bad_construction_raises_naming_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_bad_calls_raise_naming_parameter():
    mix = preset("ncsn2d")
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        mix.score(torch.zeros(3, 2), -1.0)
    with pytest.raises(ValueError, match=r"x must be a batch \[B, 2\]"):
        mix.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="sigma must be a float or a"):
        mix.score(torch.zeros(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        mix.posterior(torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        mix.sample(-1)
