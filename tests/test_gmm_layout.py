"""The oracle's batch-last, expanded-form code against the plain [B, K, d] formula, term by term.

The reference below is written from the mixture's raw parameters (weights, means, the
covariances as given) and the module docstring's formulas, one component axis at a time, the
way the oracle computed before its rewrite. float64 must agree to 1e-12 (relative to the
size of each quantity), float32 to 1e-4.
"""

import math

import pytest
import torch

import scoregen.gmm as gmm_module
from scoregen import GaussianMixture
from scoregen.gmm import PRESETS, preset


def reference(weights, means, covs, x, sigma):
    """log p_σ(x) [B], responsibilities [B, K], score [B, d] and posterior mean [B, d].

    Σ_k = U_k diag(λ_k) U_kᵀ; z_k = U_kᵀ(x − μ_k) [B, K, d]; Σ_k + σ²I has eigenvalues λ + σ².
    """
    n_comp, dim = means.shape
    eye = torch.eye(dim, dtype=means.dtype).expand(n_comp, dim, dim)
    if covs.ndim == 1:
        lam, vecs = covs[:, None].expand(n_comp, dim), eye
    elif covs.ndim == 2:
        lam, vecs = covs, eye
    else:
        lam, vecs = torch.linalg.eigh(covs)
    sigma2 = sigma**2 if not isinstance(sigma, torch.Tensor) else sigma[:, None, None] ** 2
    z = torch.einsum("kji,bkj->bki", vecs, x[:, None, :] - means[None])
    var = lam[None] + sigma2
    joint = torch.log(weights) - 0.5 * (
        (z**2 / var).sum(-1) + torch.log(var).sum(-1) + dim * math.log(2 * math.pi)
    )
    resp = torch.softmax(joint, dim=-1)
    score = -(resp[..., None] * torch.einsum("kij,bkj->bki", vecs, z / var)).sum(1)
    post_means = means + torch.einsum("kij,bkj->bki", vecs, lam * z / var)
    return torch.logsumexp(joint, -1), resp, score, (resp[..., None] * post_means).sum(1)


def random_parameters(generator, n_comp, dim, cov_type, spread=1.0):
    weights = torch.rand(n_comp, generator=generator, dtype=torch.float64) + 0.2
    weights = weights / weights.sum()
    means = spread * torch.randn(n_comp, dim, generator=generator, dtype=torch.float64)
    if cov_type == "scalar":
        covs = 0.2 + torch.rand(n_comp, generator=generator, dtype=torch.float64)
    elif cov_type == "diag":
        covs = 0.2 + torch.rand(n_comp, dim, generator=generator, dtype=torch.float64)
    else:
        a = torch.randn(n_comp, dim, dim, generator=generator, dtype=torch.float64)
        covs = a @ a.transpose(-1, -2) / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
    return weights, means, covs


def smallest_variance(covs) -> float:
    return float(torch.linalg.eigvalsh(covs).min() if covs.ndim == 3 else covs.min())


def assert_matches(mix, params, x, sigma, rtol=1e-12, what=""):
    """Every output of ``mix`` against the reference, each relative to its natural size."""
    weights, means, covs = params
    log_p, resp, score, post_mean = reference(weights, means, covs, x, sigma)
    sigma2 = sigma**2 if isinstance(sigma, float) else sigma**2
    # a score's unit: that of a point one standard deviation from its component's mean
    unit = 1.0 / torch.sqrt(torch.as_tensor(smallest_variance(covs) + sigma2, dtype=x.dtype))
    checks = {
        "log_prob": (mix.log_prob(x, sigma) - log_p).abs() / log_p.abs().clamp_min(1.0),
        # the joint log-densities are known to rtol of their size, ~|log p|: so are the
        # differences that set the responsibilities
        "responsibilities": (mix.responsibilities(x, sigma) - resp).abs().amax(1)
        / log_p.abs().clamp_min(1.0),
        "score": (mix.score(x, sigma) - score).norm(dim=1)
        / torch.maximum(score.norm(dim=1), unit.expand(x.shape[0])),
    }
    if not (isinstance(sigma, float) and sigma == 0.0):
        size = x.norm(dim=1) + means.norm(dim=1).max() + math.sqrt(float(covs.max()))
        checks["denoise"] = (mix.denoise(x, sigma) - post_mean).norm(dim=1) / size
    for name, err in checks.items():
        worst = err.max().item()
        assert worst <= rtol, f"{what} {name}: relative error {worst:.3g} > {rtol:g}"


def points(mix_params, n, generator, sigma):
    """Draws near the mixture, blurred by σ, and a few far away (|x| up to 1e6 spreads)."""
    weights, means, covs = mix_params
    mix = GaussianMixture(weights, means, covs)
    near = mix.sample(n, generator=generator)
    near = near + torch.randn(near.shape, generator=generator, dtype=near.dtype) * (
        sigma if isinstance(sigma, float) else sigma[:n, None]
    )
    scale = torch.tensor([10.0, 1e3, 1e6], dtype=torch.float64)[:, None]
    far = scale * torch.randn(3, means.shape[1], generator=generator, dtype=torch.float64)
    return torch.cat([near, far])


@pytest.mark.parametrize(
    "cov_type, n_comp, dim",
    [
        ("scalar", 1, 1),
        ("scalar", 3, 2),
        ("diag", 3, 2),
        ("full", 3, 2),
        ("scalar", 50, 16),
        ("diag", 50, 16),
        ("full", 50, 16),
        ("scalar", 50, 784),
        ("diag", 50, 784),
        ("full", 4, 64),
    ],
)
@pytest.mark.parametrize("sigma", [0.0, 1e-4, 0.5, 1e3, "per-example"])
def test_matches_the_componentwise_formula_in_float64(cov_type, n_comp, dim, sigma):
    g = torch.Generator().manual_seed(n_comp * 1000 + dim)
    params = random_parameters(g, n_comp, dim, cov_type)
    n = 40
    if sigma == "per-example":  # from 1e-4 to 1e3, and one zero
        sigma = torch.logspace(-4, 3, n + 3, dtype=torch.float64)
        sigma[0] = 0.0
    x = points(params, n, g, sigma)
    assert_matches(GaussianMixture(*params), params, x, sigma, what=f"{cov_type} σ={sigma}")


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("sigma", [0.0, 1e-4, 0.1, 1.0, 1e3])
def test_presets_match_the_componentwise_formula_in_float64(name, sigma):
    mix = preset(name)
    params = (mix.weights, mix.means, mix.eigvals[:, 0])  # the presets are isotropic
    g = torch.Generator().manual_seed(0)
    x = points(params, 2000, g, sigma)
    assert_matches(mix, params, x, sigma, what=name)


def test_large_batches_in_many_chunks_match(monkeypatch):
    # a few hundred rows per chunk: the chunk loop and its seams are exercised
    monkeypatch.setattr(gmm_module, "_CHUNK_ELEMENTS", 1 << 12)
    monkeypatch.setattr(gmm_module, "_THREADED_CHUNK_ELEMENTS", 1 << 12)
    g = torch.Generator().manual_seed(3)
    for cov_type in ("scalar", "diag", "full"):
        params = random_parameters(g, 6, 3, cov_type, spread=2.0)
        x = points(params, 3000, g, 0.3)
        assert_matches(GaussianMixture(*params), params, x, 0.3, what=cov_type)
        sigma = torch.rand(x.shape[0], generator=g, dtype=torch.float64)
        assert_matches(GaussianMixture(*params), params, x, sigma, what=f"{cov_type} [B] σ")


def tight_far_mixture():
    """Two tight components 1e4 spreads from the mixture mean: there x_c·μ_c / v is 1e12 times
    the squared distance to a component, the worst case of the expanded form."""
    weights = torch.tensor([0.4, 0.3, 0.3], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [1e4, 0.0], [1e4 + 1e-2, 0.0]], dtype=torch.float64)
    covs = torch.tensor([1.0, 1e-6, 1e-6], dtype=torch.float64)
    x = torch.tensor(
        [[1e4 + 5e-3, 0.0], [1e4, 1e-3], [1e4 + 3e-3, 2e-3], [1e4 - 1e-3, 0.0], [3.0, 1.0]],
        dtype=torch.float64,
    )
    return (weights, means, covs), x


@pytest.mark.parametrize("sigma", [0.0, 1e-4, 1e-3])
def test_tight_components_far_from_the_centre_stay_exact(sigma):
    params, x = tight_far_mixture()
    assert_matches(GaussianMixture(*params), params, x, sigma, what="tight, far")
    per_example = torch.full((x.shape[0],), sigma, dtype=torch.float64)
    per_example[0] = 2 * sigma
    assert_matches(GaussianMixture(*params), params, x, per_example, what="tight, far, [B]")


def test_without_the_rounding_guard_the_expanded_form_would_fail(monkeypatch):
    # The case above is a real one: with the guard off the expanded form is far off.
    monkeypatch.setattr(gmm_module, "_EXPANSION_LOSS", math.inf)
    params, x = tight_far_mixture()
    _, resp, _, _ = reference(*params, x, 0.0)
    err = (GaussianMixture(*params).responsibilities(x, 0.0) - resp).abs().max().item()
    assert err > 1e-6, f"unguarded responsibilities off by only {err:.3g}"


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("sigma", [0.0, 1e-4, 0.1, 0.5, 2.0, 1e3])
def test_float32_is_within_1e4_of_float64_on_the_presets(name, sigma):
    mix64 = preset(name)
    mix32 = preset(name, dtype=torch.float32)
    assert mix32.dtype == torch.float32 and mix64.to(dtype=torch.float32).dtype == torch.float32
    g = torch.Generator().manual_seed(1)
    x = mix64.sample(20_000, generator=g)
    x = (x + (sigma + 0.2) * torch.randn(x.shape, generator=g, dtype=x.dtype)).float()
    x64 = x.double()
    unit = 1.0 / math.sqrt(float(mix64.eigvals.min()) + sigma**2)
    for mix in (mix32, mix64.to(dtype=torch.float32)):
        s64, s32 = mix64.score(x64, sigma), mix.score(x, sigma)
        assert s32.dtype == torch.float32
        err = ((s32.double() - s64).norm(dim=1) / s64.norm(dim=1).clamp_min(unit)).max().item()
        assert err < 1e-4, f"float32 score: relative error {err:.3g}"
        lp64 = mix64.log_prob(x64, sigma)
        err = ((mix.log_prob(x, sigma).double() - lp64).abs() / lp64.abs().clamp_min(1)).max()
        assert err < 1e-4, f"float32 log_prob: relative error {err:.3g}"
        err = (mix.responsibilities(x, sigma).double() - mix64.responsibilities(x64, sigma)).abs()
        assert err.max() < 1e-4, f"float32 responsibilities off by {err.max():.3g}"
        if sigma > 0:
            d64 = mix64.denoise(x64, sigma)
            size = d64.norm(dim=1) + x64.norm(dim=1) + 1
            err = ((mix.denoise(x, sigma).double() - d64).norm(dim=1) / size).max()
            assert err < 1e-4, f"float32 denoise: relative error {err:.3g}"


def test_float32_mixture_computes_in_float32_and_answers_in_the_input_dtype():
    mix = preset("grid25", dtype=torch.float32)
    x = torch.randn(10, 2, dtype=torch.float64)
    assert mix.score(x, 0.5).dtype == torch.float64
    assert mix.score(x.float(), 0.5).dtype == torch.float32


@pytest.mark.parametrize("cov_type", ["scalar", "diag", "full"])
def test_log_prob_gradient_by_autograd_is_the_score(cov_type):
    # autograd takes the out-of-place path (no buffer is overwritten)
    g = torch.Generator().manual_seed(8)
    params = random_parameters(g, 5, 3, cov_type, spread=2.0)
    mix = GaussianMixture(*params)
    for sigma in (0.0, 0.4, torch.rand(8, generator=g, dtype=torch.float64)):
        x = (3 * torch.randn(8, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
        (grad,) = torch.autograd.grad(mix.log_prob(x, sigma).sum(), x)
        err = (grad - mix.score(x.detach(), sigma)).abs().max().item()
        assert err < 1e-12, f"autograd of log_prob vs score: {err:.3g}"
    # and through the rows the guard redoes
    params, x = tight_far_mixture()
    mix = GaussianMixture(*params)
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(x, 1e-3).sum(), x)
    _, _, score, _ = reference(*params, x.detach(), 1e-3)
    assert ((grad - score).norm(dim=1) / score.norm(dim=1).clamp_min(1.0)).max() < 1e-9


def test_one_sigma_as_a_tensor_takes_the_same_path_as_a_float():
    mix = preset("ring8")
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    for method in ("log_prob", "responsibilities", "score", "denoise"):
        a = getattr(mix, method)(x, 0.3)
        assert torch.equal(a, getattr(mix, method)(x, torch.full((50,), 0.3, dtype=torch.float64)))
        assert torch.equal(a, getattr(mix, method)(x, torch.tensor(0.3, dtype=torch.float64)))


def test_empty_batch_gives_empty_outputs():
    mix = preset("ncsn2d")
    x = torch.zeros(0, 2)
    assert mix.log_prob(x).shape == (0,)
    assert mix.responsibilities(x).shape == (0, 2)
    assert mix.score(x, 0.5).shape == (0, 2)
    assert mix.denoise(x, torch.zeros(0)).shape == (0, 2)


def test_outputs_are_contiguous():
    mix = preset("grid25")
    x = torch.randn(100, 2, dtype=torch.float64)
    for out in (mix.score(x, 0.2), mix.denoise(x, 0.2), mix.responsibilities(x, 0.2)):
        assert out.is_contiguous()
