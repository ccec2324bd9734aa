"""The training objectives: each term of the formula, the weightings' equivalences, and the
score-matching losses against closed forms (a linear score has a quadratic objective)."""

import math

import pytest
import torch

from scoregen.gmm import GaussianMixture, preset
from scoregen.losses import (
    dae_loss,
    esm_loss,
    loss_weight,
    noise2noise_loss,
    noisy_pair,
    ssm_loss,
)


class Recorder:
    """A denoiser that records what it is called with and returns a fixed answer."""

    def __init__(self, answer=None):
        self.calls = []
        self.answer = answer

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return torch.zeros_like(x) if self.answer is None else self.answer(x, sigma)


def test_dae_loss_feeds_x_plus_sigma_z_and_per_example_sigma(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 2, generator=gen).to(device)
    z = torch.randn(6, 3, 2, generator=gen).to(device)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 8.0], device=device)
    denoiser = Recorder()
    loss = dae_loss(denoiser, x, sigma, noise=z)
    ((noisy, seen_sigma),) = denoiser.calls
    torch.testing.assert_close(noisy, x + sigma[:, None, None] * z)
    torch.testing.assert_close(seen_sigma, sigma)
    # D = 0, so the per-example loss is the mean of x² over the example's 6 numbers
    assert loss.shape == (6,)
    torch.testing.assert_close(loss, x.square().flatten(1).mean(1))


def test_dae_loss_of_identity_denoiser_is_sigma2_mean_z2():
    gen = torch.Generator().manual_seed(1)
    x, z = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    loss = dae_loss(lambda y, s: y, x, 0.3, noise=z)  # float σ is broadcast
    torch.testing.assert_close(loss, 0.09 * z.square().mean(1))


def test_loss_weights_follow_their_formulas():
    sigma = torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)
    torch.testing.assert_close(loss_weight(sigma, "none"), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(loss_weight(sigma, "ncsn"), 1 / sigma**2)
    sd = 0.7
    expected = (sigma**2 + sd**2) / (sigma * sd) ** 2
    torch.testing.assert_close(loss_weight(sigma, "edm", sigma_data=sd), expected)
    with pytest.raises(ValueError, match="weighting must be one of"):
        loss_weight(sigma, "sigma3")


def test_ncsn_weighting_equals_sigma2_weighted_score_matching_loss():
    # NCSN: σ² ‖s(y) − ∇_y log N(y; x, σ²I)‖² with s = (D(y) − y)/σ² (Tweedie); in denoiser
    # units that is ‖D − x‖²/σ²: the "ncsn" weighting times d.
    gen = torch.Generator().manual_seed(2)
    x, z = (
        torch.randn(8, 3, generator=gen, dtype=torch.float64),
        torch.randn(8, 3, generator=gen, dtype=torch.float64),
    )
    sigma = torch.rand(8, generator=gen, dtype=torch.float64) + 0.2

    def denoiser(y, s):
        return 0.6 * y + 0.1 * y**2

    y = x + sigma[:, None] * z
    score = (denoiser(y, sigma) - y) / sigma[:, None] ** 2
    target = -(y - x) / sigma[:, None] ** 2  # ∇_y log N(y; x, σ²I)
    ncsn = sigma**2 * (score - target).square().sum(1)
    ours = dae_loss(denoiser, x, sigma, noise=z, weighting="ncsn") * 3
    torch.testing.assert_close(ours, ncsn)


def test_dae_loss_rejects_sigma_of_wrong_length():
    with pytest.raises(ValueError, match=r"\[B\] = \[4\]"):
        dae_loss(lambda y, s: y, torch.zeros(4, 2), torch.ones(3))


def test_noisy_pair_gives_independent_standard_noises():
    n = 20_000
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    first, second = noisy_pair(x, 0.5, generator=torch.Generator().manual_seed(4))
    z1, z2 = ((first - x) / 0.5).flatten(), ((second - x) / 0.5).flatten()
    m = z1.numel()
    # sample correlation of independent normals has sd 1/sqrt(m); variance of N(0,1) has sd sqrt(2/m)
    corr = torch.corrcoef(torch.stack([z1, z2]))[0, 1].item()
    assert abs(corr) < 4 / math.sqrt(m), f"corr(z1, z2) = {corr:.4f}, bound {4 / math.sqrt(m):.4f}"
    for z in (z1, z2):
        var = z.var().item()
        assert abs(var - 1) < 4 * math.sqrt(2 / m), f"var = {var:.4f}"


def test_noise2noise_loss_exceeds_clean_loss_by_target_noise_variance():
    # E‖D(y₁) − y₂‖²/d − E‖D(y₁) − x‖²/d = σ² when y₂ − x = σz₂ is independent of y₁.
    mix = preset("bimodal1d")
    gen = torch.Generator().manual_seed(5)
    n, sigma = 50_000, 0.8
    x = mix.sample(n, generator=gen)
    noisy, target = noisy_pair(x, sigma, generator=gen)

    def denoiser(y, s):
        return mix.denoise(y, sigma)

    clean = dae_loss(denoiser, x, sigma, noise=(noisy - x) / sigma)
    n2n = noise2noise_loss(denoiser, noisy, target, sigma)
    diff = n2n - clean
    se = diff.std().item() / math.sqrt(n)
    gap = diff.mean().item()
    assert abs(gap - sigma**2) < 4 * se, f"gap {gap:.4f}, expected {sigma**2} ± {4 * se:.4f}"


def test_esm_loss_of_linear_score_is_half_norm_plus_trace():
    gen = torch.Generator().manual_seed(6)
    W = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    loss = esm_loss(lambda v, s: v @ W.T + b, x)
    expected = 0.5 * (x @ W.T + b).square().sum(1) + torch.trace(W)
    torch.testing.assert_close(loss, expected)


def test_esm_loss_takes_image_shaped_batches():
    # s(x) = −x on [B, 1, 2, 2]: ½‖x‖² − 4 (the Jacobian is −I in 4 dimensions)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    loss = esm_loss(lambda v, s: -v, x)
    torch.testing.assert_close(loss, 0.5 * x.flatten(1).square().sum(1) - 4)


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
def test_ssm_loss_is_unbiased_for_esm(projection):
    # E_v[½(vᵀs)² + vᵀJv] = ½‖s‖² + tr J when E[vvᵀ] = I; checked on a nonlinear score
    # (the exact score of a 2-D mixture) with the standard error of the projections' mean.
    mix = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.5, 1.0]], [0.5, 1.0])
    x = mix.sample(64, generator=torch.Generator().manual_seed(8))
    esm = esm_loss(mix.score, x, 0.3)
    m = 2000
    gen = torch.Generator().manual_seed(9)
    # the mean over m projections, per example
    draws = ssm_loss(mix.score, x, 0.3, n_projections=m, projection=projection, generator=gen)
    per_projection = torch.stack(
        [ssm_loss(mix.score, x, 0.3, projection=projection, generator=gen) for _ in range(200)]
    )
    # the per-projection spread gives the standard error of the m-projection mean
    se = per_projection.std(0) / math.sqrt(m)
    z = ((draws - esm) / se).abs().max().item()
    # 64 examples: a max |z| of 4 has probability < 64 * 6.3e-5 = 0.4 % under the null
    assert z < 4.0, f"max |ssm − esm| / se = {z:.2f} over 64 examples ({projection})"


def test_ssm_loss_rejects_unknown_projection():
    with pytest.raises(ValueError, match="projection must be one of"):
        ssm_loss(lambda v, s: v, torch.zeros(2, 2), projection="sphere")


def test_esm_minimiser_for_linear_score_is_minus_inverse_covariance():
    # ½E‖Wx + b‖² + tr W is quadratic; its minimiser is W = −Ĉ⁻¹, b = Ĉ⁻¹μ̂ with Ĉ, μ̂ the
    # sample covariance (1/n) and mean: the precision of the data, learnt without knowing p.
    true_cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(10)
    x = (
        mean
        + torch.randn(4000, 2, generator=gen, dtype=torch.float64)
        @ torch.linalg.cholesky(true_cov).T
    )
    W = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = esm_loss(lambda v, s: v @ W.T + b, x).mean()
        loss.backward()
        return loss

    opt.step(closure)
    centred = x - x.mean(0)
    precision = torch.linalg.inv(centred.T @ centred / x.shape[0])
    err_W = (W.detach() + precision).abs().max().item()
    err_b = (b.detach() - precision @ x.mean(0)).abs().max().item()
    assert err_W < 1e-4 and err_b < 1e-4, f"|W + Ĉ⁻¹| = {err_W:.2e}, |b − Ĉ⁻¹μ̂| = {err_b:.2e}"
    # and the closed form is an exact stationary point of the loss's autograd gradient (the
    # trace term's gradient flows through the create_graph Jacobian)
    W_star = (-precision).requires_grad_(True)
    b_star = (precision @ x.mean(0)).requires_grad_(True)
    esm_loss(lambda v, s: v @ W_star.T + b_star, x).mean().backward()
    grad = max(W_star.grad.abs().max().item(), b_star.grad.abs().max().item())
    assert grad < 1e-10, f"gradient at the closed-form minimiser: {grad:.2e}"


def test_score_losses_under_no_grad_return_detached_values():
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(11))
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        for value in (esm_loss(lambda v, s: lin(v), x), ssm_loss(lambda v, s: lin(v), x)):
            assert value.shape == (4,) and not value.requires_grad
