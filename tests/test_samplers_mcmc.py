"""MALA, predictor–corrector and the probability-flow ODE reproduce an exact mixture
(energy distance against exact draws below its permutation-test threshold)."""

import pytest
import torch

from scoregen import (
    GaussianMixture,
    geometric_sigmas,
    init_noise,
    karras_sigmas,
    langevin,
    mala,
    predictor_corrector,
    probability_flow,
)
from scoregen.metrics import energy_distance, permutation_test

N_SAMPLES = 1_000  # per side of each two-sample test
N_PERMUTATIONS = 200


def three_modes():
    """Overlapping, anisotropic 2-D mixture: chains mix between components quickly."""
    return GaussianMixture(
        [0.5, 0.3, 0.2],
        [[0.0, 0.0], [2.5, 1.0], [-1.0, 2.5]],
        [
            [[1.0, 0.3], [0.3, 0.5]],
            [[0.4, 0.0], [0.0, 0.8]],
            [[0.6, -0.2], [-0.2, 0.6]],
        ],
    )


def exact_samples(mixture):
    return mixture.sample(N_SAMPLES, generator=torch.Generator().manual_seed(12345))


def two_sample_test(x, y):
    """Energy distance and its permutation null (seeded): same law ⇒ p-value ~ U(0, 1)."""
    return permutation_test(
        energy_distance, x, y, N_PERMUTATIONS, generator=torch.Generator().manual_seed(99)
    )


def assert_same_law(result, what):
    assert result.p_value > 0.01, (
        f"{what}: energy distance {result.statistic:.4g} > permutation threshold "
        f"{result.threshold:.4g} (p = {result.p_value:.3f})"
    )


def test_mala_reproduces_mixture_at_a_step_where_ula_is_biased():
    mixture = three_modes()
    g = torch.Generator().manual_seed(0)
    x0 = init_noise((N_SAMPLES, 2), 2.0, generator=g, dtype=torch.float64)
    # ε = 0.5 is close to ULA's stability limit 2λ_min ≈ 0.74: ULA's variance is inflated by
    # up to 1/(1 − ε/(2λ)) ≈ 2.7x, while MALA's Metropolis step keeps p exactly invariant.
    x, stats = mala(
        mixture.log_prob, x0, step_size=0.5, n_steps=200, generator=g, return_stats=True
    )
    assert_same_law(two_sample_test(x, exact_samples(mixture)), "MALA")
    ula = langevin(mixture.score, x0, step_size=0.5, n_steps=200, generator=g)
    biased = two_sample_test(ula, exact_samples(mixture))
    assert biased.p_value < 0.01, f"the test cannot see ULA's bias (p = {biased.p_value:.3f})"
    assert 0 < stats.acceptance_rate < 1
    assert stats.accepted.sum().item() == pytest.approx(stats.acceptance_rate * N_SAMPLES * 200)


def test_mala_autograd_score_equals_explicit_score_and_reports_acceptance():
    mixture = three_modes()
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rates = []
    a, stats_a = mala(
        mixture.log_prob,
        x0,
        step_size=0.3,
        n_steps=20,
        generator=torch.Generator().manual_seed(2),
        return_stats=True,
        callback=lambda info: rates.append(info["acceptance_rate"].item()),
    )
    b, stats_b = mala(
        mixture.log_prob,
        x0,
        step_size=0.3,
        n_steps=20,
        score=mixture.score,
        generator=torch.Generator().manual_seed(2),
        return_stats=True,
    )
    assert (a - b).abs().max() < 1e-10
    assert torch.equal(stats_a.accepted, stats_b.accepted)
    assert rates[-1] == pytest.approx(stats_a.acceptance_rate)
    assert stats_a.n_steps == 20 and stats_a.accepted.shape == (200,)


def test_mala_rejects_every_proposal_into_zero_density():
    # log p = −inf outside the unit box: MALA never leaves it (NaN/−inf proposals rejected).
    def log_prob(x, sigma):
        inside = (x.abs() < 1).all(dim=1)
        return torch.where(inside, -0.5 * (x**2).sum(1), torch.full_like(x[:, 0], -torch.inf))

    def score(x, sigma):
        return -x

    x = mala(
        log_prob,
        torch.zeros(500, 2, dtype=torch.float64),
        step_size=0.5,
        n_steps=50,
        score=score,
        generator=torch.Generator().manual_seed(0),
    )
    assert (x.abs() < 1).all()


def test_predictor_corrector_reproduces_mixture():
    mixture = three_modes()
    sigmas = geometric_sigmas(40.0, 0.01, 50)
    g = torch.Generator().manual_seed(0)
    x0 = init_noise((N_SAMPLES, 2), 40.0, generator=g, dtype=torch.float64)
    x = predictor_corrector(mixture.score, x0, sigmas, snr=0.16, generator=g)
    assert_same_law(two_sample_test(x, exact_samples(mixture)), "predictor-corrector")


def test_predictor_corrector_per_example_step_norms_are_biased_in_2d():
    # Documented in predictor_corrector: per-chain ε = 2 (snr ‖z‖/‖g‖)² explodes for chains
    # near a mode (‖g‖ → 0) in low dimension; the batch-averaged rule does not.
    mixture = three_modes()
    g = torch.Generator().manual_seed(0)
    x0 = init_noise((N_SAMPLES, 2), 40.0, generator=g, dtype=torch.float64)
    x = predictor_corrector(
        mixture.score, x0, geometric_sigmas(40.0, 0.01, 50), step_norm="example", generator=g
    )
    result = two_sample_test(x, exact_samples(mixture))
    assert result.p_value < 0.01, f"per-example norms unexpectedly fine (p = {result.p_value})"


@pytest.mark.parametrize("solver, n_sigmas", [("heun", 20), ("euler", 60)])
def test_probability_flow_reproduces_mixture(solver, n_sigmas):
    mixture = three_modes()
    x0 = init_noise(
        (N_SAMPLES, 2), 80.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    x = probability_flow(mixture.score, x0, karras_sigmas(80.0, 0.002, n_sigmas), solver=solver)
    assert_same_law(two_sample_test(x, exact_samples(mixture)), f"probability flow ({solver})")


def test_probability_flow_solvers_converge_at_orders_one_and_two():
    # For data N(0, s²I) the flow is exact: x(σ) = x(σ₀) sqrt((s² + σ²) / (s² + σ₀²)).
    s2 = 0.25
    mixture = GaussianMixture([1.0], [[0.0, 0.0]], [s2])
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma_max, sigma_min = 10.0, 0.1
    exact = x0 * ((s2 + sigma_min**2) / (s2 + sigma_max**2)) ** 0.5

    def error(solver, n):
        sigmas = geometric_sigmas(sigma_max, sigma_min, n, dtype=torch.float64)
        x = probability_flow(mixture.score, x0, sigmas, solver=solver, final_denoise=False)
        return (x - exact).abs().max().item()

    # Halving every step (log-spaced ladder refined by midpoints) divides the error by
    # ~2 for Euler (order 1) and ~4 for Heun (order 2).
    euler_ratio = error("euler", 41) / error("euler", 81)
    heun_ratio = error("heun", 41) / error("heun", 81)
    assert 1.8 < euler_ratio < 2.2, f"Euler error ratio {euler_ratio:.3f}, expected ~2"
    assert 3.6 < heun_ratio < 4.4, f"Heun error ratio {heun_ratio:.3f}, expected ~4"
    assert error("heun", 41) < error("euler", 41) / 10
