"""The oracle experiments at a tiny size: their JSON numbers against independent computations.

The references here do not reuse the experiments' code paths: the 1-D prior is rewritten in
numpy, stationary points come from scipy root finding on a fine grid, masses from normal
CDFs, and statistical numbers are compared with bounds derived from the sample size.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats
from scipy.special import logsumexp

from experiments import blurred_density, posterior_mean_vs_map, score_fields
from experiments._common import (
    describe,
    list_experiments,
    load_experiment,
    main,
    summarize,
    to_jsonable,
)
from scoregen.gmm import preset

# ---------------------------------------------------------------------- the 1-D prior in numpy
W, MU, VAR = np.array([0.7, 0.3]), np.array([-2.0, 2.0]), np.array([0.25, 0.25])


def log_prior(x):
    x = np.asarray(x, dtype=float)[..., None]
    return logsumexp(np.log(W) - 0.5 * (x - MU) ** 2 / VAR - 0.5 * np.log(2 * np.pi * VAR), -1)


def prior_derivatives(x):
    """(log p)', (log p)'' and (log p)''' of the prior, in closed form."""
    x = np.asarray(x, dtype=float)[..., None]
    log_r = np.log(W) - 0.5 * (x - MU) ** 2 / VAR - 0.5 * np.log(VAR)
    r = np.exp(log_r - logsumexp(log_r, -1, keepdims=True))
    g = -(x - MU) / VAR  # per-component (log N)'
    m1 = (r * g).sum(-1)
    m2 = (r * g**2).sum(-1)
    m3 = (r * g**3).sum(-1)
    # derivatives of log Σ r_k: cumulants of g under r, plus the components' (log N)'' = −1/v
    c2 = m2 - m1**2
    c3 = m3 - 3 * m1 * m2 + 2 * m1**3
    dg = -1.0 / VAR[0]  # equal variances: (log N_k)'' is the same for every k
    return m1, c2 + dg, c3


def log_post(x, y, sigma):
    """Unnormalised posterior log-density of x given y = x + σz."""
    return log_prior(x) - 0.5 * (np.asarray(x) - y) ** 2 / sigma**2


def dlog_post(x, y, sigma):
    return prior_derivatives(x)[0] - (np.asarray(x) - y) / sigma**2


def posterior_maxima(y, sigma):
    """All local maxima of the posterior: sign changes + → − of its derivative, refined."""
    grid = np.linspace(-8.0, 8.0, 16001)
    d = dlog_post(grid, y, sigma)
    idx = np.nonzero((d[:-1] > 0) & (d[1:] <= 0))[0]
    return np.array([optimize.brentq(dlog_post, grid[i], grid[i + 1], args=(y, sigma),
                                     xtol=1e-14) for i in idx])  # fmt: skip


# ---------------------------------------------------------------------- posterior mean vs MAP
PMM_SIGMAS = (0.025, 0.05, 0.5, 1.0)


@pytest.fixture(scope="module")
def pmm(tmp_path_factory):
    out = tmp_path_factory.mktemp("pmm")
    numbers = posterior_mean_vs_map.run(out, sigmas=PMM_SIGMAS, n_grid=1201)
    curves = json.loads((out / "posterior_mean_vs_map_curves.json").read_text())
    assert json.loads((out / "posterior_mean_vs_map.json").read_text()) == to_jsonable(numbers)
    assert (out / "posterior_mean_vs_map.png").stat().st_size > 10_000
    return numbers, curves


def test_posterior_mean_curve_is_the_exact_mmse_denoiser(pmm):
    _, curves = pmm
    mixture = preset("bimodal1d")
    y = torch.tensor(curves["y"], dtype=torch.float64)[:, None]
    for sigma, means in zip(curves["sigmas"], curves["posterior_mean"]):
        expected = mixture.denoise(y, sigma)[:, 0].numpy()
        err = np.abs(np.array(means) - expected).max()
        assert err < 1e-10, f"σ={sigma}: |mean − oracle denoise| = {err:.2e} > 1e-10"
    # and the oracle agrees with the posterior mean by quadrature, ∫x p(x|y) / ∫p(x|y)
    i = curves["sigmas"].index(0.5)
    for j in range(0, len(curves["y"]), 150):
        yj = curves["y"][j]
        post = lambda x: np.exp(log_post(x, yj, 0.5) - log_post(0.0, yj, 0.5))  # noqa: E731
        num = integrate.quad(lambda x: x * post(x), -12, 12, points=[-2, 2], epsabs=1e-13)[0]
        den = integrate.quad(post, -12, 12, points=[-2, 2], epsabs=1e-13)[0]
        assert abs(num / den - curves["posterior_mean"][i][j]) < 1e-8, f"y={yj}"


def test_map_curve_is_the_highest_stationary_point_of_the_posterior(pmm):
    _, curves = pmm
    for sigma, modes in zip(curves["sigmas"], curves["map"]):
        for j in range(0, len(curves["y"]), 40):
            y, mode = curves["y"][j], modes[j]
            grad = abs(float(dlog_post(mode, y, sigma)))
            assert grad < 1e-6 / sigma**2, f"σ={sigma}, y={y}: |∂ log p(x|y)| = {grad:.2e} at MAP"
            best = max(log_post(posterior_maxima(y, sigma), y, sigma))
            assert log_post(mode, y, sigma) >= best - 1e-9, f"σ={sigma}, y={y}: a higher peak"


def test_map_jumps_where_the_two_posterior_peaks_are_equally_high(pmm):
    numbers, _ = pmm
    sigma_c = 1.0 / math.sqrt(prior_derivatives(np.linspace(-4, 4, 80001))[1].max())
    for row in numbers["per_sigma"]:
        sigma, jump = row["sigma"], row["map_jump"]
        if sigma < sigma_c:
            # log p(x|y)'' = (log p)'' − 1/σ² < 0 everywhere: one peak for every y, no jump
            assert jump is None, f"σ={sigma} < σ_c={sigma_c:.4f} but a jump was reported"
            continue

        def height_difference(y):
            peaks = posterior_maxima(y, sigma)
            return log_post(peaks[-1], y, sigma) - log_post(peaks[0], y, sigma)

        root = optimize.brentq(height_difference, jump["y"] - 1e-3, jump["y"] + 1e-3, xtol=1e-12)
        assert abs(jump["y"] - root) < 1e-6, (
            f"σ={sigma}: jump at {jump['y']}, peaks equal at {root}"
        )
        left, right = posterior_maxima(root, sigma)[[0, -1]]
        assert abs(jump["map_left"] - left) < 1e-5 and abs(jump["map_right"] - right) < 1e-5


def test_gap_between_mean_and_map_vanishes_like_sigma_to_the_fourth(pmm):
    """Laplace: E[x|y] − MAP(y) = σ⁴ (log p)'''(MAP) / 2 + O(σ⁶ ...), relative error O(σ² (log p)'')."""
    numbers, _ = pmm
    grid = np.linspace(-6, 6, 120001)
    _, second, third = prior_derivatives(grid)
    for row in numbers["per_sigma"]:
        sigma = row["sigma"]
        if sigma > 0.05:
            continue
        predicted = sigma**4 * np.abs(third).max() / 2
        tolerance = sigma**2 * second.max()
        rel = abs(row["max_gap"] / predicted - 1)
        assert rel < tolerance, f"σ={sigma}: gap {row['max_gap']:.3e} vs σ⁴ law {predicted:.3e}"


def test_panel_estimates_at_y0_sigma1(pmm):
    numbers, _ = pmm
    panel = numbers["panel"]
    # at y = 0 both components explain y equally well, so the posterior weights are the prior
    # weights; m_k = μ_k + λ/(λ + σ²)(y − μ_k) = ∓2 · (1 − 0.25/1.25) = ∓1.6; mean −0.64
    assert panel["posterior_mean"] == pytest.approx(-0.64, abs=1e-12)
    assert panel["posterior_weights"] == pytest.approx([0.7, 0.3], abs=1e-12)
    peaks = posterior_maxima(0.0, 1.0)
    top = peaks[np.argmax(log_post(peaks, 0.0, 1.0))]
    assert panel["map"] == pytest.approx(top, abs=1e-8)


# ---------------------------------------------------------------------- blurred density
@pytest.fixture(scope="module")
def blurred(tmp_path_factory):
    out = tmp_path_factory.mktemp("blurred")
    numbers = blurred_density.run(out, n_grid_1d=4801, n_grid_2d=121, n_noisy=4000, seed=3)
    for name in numbers["figures"]:
        assert (out / name).stat().st_size > 10_000
    return numbers


def blurred_1d(x, sigma):
    s = np.sqrt(VAR + sigma**2)
    return (W * stats.norm.pdf(np.asarray(x)[..., None], MU, s)).sum(-1)


def test_blurred_1d_integral_is_the_window_mass(blurred):
    lo, hi = blurred_density.WINDOW_1D
    for row in blurred["one_d"]["per_sigma"]:
        s = np.sqrt(VAR + row["sigma"] ** 2)
        exact = float((W * (stats.norm.cdf(hi, MU, s) - stats.norm.cdf(lo, MU, s))).sum())
        assert row["mass_in_window"] == pytest.approx(exact, abs=1e-13)
        h = (hi - lo) / (blurred["one_d"]["grid"]["n"] - 1)
        # trapezoid on a Gaussian: aliasing error 2 exp(−2π² s²/h²) (Poisson summation),
        # plus h/2 times the density at the window's two edges
        bound = (
            2 * np.exp(-2 * np.pi**2 * s.min() ** 2 / h**2)
            + h * blurred_1d([lo, hi], row["sigma"]).sum()
        )
        rounding = blurred["one_d"]["grid"]["n"] * np.finfo(float).eps  # summing n terms
        assert abs(row["integral"] - exact) <= bound + rounding, f"σ={row['sigma']}"
        if row["sigma"] <= 2.0:
            assert abs(row["integral"] - 1) < 1e-5


def test_blurred_1d_modes_and_valley_match_root_finding(blurred):
    grid = np.linspace(-8, 8, 16001)
    for row in blurred["one_d"]["per_sigma"]:
        sigma = row["sigma"]
        s = np.sqrt(VAR + sigma**2)

        def slope(x):  # p_σ'(x) in closed form
            x = np.asarray(x)[..., None]
            return (W * stats.norm.pdf(x, MU, s) * (-(x - MU) / s**2)).sum(-1)

        values = slope(grid)
        maxima = [optimize.brentq(slope, grid[i], grid[i + 1], xtol=1e-14)
                  for i in np.nonzero((values[:-1] > 0) & (values[1:] <= 0))[0]]  # fmt: skip
        minima = [optimize.brentq(slope, grid[i], grid[i + 1], xtol=1e-14)
                  for i in np.nonzero((values[:-1] < 0) & (values[1:] >= 0))[0]]  # fmt: skip
        assert row["n_modes"] == len(maxima), f"σ={sigma}"
        assert np.allclose(row["modes"], maxima, atol=1e-8), f"σ={sigma}"
        if len(maxima) == 2:
            ratio = blurred_1d(minima[0], sigma) / blurred_1d(maxima, sigma).min()
            assert row["valley_to_peak"] == pytest.approx(ratio, rel=1e-8), f"σ={sigma}"
        else:
            assert row["valley_to_peak"] is None


def test_blurred_1d_low_density_mass_matches_exact_intervals(blurred):
    """L = {p < τ max p}: its edges by root finding, its p_σ-mass by normal CDFs."""
    tau = blurred["low_density_fraction"]
    lo, hi = blurred_density.WINDOW_1D
    h = (hi - lo) / (blurred["one_d"]["grid"]["n"] - 1)
    grid = np.linspace(lo, hi, 24001)
    top = optimize.fminbound(lambda x: -blurred_1d(x, 0.0), -3.0, -1.0, xtol=1e-12)
    level = tau * blurred_1d(top, 0.0)  # τ · max p (the max is at the heavier mode, near −2)
    f = blurred_1d(grid, 0.0) - level
    edges = [optimize.brentq(lambda x: blurred_1d(x, 0.0) - level, grid[i], grid[i + 1])
             for i in np.nonzero(np.sign(f[:-1]) != np.sign(f[1:]))[0]]  # fmt: skip
    inside = [lo, *edges, hi]  # L alternates: [lo, e1] low, [e1, e2] high, ...
    for row in blurred["one_d"]["per_sigma"]:
        s = np.sqrt(VAR + row["sigma"] ** 2)
        cdf = lambda x: float((W * stats.norm.cdf(x, MU, s)).sum())  # noqa: E731
        exact = sum(cdf(b) - cdf(a) for a, b in zip(inside[0::2], inside[1::2]))
        # a grid cell cut by an edge is misattributed by at most h · p_σ near that edge
        bound = sum(h * blurred_1d(np.linspace(e - h, e + h, 5), row["sigma"]).max() for e in edges)
        err = abs(row["low_density_mass"] - exact)
        assert err <= bound, f"σ={row['sigma']}: |grid − exact| = {err:.2e} > {bound:.2e}"


def test_blurred_1d_total_variation_matches_quadrature(blurred):
    lo, hi = blurred_density.WINDOW_1D
    h = (hi - lo) / (blurred["one_d"]["grid"]["n"] - 1)
    fine = np.linspace(lo, hi, 200001)
    for row in blurred["one_d"]["per_sigma"][1:]:
        sigma = row["sigma"]
        diff = lambda x: blurred_1d(x, sigma) - blurred_1d(x, 0.0)  # noqa: E731
        values = diff(fine)
        kinks = [optimize.brentq(diff, fine[i], fine[i + 1])
                 for i in np.nonzero(np.sign(values[:-1]) != np.sign(values[1:]))[0]]  # fmt: skip
        exact = 0.5 * integrate.quad(lambda x: abs(diff(x)), lo, hi, points=kinks, limit=500,
                                     epsabs=1e-12)[0]  # fmt: skip
        # trapezoid error: (b − a) h² max|f''| / 12 on smooth parts, h² max|f'| per kink
        second = np.abs(np.gradient(np.gradient(values, fine), fine)).max()
        first = np.abs(np.gradient(values, fine)).max()
        bound = 0.5 * ((hi - lo) * h**2 * second / 12 + len(kinks) * h**2 * first)
        err = abs(row["tv_from_clean"] - exact)
        assert err <= bound, f"σ={sigma}: TV {row['tv_from_clean']} vs {exact}, bound {bound:.1e}"


def ring_component_logs(points, sigma):
    """ring8 in numpy (8 equal Gaussians, radius 5, std 0.4) blurred by σ: log w_k N_k(x)."""
    angles = np.arange(8) * np.pi / 4
    means = 5.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    var = 0.16 + sigma**2
    sq = ((np.asarray(points)[:, None, :] - means) ** 2).sum(-1)
    return np.log(1 / 8) - 0.5 * sq / var - np.log(2 * np.pi * var)


def ring_log_density(points, sigma):
    return logsumexp(ring_component_logs(points, sigma), -1)


def test_blurred_2d_peak_centre_and_window_mass(blurred):
    half = blurred["two_d"]["grid"]["half_width"]
    h = 2 * half / (blurred["two_d"]["grid"]["n"] - 1)
    angles = np.arange(8) * np.pi / 4
    for row in blurred["two_d"]["per_sigma"]:
        sigma = row["sigma"]
        s = math.sqrt(0.16 + sigma**2)
        per_axis = [stats.norm.cdf(half, 5 * f(angles), s) - stats.norm.cdf(-half, 5 * f(angles), s)
                    for f in (np.cos, np.sin)]  # fmt: skip
        exact = float(np.mean(per_axis[0] * per_axis[1]))
        assert row["mass_in_window"] == pytest.approx(exact, abs=1e-12)
        edge = 4 * 2 * half * h * np.exp(ring_log_density(np.array([[half, 0.0]]), sigma))[0]
        rounding = blurred["two_d"]["grid"]["n"] ** 2 * np.finfo(float).eps  # summing n² terms
        aliasing = 4 * np.exp(-2 * np.pi**2 * s**2 / h**2)
        assert abs(row["integral"] - exact) <= aliasing + edge + rounding, f"σ={sigma}"

        # by symmetry the highest point lies on the ray through a mean (or at the centre):
        # the zeros of the radial derivative along that ray, from a fine grid by root finding
        def radial(r):
            resp = np.exp(ring_component_logs(np.array([[r, 0.0]]), sigma)[0])
            resp /= resp.sum()
            return float((resp * -(r - 5 * np.cos(angles)) / (0.16 + sigma**2)).sum())

        grid = np.linspace(0.01, 8.0, 801)
        slopes = np.array([radial(r) for r in grid])
        roots = [optimize.brentq(radial, grid[k], grid[k + 1], xtol=1e-13)
                 for k in np.nonzero((slopes[:-1] > 0) & (slopes[1:] <= 0))[0]]  # fmt: skip
        ray_best = (
            max(ring_log_density(np.array([[r, 0.0]]), sigma)[0] for r in roots)
            if roots
            else -np.inf
        )
        centre = ring_log_density(np.zeros((1, 2)), sigma)[0]
        peak = max(ray_best, centre)
        assert row["peak_log_density"] == pytest.approx(peak, abs=1e-9), f"σ={sigma}"
        assert row["centre_to_peak"] == pytest.approx(np.exp(centre - peak), rel=1e-7, abs=1e-300)


def ring_low_density_mass(sigma, tau):
    """Exact ∫_L p_σ for ring8 and L = {p < τ max p}: L is the outside of 8 discs of radius
    r₀ = sqrt(2 · 0.16 · ln(1/τ)) around the means (a neighbour shifts the boundary by a
    factor e^(−21), ignored), and the mass of p_σ inside disc k is
    Σ_j (1/8) P(‖μ_j + s z − μ_k‖ < r₀) = Σ_j (1/8) ncx2.cdf(r₀²/s², 2, ‖μ_j − μ_k‖²/s²)."""
    angles = np.arange(8) * np.pi / 4
    means = 5.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    var = 0.16 + sigma**2
    r2 = 2 * 0.16 * np.log(1 / tau)
    per_disc = stats.ncx2.cdf(r2 / var, 2, ((means - means[0]) ** 2).sum(1) / var).sum() / 8
    return 1.0 - 8 * per_disc


def test_blurred_2d_low_density_mass_matches_the_exact_mass(blurred):
    """Grid quadrature and the fraction of n noisy copies against the exact mass of L."""
    from scoregen.plot import grid_points

    tau = blurred["low_density_fraction"]
    n_grid = blurred["two_d"]["grid"]["n"]
    half = blurred["two_d"]["grid"]["half_width"]
    points = grid_points(half, n_grid)[0].numpy()
    h = 2 * half / (n_grid - 1)
    clean = ring_log_density(points, 0.0).reshape(n_grid, n_grid)
    low = clean < np.log(tau) + clean.max()
    # cells next to the edge of L: the grid sum misattributes at most their mass
    edge = np.zeros_like(low)
    edge[1:] |= low[1:] != low[:-1]
    edge[:-1] |= low[1:] != low[:-1]
    edge[:, 1:] |= low[:, 1:] != low[:, :-1]
    edge[:, :-1] |= low[:, 1:] != low[:, :-1]
    for row in blurred["two_d"]["per_sigma"]:
        sigma, n = row["sigma"], row["n_noisy"]
        exact = ring_low_density_mass(sigma, tau)
        density = np.exp(ring_log_density(points, sigma)).reshape(n_grid, n_grid)
        bound = h**2 * density[edge].sum()
        err = abs(row["low_density_mass"] - exact)
        assert err <= bound, f"σ={sigma}: grid {row['low_density_mass']:.4f} vs exact {exact:.4f}"
        se = math.sqrt(exact * (1 - exact) / n)
        err = abs(row["noisy_fraction_in_low_density"] - exact)
        assert err <= 4 * se, f"σ={sigma}: {n} copies give {err:.4f} off, > 4 SE = {4 * se:.4f}"
    masses = [row["low_density_mass"] for row in blurred["two_d"]["per_sigma"]]
    assert masses == sorted(masses), "blurring must move mass into the low-density region"


# ---------------------------------------------------------------------- score fields
TINY = {"n_grid": 97, "n_error_sigmas": 3, "field_sigmas": (0.5,)}


def test_score_errors_vanish_for_the_exact_score(tmp_path):
    mixture = preset("ring8")
    numbers = score_fields.run(tmp_path, learned_score=mixture.score, **TINY)
    assert numbers["training"] == {"learned": "given"}
    for row in numbers["per_sigma"]:
        for key in ("rel_error", "rel_error_low", "rel_error_low_pweighted"):
            assert row[key] < 1e-10, f"σ={row['sigma']}: {key} = {row[key]:.2e}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "score_fields.json",
        "score_fields.png",
        "score_fields_errors.png",
    ]


@pytest.mark.parametrize("factor", [1.1, 0.0])
def test_relative_score_error_of_a_scaled_score_is_the_squared_scale_error(factor):
    """ŝ = c·s gives ‖ŝ − s‖² / ‖s‖² = (c − 1)² pointwise, so every weighting gives (c − 1)²."""
    mixture = preset("ring8")
    scaled = lambda x, sigma: factor * mixture.score(x, sigma)  # noqa: E731
    for sigma in (0.1, 1.0):
        numbers, _ = score_fields.score_errors(mixture, scaled, sigma, 97)
        for key in ("rel_error", "rel_error_low", "rel_error_low_pweighted"):
            assert numbers[key] == pytest.approx((factor - 1) ** 2, rel=1e-5), f"σ={sigma} {key}"


def test_low_density_region_holds_a_tenth_of_the_mass_in_the_least_dense_cells():
    mixture = preset("ring8")
    n_grid, sigma = 97, 0.3
    numbers, maps = score_fields.score_errors(mixture, mixture.score, sigma, n_grid)
    from scoregen.plot import grid_points

    points = grid_points(score_fields.BOX, n_grid)[0].float().double()
    density = mixture.log_prob(points, sigma).exp().reshape(n_grid, n_grid)
    low = maps["low"]
    assert density[low].max() <= density[~low].min(), "L must be the least dense cells"
    h = 2 * score_fields.BOX / (n_grid - 1)
    one_cell = float(h**2 * density.max() / numbers["box_mass"])
    assert 0.1 - one_cell <= numbers["low_mass"] <= 0.1


def test_score_energy_matches_a_monte_carlo_estimate():
    """∫_box p_σ ‖s‖² against the mean of ‖s(x)‖² 1[x ∈ box] over n exact draws of p_σ."""
    mixture = preset("ring8")
    generator = torch.Generator().manual_seed(11)
    n = 20_000
    for sigma in (0.1, 1.0):
        numbers, _ = score_fields.score_errors(mixture, mixture.score, sigma, 193)
        x = mixture.sample(n, generator=generator)
        x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        inside = (x.abs() <= score_fields.BOX).all(1)
        values = (mixture.score(x, sigma) ** 2).sum(1) * inside
        estimate, se = values.mean().item(), values.std().item() / math.sqrt(n)
        err = abs(numbers["score_energy"] - estimate)
        assert err < 4 * se, (
            f"σ={sigma}: grid {numbers['score_energy']:.4f} vs MC {estimate:.4f} ± {se:.4f}"
        )


def test_trained_denoiser_scores_beat_zero_and_improve_with_sigma(tmp_path):
    """Robust at a tiny budget (300 steps); the low-density effect needs the default budget
    (see the slow test below): early in training the error near the modes dominates."""
    numbers = score_fields.run(tmp_path, train_steps=300, **TINY)
    rows = numbers["per_sigma"]
    assert numbers["training"]["steps"] == 300 and math.isfinite(numbers["training"]["final_loss"])
    for row in rows:
        assert 0 < row["rel_error"] < 1, f"σ={row['sigma']}: not better than a zero score"
        assert 0 < row["rel_error_low"] < 1, f"σ={row['sigma']}: low region not better than zero"
    assert rows[-1]["rel_error"] < rows[0]["rel_error"], [r["rel_error"] for r in rows]


@pytest.mark.slow
def test_learned_score_is_worse_in_low_density_regions_at_the_smallest_sigma(tmp_path):
    numbers = score_fields.run(tmp_path, field_sigmas=(0.5,))
    first = numbers["per_sigma"][0]
    assert first["rel_error_low"] > first["rel_error"], first


# ---------------------------------------------------------------------- the framework
def test_experiments_are_discovered_and_unknown_names_rejected():
    names = list_experiments()
    assert {"posterior_mean_vs_map", "blurred_density", "score_fields"} <= set(names)
    assert "_common" not in names and "bench" not in names
    assert load_experiment("blurred_density") is blurred_density
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        load_experiment("nope")


def test_main_parses_arguments_runs_and_prints_a_summary_or_the_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        argv = ["--out", str(tmp_path), "--seed", "2", "--threads", "1"]
        numbers = main(posterior_mean_vs_map.run, "doc", argv=argv)
        assert torch.get_num_threads() == 1
        printed = capsys.readouterr().out
        assert printed.startswith(summarize(numbers, "posterior_mean_vs_map") + "\n"), printed
        assert len(printed.splitlines()) <= 41, printed
        assert f"wrote {tmp_path}/" in printed
        numbers = main(posterior_mean_vs_map.run, "doc", argv=[*argv, "--json"])
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    printed = json.loads(text[: text.rindex("}") + 1])
    assert printed == to_jsonable(numbers)
    assert json.loads((tmp_path / "posterior_mean_vs_map.json").read_text()) == printed
    with pytest.raises(SystemExit):
        main(posterior_mean_vs_map.run, "doc", argv=["--threads", "0"])


def test_summary_puts_scalars_on_lines_records_in_tables_and_leaves_long_lists_out():
    numbers = {
        "n": 3,
        "loss": 0.123456,
        "curve": list(range(50)),
        "rows": [{"sigma": 0.5, "mse": 0.25}, {"sigma": 1.0, "mse": 0.75}],
        "nested": {"ok": True, "weights": [0.8, 0.2]},
    }
    text = summarize(numbers)
    lines = text.splitlines()
    assert lines[0] == "n 3, loss 0.1235"
    assert lines[1:5] == ["rows:", "    sigma   mse", "      0.5  0.25", "        1  0.75"]
    assert "nested: ok true, weights [0.8, 0.2]" in lines
    assert "49" not in text  # the 50-long list stays in the JSON
    long = {"rows": [{"i": i} for i in range(100)], **{f"k{i}": {"v": i} for i in range(60)}}
    cut = summarize(long, None).splitlines()
    assert len(cut) == 40 and cut[-1].startswith("... ") and "more rows" in "\n".join(cut)


def test_every_experiment_has_a_whole_first_sentence_as_its_description():
    for name in list_experiments():
        text = describe(name)
        assert text.endswith((".", "!", "?")) and len(text) > 20, (name, text)
        assert "\n" not in text
    assert describe("digits").endswith("annealed Langevin from pure noise.")


def test_experiment_summaries_are_short_for_the_gallery_numbers():
    from experiments.gallery import DOCS, NUMBERS_FILE

    entries = json.loads((DOCS / "gallery" / NUMBERS_FILE).read_text())
    for name, entry in entries.items():
        text = summarize(entry["numbers"], name)
        assert 0 < len(text.splitlines()) <= 40, (name, text)


def test_to_jsonable_converts_tensors_arrays_and_non_finite_numbers():
    value = {"t": torch.tensor([1.5, float("nan")]), "a": np.array([[1, 2]]), "x": np.float32(2.5),
             "inf": float("inf"), "tuple": (1, 2)}  # fmt: skip
    assert to_jsonable(value) == {"t": [1.5, None], "a": [[1, 2]], "x": 2.5, "inf": None,
                                  "tuple": [1, 2]}  # fmt: skip


def test_experiment_runs_as_a_module_script():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.score_fields", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "--full" in out.stdout and "out/score_fields" in out.stdout
