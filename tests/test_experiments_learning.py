"""The learning experiments (tweedie_arrows, score_matching) against the exact mixture oracle.

The oracle here is ring8 re-implemented in numpy (8 equal Gaussians of variance 0.16 on a
circle of radius 5) with the posterior formulas of DESIGN.md, plus grid quadrature for
expectations over ``p_σ``. Statistical bounds are 4 standard errors of the sample at hand
(a two-sided normal tail of 6e-5 per check), computed in the test from the saved draws.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from experiments import score_matching, tweedie_arrows
from scoregen.gmm import preset

ANGLES = np.arange(8) * np.pi / 4
MEANS = 5.0 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1)
VAR = 0.16


def ring_posterior(y, sigma):
    """Posterior of ring8 given ``y = x + σz``: log weights ``[n, 8]`` and component means
    ``[n, 8, 2]``: ``w'_k ∝ N(y; μ_k, (v + σ²)I)`` (equal weights and variances: only the
    squared distance matters), ``m_k = μ_k + v/(v + σ²) (y − μ_k)``."""
    s2 = VAR + sigma**2
    offsets = y[:, None, :] - MEANS
    log_w = -0.5 * (offsets**2).sum(-1) / s2
    log_w -= logsumexp(log_w, 1, keepdims=True)
    return log_w, MEANS + VAR / s2 * offsets


def ring_posterior_mean(y, sigma):
    log_w, means = ring_posterior(y, sigma)
    return (np.exp(log_w)[..., None] * means).sum(1)


def quadrature_grid(sigma):
    """A square grid covering ring8 blurred by σ to 10 standard deviations, spacing s/8, and
    the trapezoid-rule cell weights (a Gaussian's trapezoid error is exp(−2π²s²/h²) ≈ 0)."""
    s = math.sqrt(VAR + sigma**2)
    reach = 5.0 + 10.0 * s
    n = int(2 * reach / (s / 8)) + 1
    ticks = np.linspace(-reach, reach, n)
    h = ticks[1] - ticks[0]
    yy, xx = np.meshgrid(ticks, ticks, indexing="ij")
    points = np.stack([xx.ravel(), yy.ravel()], 1)
    log_p = logsumexp(-0.5 * ((points[:, None] - MEANS) ** 2).sum(-1) / s**2, 1)
    density = np.exp(log_p - np.log(8 * 2 * np.pi * s**2))
    return points, density * h**2


def exact_mmse_per_dim(sigma):
    """``E_{p_σ} tr Cov(x | y) / d`` by quadrature over y, with the posterior covariance of the
    mixture ``Σ w'_k (S_k + m_k m_kᵀ) − E[x|y] E[x|y]ᵀ``, ``S_k = vσ²/(v + σ²) I``."""
    points, mass = quadrature_grid(sigma)
    log_w, means = ring_posterior(points, sigma)
    w = np.exp(log_w)
    post_mean = (w[..., None] * means).sum(1)
    trace = 2 * VAR * sigma**2 / (VAR + sigma**2) + (w * (means**2).sum(-1)).sum(1)
    trace -= (post_mean**2).sum(1)
    return float(mass @ trace) / 2


def load_draws(tmp_path, numbers):
    draws = np.load(tmp_path / numbers["draws"])
    for i, row in enumerate(numbers["per_sigma"]):
        assert draws["sigmas"][i] == row["sigma"]
        yield row, draws[f"component_{i}"], draws[f"x_{i}"], draws[f"y_{i}"], draws[f"learned_{i}"]


# ---------------------------------------------------------------------- tweedie_arrows
def test_tweedie_arrows_numbers_match_an_independent_posterior(tmp_path):
    """With the identity as the "learned" denoiser every number is a plain function of the
    saved draws: recompute each one with the numpy posterior, and the MMSE by quadrature."""
    numbers = tweedie_arrows.run(
        tmp_path,
        learned_denoiser=lambda y, sigma: y.clone(),
        sigmas=(0.3, 1.5),
        arrow_sigmas=(1.5,),
        n_points=3000,
        n_arrows=20,
    )
    assert numbers["training"] == {"learned": "given"}
    assert {p.name for p in tmp_path.iterdir()} == {
        "tweedie_arrows.json",
        "tweedie_arrows.png",
        "tweedie_arrows_mse.png",
        "tweedie_arrows_draws.npz",
    }
    mixture = preset("ring8")
    for row, component, x, y, learned in load_draws(tmp_path, numbers):
        sigma = row["sigma"]
        exact = ring_posterior_mean(y, sigma)
        per_exact = ((exact - x) ** 2).sum(1) / 2
        assert np.array_equal(learned, y.astype(np.float32).astype(np.float64))
        assert row["mse_noisy"] == pytest.approx(((y - x) ** 2).sum(1).mean() / 2, rel=1e-12)
        assert row["mse_exact"] == pytest.approx(per_exact.mean(), rel=1e-10)
        assert row["mse_learned"] == pytest.approx(row["mse_noisy"], rel=1e-6)
        assert row["learned_excess"] == pytest.approx(
            ((y - exact) ** 2).sum(1).mean() / 2, rel=1e-6
        )
        score = (exact - y) / sigma**2  # Tweedie, from the numpy posterior mean
        assert row["mmse_fisher"] == pytest.approx(
            sigma**2 - sigma**4 * (score**2).sum(1).mean() / 2, rel=1e-9
        )
        log_w, _ = ring_posterior(y, sigma)
        assert row["bayes_accuracy"] == np.mean(log_w.argmax(1) == component)
        # equal weights and variances: the most responsible component is the nearest mean
        nearest = (((exact[:, None] - MEANS) ** 2).sum(-1)).argmin(1)
        assert row["nearest_mode_exact"] == np.mean(nearest == component)
        home = MEANS[component]
        closer = np.linalg.norm(exact - home, axis=1) < np.linalg.norm(y - home, axis=1)
        assert row["toward_mode_exact"] == np.mean(closer)
        # the posterior as a GaussianMixture object agrees with the numpy one
        for j in range(3):
            posterior = mixture.posterior(torch.from_numpy(y[j]), sigma)
            assert np.allclose(posterior.mean().numpy(), exact[j], atol=1e-10)
        # the exact posterior mean's MSE estimates the MMSE, computed here by quadrature
        mmse = exact_mmse_per_dim(sigma)
        se = per_exact.std() / math.sqrt(len(per_exact))
        assert abs(row["mse_exact"] - mmse) <= 4 * se, (sigma, row["mse_exact"], mmse, se)


def test_tweedie_arrows_learned_denoiser_is_no_better_than_the_mmse(tmp_path):
    """A briefly trained MLP: its MSE is at least the exact posterior mean's on the same
    draws (paired, up to 4 SE), below the noisy input's, and its mode guesses are no better
    than the Bayes classifier's."""
    numbers = tweedie_arrows.run(
        tmp_path,
        train_steps=400,
        sigmas=(0.3, 1.5, 4.0),
        arrow_sigmas=(1.5,),
        n_points=3000,
        n_arrows=20,
    )
    training = numbers["training"]
    assert training["trainer"] == "scoregen.train" and training["steps"] == 400
    assert math.isfinite(training["final_loss"])
    assert training["sigma_range"][0] <= 0.3 and training["sigma_range"][1] >= 4.0
    for row, component, x, y, learned in load_draws(tmp_path, numbers):
        sigma, n = row["sigma"], len(x)
        exact = ring_posterior_mean(y, sigma)
        per_learned = ((learned - x) ** 2).sum(1) / 2
        assert row["mse_learned"] == pytest.approx(per_learned.mean(), rel=1e-10)
        gap = per_learned - ((exact - x) ** 2).sum(1) / 2
        assert gap.mean() >= -4 * gap.std() / math.sqrt(n), f"σ={sigma}: beats the MMSE"
        gain = ((y - x) ** 2).sum(1) / 2 - per_learned
        assert gain.mean() > 4 * gain.std() / math.sqrt(n), f"σ={sigma}: no better than y"
        bayes = ring_posterior(y, sigma)[0].argmax(1) == component
        nearest = (((learned[:, None] - MEANS) ** 2).sum(-1)).argmin(1) == component
        assert row["nearest_mode_learned"] == np.mean(nearest)
        wins = nearest.astype(float) - bayes
        assert wins.mean() <= 4 * wins.std() / math.sqrt(n) + 1e-12, f"σ={sigma}: beats Bayes"


def test_tweedie_arrows_rejects_sigmas_outside_the_training_range(tmp_path):
    with pytest.raises(ValueError, match="training range"):
        tweedie_arrows.run(tmp_path, sigmas=(20.0,), train_steps=1)
    with pytest.raises(ValueError, match="sigmas and arrow_sigmas must be > 0"):
        tweedie_arrows.run(tmp_path, sigmas=(0.0,), learned_denoiser=lambda y, s: y)


# ---------------------------------------------------------------------- score_matching
def test_score_matching_errors_against_the_exact_score(tmp_path):
    sigma = 0.3
    numbers = score_matching.run(
        tmp_path, sigma=sigma, steps=300, eval_every=100, n_eval=5000,
        batch_size=128,
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "score_matching.json",
        "score_matching.png",
    ]
    # the Fisher information per dimension and the best affine score, independently: ring8
    # has mean 0 and covariance (v + 25/2) I, so the affine fit is −y / (v + 12.5 + σ²)
    points, mass = quadrature_grid(sigma)
    score = (ring_posterior_mean(points, sigma) - points) / sigma**2
    norm2 = (score**2).sum(1)
    fisher = float(mass @ norm2) / 2
    generator = np.random.default_rng(5)
    x = MEANS[generator.integers(0, 8, 20_000)] + math.sqrt(VAR) * generator.normal(
        size=(20_000, 2)
    )
    y = x + sigma * generator.normal(size=x.shape)
    exact = (ring_posterior_mean(y, sigma) - y) / sigma**2
    err = ((-y / (VAR + 12.5 + sigma**2) - exact) ** 2).sum(1)
    norm = (exact**2).sum(1)
    affine = err.mean() / norm.mean()
    affine_se = (err - affine * norm).std() / (math.sqrt(len(y)) * norm.mean())
    base = numbers["baselines"]
    bound = 4 * math.hypot(affine_se, base["gaussian_fit_se"])
    assert abs(base["gaussian_fit"] - affine) <= bound, (base, affine, affine_se)
    assert numbers["fisher_per_dim"] == pytest.approx(fisher, rel=0.05)  # MC of 5000 draws

    for method in ("esm", "ssm", "dae"):
        result = numbers["methods"][method]
        assert result["steps"] == 300 and result["train_seconds"] > 0
        assert [c["step"] for c in result["curve"]] == [100, 200, 300]
        values = [result["rel_error"], *(c["rel_error"] for c in result["curve"])]
        values += [c["loss_rel_error"] for c in result["loss_curve"]]
        assert all(math.isfinite(v) for v in values), (method, values)
        # every method, even after 300 steps, beats the best affine score (and so zero)
        top = result["rel_error"] + 4 * result["rel_error_se"]
        assert top < affine - 4 * affine_se, (method, result["rel_error"], affine)


def test_score_matching_relative_error_is_the_squared_scale_error_for_a_scaled_score():
    """relative_error(c s, s) = (c − 1)² exactly, whatever the draws."""
    mixture = preset("ring8")
    y = score_matching.noisy_draws(mixture, 0.3, 500, seed=3)
    exact = mixture.score(y, 0.3)
    for factor in (0.0, 0.5, 1.0):
        rel, _ = score_matching.relative_error(factor * exact, exact)
        assert rel == pytest.approx((factor - 1) ** 2, abs=1e-12)


def test_score_matching_rejects_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="methods must be a non-empty subset"):
        score_matching.run(tmp_path, methods=("nce",))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        score_matching.run(tmp_path, sigma=0.0)
