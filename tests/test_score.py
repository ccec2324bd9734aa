"""Tweedie's formula, its inverse and the fixed-σ guard."""

import pytest
import torch

from scoregen import FixedSigmaDenoiser, score_denoiser, tweedie_score
from scoregen.gmm import preset


def test_tweedie_is_shape_agnostic_with_per_example_sigma():
    def denoiser(x, sigma):  # shrinks towards 0 by a σ-dependent factor
        s = sigma if isinstance(sigma, float) else sigma.view(-1, *([1] * (x.ndim - 1)))
        return x / (1 + s**2)

    x = torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 3.0])
    s = tweedie_score(denoiser)(x, sigma)
    expected = (x / (1 + sigma.view(3, 1, 1, 1) ** 2) - x) / sigma.view(3, 1, 1, 1) ** 2
    assert s.shape == x.shape
    assert torch.allclose(s, expected)
    assert torch.allclose(tweedie_score(denoiser)(x, 0.5), (x / 1.25 - x) / 0.25)


def test_score_denoiser_inverts_tweedie_on_the_oracle():
    mix = preset("ring8")
    y = torch.randn(50, 2, dtype=torch.float64) * 5
    for sigma in (0.1, 1.0, torch.linspace(0.1, 4, 50, dtype=torch.float64)):
        d = score_denoiser(mix.score)(y, sigma)
        assert (d - mix.denoise(y, sigma)).abs().max() < 1e-10
        back = tweedie_score(score_denoiser(mix.score))(y, sigma)
        assert (back - mix.score(y, sigma)).abs().max() < 1e-8


def test_tweedie_rejects_zero_sigma():
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        tweedie_score(lambda x, s: x)(torch.zeros(2, 2), 0.0)
    with pytest.raises(TypeError, match="denoiser must be callable"):
        tweedie_score(3)


def test_fixed_sigma_denoiser_guards_its_noise_level():
    net = torch.nn.Identity()
    d = FixedSigmaDenoiser(net, 0.1)
    x = torch.randn(4, 3)
    assert torch.equal(d(x, 0.1), x) and torch.equal(d(x), x)
    assert torch.equal(d(x, torch.full((4,), 0.1)), x)
    with pytest.raises(
        ValueError, match=r"trained at the single noise level sigma=0.1; .* sigma=0.5"
    ):
        d(x, 0.5)
    with pytest.raises(ValueError, match="sigma=0.3"):
        tweedie_score(d)(x, torch.tensor([0.1, 0.1, 0.3, 0.1]))
    with pytest.raises(ValueError, match="must be > 0"):
        FixedSigmaDenoiser(net, 0.0)
