"""Metrics against known values: energy distance of shifted Gaussians, MMD and permutation
tests under the null and an alternative, sliced Wasserstein of a translation, mode weights of
exact draws, PSNR of a known error, and the excess MSE over the exact MMSE denoiser."""

import math

import pytest
import torch

from scoregen.gmm import preset
from scoregen.metrics import (
    energy_distance,
    excess_mse,
    median_bandwidth,
    mmd,
    mode_weights,
    permutation_test,
    psnr,
    sliced_wasserstein,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def expected_abs_normal(mean, std):
    """E|N(mean, std²)| (folded normal)."""
    return std * math.sqrt(2 / math.pi) * math.exp(-(mean**2) / (2 * std**2)) + mean * math.erf(
        mean / (std * math.sqrt(2))
    )


def test_energy_distance_of_shifted_1d_gaussians_matches_closed_form():
    # X ~ N(0, 1), Y ~ N(δ, 1): E = 2 E|N(δ, 2)| − 2 E|N(0, 2)|.
    delta, n, reps = 0.5, 500, 10
    exact = 2 * expected_abs_normal(delta, math.sqrt(2)) - 2 * expected_abs_normal(0, math.sqrt(2))
    g = gen(0)
    estimates = torch.stack(
        [
            energy_distance(torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g) + delta)
            for _ in range(reps)
        ]
    )
    # The U-statistic is unbiased: the mean of independent replicates is within 4 SE.
    se = estimates.std().item() / math.sqrt(reps)
    assert abs(estimates.mean().item() - exact) < 4 * se, (
        f"mean estimate {estimates.mean().item():.4f} vs exact {exact:.4f} (SE {se:.4f})"
    )


@pytest.mark.parametrize("statistic", [energy_distance, mmd, "energy_distance", "mmd"])
def test_permutation_test_accepts_equal_laws_and_rejects_a_shift(statistic):
    g = gen(1)
    x, y = torch.randn(400, 3, generator=g), torch.randn(300, 3, generator=g)
    same = permutation_test(statistic, x, y, 200, generator=gen(2))
    assert same.p_value > 0.01 and same.statistic < same.threshold
    shifted = permutation_test(statistic, x, y + 0.4, 200, generator=gen(2))
    # The smallest p-value 200 permutations can give: no permuted split reaches the statistic.
    assert shifted.p_value == pytest.approx(1 / 201)
    assert shifted.statistic > shifted.threshold > 0


def test_fast_kernel_permutations_equal_the_generic_loop():
    g = gen(3)
    x, y = torch.randn(60, 2, generator=g), torch.randn(50, 2, generator=g) + 0.2
    for fn in (energy_distance, mmd):
        fast = permutation_test(fn, x, y, 40, generator=gen(4))
        slow = permutation_test(lambda a, b, fn=fn: fn(a, b), x, y, 40, generator=gen(4))
        assert fast.statistic == pytest.approx(fn(x, y).item(), rel=1e-10)
        assert torch.allclose(fast.null, slow.null, rtol=1e-9, atol=1e-12)
        assert fast.p_value == slow.p_value and fast.threshold == pytest.approx(slow.threshold)


def test_mmd_matches_the_direct_u_statistic_with_the_median_bandwidth():
    g = gen(5)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    # Unbiased MMD² of a sample with itself: mean k over i≠j of x twice minus 2·(full mean).
    kernel = torch.exp(-(torch.cdist(x, x) ** 2) / (2 * median_bandwidth(x, x) ** 2))
    n = 200
    expected = 2 * (kernel.sum() - n) / (n * (n - 1)) - 2 * kernel.mean()
    assert mmd(x, x).item() == pytest.approx(expected.item(), rel=1e-9)
    assert mmd(x, x).item() < 0  # −2/n·(1 − mean k): the U-statistic's known offset
    assert mmd(x, x + 3.0, bandwidth=1.0) > 0.5


def test_sliced_wasserstein_of_a_translation():
    # For y = x + v, each projection shifts by θᵀv, so SW₂² = mean over θ of (θᵀv)², whose
    # expectation over uniform θ on the circle is ‖v‖²/2 with variance ‖v‖⁴/8.
    x = torch.randn(500, 2, generator=gen(6))
    v = torch.tensor([3.0, 4.0])
    n_projections = 2000
    sw = sliced_wasserstein(x, x + v, n_projections, generator=gen(7)).item()
    se = math.sqrt(625 / 8 / n_projections)
    assert abs(sw**2 - 12.5) < 4 * se, f"SW² {sw**2:.3f} vs 12.5 (SE {se:.3f})"
    assert sliced_wasserstein(x, x, generator=gen(7)).item() == 0.0
    # Unequal sizes go through quantile interpolation and stay close to the exact value.
    sw_sub = sliced_wasserstein(x[:300], x + v, n_projections, generator=gen(7)).item()
    assert abs(sw_sub**2 - 12.5) < 1.0


@pytest.mark.parametrize("name", ["ncsn2d", "ring8"])
def test_mode_weights_of_exact_samples_match_the_mixture_weights(name):
    mixture = preset(name)
    n = 20_000
    samples = mixture.sample(n, generator=gen(8))
    weights = mode_weights(samples, mixture)
    se = (mixture.weights * (1 - mixture.weights) / n).sqrt()
    z = ((weights - mixture.weights) / se).abs().max().item()
    assert z < 4, (
        f"{name}: mode weights {weights.tolist()} vs {mixture.weights.tolist()}, {z:.2f} SE"
    )
    assert mode_weights(samples.reshape(n, 1, 2), mixture).tolist() == weights.tolist()


def test_psnr_of_a_known_error():
    ref = torch.rand(3, 1, 8, 8, generator=gen(9))
    offsets = torch.tensor([0.1, 0.01, 0.001]).reshape(3, 1, 1, 1)
    values = psnr(ref + offsets, ref)
    assert torch.allclose(values, torch.tensor([20.0, 40.0, 60.0], dtype=torch.float64), atol=1e-3)
    assert psnr(2 * (ref + offsets), 2 * ref, data_range=2.0).allclose(values, atol=1e-3)
    assert torch.isinf(psnr(ref, ref)).all()


def test_excess_mse_is_zero_for_the_oracle_and_positive_for_a_worse_denoiser():
    mixture = preset("ring8")
    sigma, n = 1.0, 20_000
    oracle = excess_mse(mixture.denoise, mixture, sigma, n, generator=gen(10))
    assert oracle.excess == 0.0 and oracle.model_mse == oracle.oracle_mse
    # Identity denoiser: per-dimension MSE is exactly E‖σz‖²/d = σ² in expectation.
    identity = excess_mse(lambda y, s: y, mixture, sigma, n, generator=gen(10))
    assert abs(identity.model_mse - sigma**2) < 4 * sigma**2 * math.sqrt(2 / (2 * n))
    assert identity.oracle_mse == oracle.oracle_mse  # same draws from the same seed
    assert identity.excess > 4 * identity.stderr > 0
    # Image-shaped, float32 model input.
    seen = []

    def shaped(y, s):
        seen.append((y.shape, y.dtype))
        return y

    excess_mse(shaped, mixture, sigma, 100, shape=(1, 2, 1), dtype=torch.float32, batch_size=64)
    assert seen == [((64, 1, 2, 1), torch.float32), ((36, 1, 2, 1), torch.float32)]


def test_metric_argument_errors():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="same number of values"):
        energy_distance(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd(x[:1], x)
    with pytest.raises(ValueError, match="statistic must be a callable"):
        permutation_test("wasserstein", x, x)
    with pytest.raises(ValueError, match="alpha must be in"):
        permutation_test(energy_distance, x, x, alpha=1.5)
    with pytest.raises(ValueError, match="shape"):
        excess_mse(lambda y, s: y, preset("ring8"), 1.0, 10, shape=(3,))
