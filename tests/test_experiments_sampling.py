"""The sampling experiments at a tiny size: their JSON numbers against the exact law of the chain.

References do not reuse the experiments' code paths. For the NCSN toy the chain's law is
computed on a grid: with equal isotropic covariances and means on the diagonal, the
coordinate ``u = (x₁ + x₂)/√2`` follows a 1-D ULA chain of its own on the diagonal marginal
``0.8 N(5√2, 1 + σ²) + 0.2 N(−5√2, 1 + σ²)`` (the score's diagonal part depends on ``u``
alone, the noise's diagonal part is ``N(0, 2α)``), and the mode a chain is counted in depends
on ``u`` alone. Propagating the density of ``u`` through every step of the sampler with a
transfer matrix gives the expected mode weight of the *finite* run, biases of too-short
annealing included; the sampled fraction must then lie within binomial error of it. The
1-D temperature runs get the same treatment, and for a Gaussian target the chain's law is
Gaussian with a variance known in closed form.
"""

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import sparse, stats
from scipy.special import logsumexp, ndtr

from experiments import langevin_vs_annealed, trajectories
from experiments._common import list_experiments, to_jsonable
from scoregen import tweedie_score
from scoregen.gmm import preset

Z_BOUND = 4.0  # binomial bounds at 4 standard errors: two-sided false alarm 6e-5
KS_ALPHA = 1e-4  # Kolmogorov–Smirnov bounds: exceeded with probability 1e-4 under the law


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The experiments' own entry point runs on one torch thread; so do these runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_experiments_are_listed():
    names = list_experiments()
    assert "langevin_vs_annealed" in names and "trajectories" in names, names


# ---------------------------------------------------------------------- the chain's law on a grid
def mixture_score_1d(u, weights, means, var):
    """Score of ``Σ w_k N(m_k, var)`` at ``u`` (numpy)."""
    u = np.asarray(u)[:, None]
    log_r = np.log(weights) - 0.5 * (u - means) ** 2 / var
    r = np.exp(log_r - logsumexp(log_r, axis=1, keepdims=True))
    return (r * (means - u)).sum(1) / var


def propagate(mass, grid, plan, score_at):
    """Cell masses of a 1-D ULA chain after the steps of ``plan`` = [(σ, ε, n, T), ...].

    One step moves the mass of cell j to ``N(u_j + ε s(u_j, σ), 2εT)``, binned into the cells
    (mass leaving the grid is dropped; the grids here are wide enough that none does).
    """
    h = grid[1] - grid[0]
    edges = np.concatenate([grid - h / 2, [grid[-1] + h / 2]])
    for sigma, step, n_steps, temperature in plan:
        mean = grid + step * score_at(grid, sigma)
        sd = math.sqrt(2 * step * temperature)
        cdf = ndtr((edges[:, None] - mean[None, :]) / sd)
        kernel = cdf[1:] - cdf[:-1]  # kernel[i, j] = P(cell j -> cell i)
        kernel = sparse.csr_matrix(np.where(kernel > 1e-15, kernel, 0.0))  # a band: > 8 sd is 0
        for _ in range(n_steps):
            mass = kernel @ mass
    return mass


NCSN_MEAN = 5.0 * math.sqrt(2.0)  # the means ±(5, 5) on the diagonal coordinate


@functools.lru_cache
def ncsn_weight_of_chain(sigmas: tuple, n_steps_each, step_lr, annealed, box=8.0, h=0.2):
    """Expected fraction counted in the 0.8 mode after the experiment's run, from the law of
    ``u``: uniform box start (``u`` = (x₁ + x₂)/√2 has a triangular law), annealed ladder or
    plain steps at ``σ_L``, then the count ``0.8 N(u; a, v) > 0.2 N(u; −a, v)``, v = 1 + σ_L²."""
    grid = np.arange(-100.0, 100.0 + h / 2, h)  # 5 std of p_σ at σ = 20
    s_edges = math.sqrt(2.0) * np.concatenate([grid - h / 2, [grid[-1] + h / 2]])
    s = np.clip(s_edges, -2 * box, 2 * box)
    cdf = np.where(s < 0, (s + 2 * box) ** 2, 2 * (2 * box) ** 2 - (2 * box - s) ** 2)
    mass = np.diff(cdf / (2 * (2 * box) ** 2))
    weights, means = np.array([0.8, 0.2]), np.array([NCSN_MEAN, -NCSN_MEAN])

    def score_at(u, sigma):
        return mixture_score_1d(u, weights, means, 1.0 + sigma**2)

    sigma_last = sigmas[-1]
    if annealed:
        plan = [(s_i, step_lr * s_i**2 / sigma_last**2, n_steps_each, 1.0) for s_i in sigmas]
    else:
        plan = [(sigma_last, step_lr, len(sigmas) * n_steps_each, 1.0)]
    mass = propagate(mass, grid, plan, score_at)
    var = 1.0 + sigma_last**2
    threshold = var * math.log(0.2 / 0.8) / (2 * NCSN_MEAN)  # where the two terms are equal
    return float(mass[grid > threshold].sum() / mass.sum())


# ---------------------------------------------------------------------- langevin_vs_annealed
LVA = {
    "n_chains": 2000,
    "n_steps_each": 30,
    "n_chains_learned": 600,
    "n_steps_each_learned": 30,
    "n_chains_1d": 4000,
    "n_steps_1d": 400,
    "step_size_1d": 0.02,
}


@pytest.fixture(scope="module")
def lva(tmp_path_factory):
    out = tmp_path_factory.mktemp("lva")
    mixture = preset("ncsn2d")
    # the learned score's slot gets the oracle's posterior mean through Tweedie's formula (a
    # different code path from mixture.score), so part (b) can be checked against the exact law
    numbers = langevin_vs_annealed.run(
        out, seed=1, learned_score=tweedie_score(mixture.denoise), **LVA
    )
    assert json.loads((out / "langevin_vs_annealed.json").read_text()) == to_jsonable(numbers)
    for name in numbers["figures"]:
        assert (out / name).stat().st_size > 10_000, name
    return to_jsonable(numbers)


@pytest.mark.parametrize("score", ["exact", "learned"])
@pytest.mark.parametrize("sampler", ["plain", "annealed"])
def test_mode_weights_match_the_exact_law_of_the_chain(lva, score, sampler):
    toy = lva["toy"]
    row = toy[score]
    expected = ncsn_weight_of_chain(
        tuple(toy["sigmas"]), row["n_steps_each"], toy["step_lr"], annealed=sampler == "annealed"
    )
    table = row[sampler]
    n, w = table["n"], table["weights"][0]
    assert n == row["n_chains"]
    assert table["se"][0] == pytest.approx(math.sqrt(w * (1 - w) / n), rel=1e-12)
    # chains are independent: the count is Binomial(n, expected); 4 s.e. plus 2e-3 for the
    # grid (h = 0.2 and h = 0.05 give the same `expected` within 3e-4)
    bound = Z_BOUND * math.sqrt(expected * (1 - expected) / n) + 2e-3
    assert abs(w - expected) <= bound, (
        f"{score} {sampler}: weight {w:.4f}, exact law of the chain {expected:.4f}, bound {bound:.4f}"
    )


def test_annealing_recovers_the_weights_and_plain_langevin_does_not(lva):
    toy = lva["toy"]
    # what the exact law says of these short runs: annealing lands near 0.8, plain near 0.5
    n_each = LVA["n_steps_each"]
    annealed = ncsn_weight_of_chain(tuple(toy["sigmas"]), n_each, toy["step_lr"], annealed=True)
    plain = ncsn_weight_of_chain(tuple(toy["sigmas"]), n_each, toy["step_lr"], annealed=False)
    assert abs(annealed - 0.8) < 0.05 and abs(plain - 0.5) < 0.02, (annealed, plain)
    exact = toy["exact"]
    assert exact["annealed"]["weights"][0] - exact["plain"]["weights"][0] > 0.2


def ula_gaussian_variance_after(std, step, temperature, n_steps, var0):
    """Variance of ULA on N(0, s²) after n steps from N(0, var0): x' = a x + sqrt(2εT) z."""
    a = 1.0 - step / std**2
    stationary = 2 * step * temperature / (1 - a * a)
    return a ** (2 * n_steps) * var0 + stationary * (1 - a ** (2 * n_steps))


def sup_cdf_gap_normal(var1, var2):
    """sup_x |Φ(x/√v₁) − Φ(x/√v₂)|, attained where the two densities cross."""
    if var1 == var2:
        return 0.0
    x = math.sqrt(var1 * var2 * math.log(var1 / var2) / (var1 - var2))
    return abs(ndtr(x / math.sqrt(var1)) - ndtr(x / math.sqrt(var2)))


@pytest.mark.parametrize("label, temperature", [("T_half", 0.5), ("T_one", 1.0)])
def test_gaussian_loop_variance_is_t_times_s2_up_to_ula_bias(lva, label, temperature):
    gauss = lva["temperature"]["gaussian"]
    std, row = gauss["std"], gauss[label]
    n, step, n_steps = gauss["n_chains"], gauss["step_size"], gauss["n_steps"]
    # chains start from exact samples of p = N(0, s²) and stay Gaussian (the update is linear)
    var_t = ula_gaussian_variance_after(std, step, temperature, n_steps, std**2)
    stationary = 2 * step * temperature / (1 - (1 - step / std**2) ** 2)
    assert row["ula_stationary_variance"] == pytest.approx(stationary, rel=1e-12)
    assert row["exact_variance_T_s2"] == pytest.approx(temperature * std**2)
    assert abs(var_t - temperature * std**2) < 0.02 * temperature * std**2  # ULA bias ~ ε/2s²
    # (n − 1) S² / v ~ χ²(n − 1) for independent Gaussian chains; two-sided 1e-6
    lo, hi = (stats.chi2.ppf(q, n - 1) / (n - 1) for q in (5e-7, 1 - 5e-7))
    ratio = row["variance"] / var_t
    assert lo <= ratio <= hi, f"{label}: S²/v = {ratio:.4f} outside [{lo:.4f}, {hi:.4f}]"


@pytest.mark.parametrize("label, temperature", [("T_half", 0.5), ("T_one", 1.0)])
def test_gaussian_loop_ks_distances_to_p_and_p_squared(lva, label, temperature):
    gauss = lva["temperature"]["gaussian"]
    std, row, n = gauss["std"], gauss[label], gauss["n_chains"]
    var_t = ula_gaussian_variance_after(
        std, gauss["step_size"], temperature, gauss["n_steps"], std**2
    )
    crit = stats.kstwo.ppf(1 - KS_ALPHA, n)
    # triangle inequality: |KS(samples, F) − sup|F_chain − F|| ≤ KS(samples, F_chain) ≤ crit
    for law, var in (("p", std**2), ("p2", std**2 / 2)):
        gap = sup_cdf_gap_normal(var_t, var)
        ks = row[f"ks_to_{law}"]
        assert gap - crit <= ks <= gap + crit, f"{label} to {law}: KS {ks:.4f}, gap {gap:.4f}"
    near, far = ("p2", "p") if temperature == 0.5 else ("p", "p2")
    assert (
        row[f"ks_to_{near}"] < row[f"ks_to_{far}"]
        and row[f"tv_hist_to_{near}"] < row[f"tv_hist_to_{far}"]
    )


@pytest.mark.parametrize("label, temperature", [("T_half", 0.5), ("T_one", 1.0)])
def test_mixture_loop_samples_p_to_the_one_over_t(lva, label, temperature):
    mix = lva["temperature"]["mixture"]
    row, n = mix[label], mix["n_chains"]
    weights, means = np.array(mix["weights"]), np.array(mix["means"])[:, 0]
    var = mix["covs"][0]
    h = 0.01
    grid = np.arange(-5.0, 5.0 + h / 2, h)
    edges = np.concatenate([grid - h / 2, [grid[-1] + h / 2]])
    cdf_p = (weights * ndtr((edges[:, None] - means) / math.sqrt(var))).sum(1)
    mass = propagate(
        np.diff(cdf_p), grid, [(0.0, mix["step_size"], mix["n_steps"], temperature)],
        lambda u, _: mixture_score_1d(u, weights, means, var),
    )  # fmt: skip
    chain_cdf = np.concatenate([[0.0], np.cumsum(mass)])
    log_p = logsumexp(np.log(weights) - 0.5 * (edges[:, None] - means) ** 2 / var, axis=1)
    for law, power in (("p", 1.0), ("p2", 2.0)):
        q = np.exp(power * (log_p - log_p.max()))
        law_cdf = np.concatenate([[0.0], np.cumsum(0.5 * (q[1:] + q[:-1]) * h)])
        gap = np.abs(chain_cdf - law_cdf / law_cdf[-1]).max()
        if (law == "p2") == (temperature == 0.5):
            assert gap < 0.02, f"{label}: the chain's law is {gap:.4f} from {law} in sup-CDF"
        # KS against the chain's law ≤ crit; 3e-3 for the grid (h and the binned drift)
        crit = stats.kstwo.ppf(1 - KS_ALPHA, n) + 3e-3
        ks = row[f"ks_to_{law}"]
        assert gap - crit <= ks <= gap + crit, f"{label} to {law}: KS {ks:.4f}, gap {gap:.4f}"


# ---------------------------------------------------------------------- a short real training run
def test_learned_score_is_trained_when_not_given(tmp_path):
    numbers = langevin_vs_annealed.run(
        tmp_path, n_chains=200, n_steps_each=5, n_chains_learned=200, n_steps_each_learned=5,
        train_steps=40, hidden=(16, 16), n_chains_1d=200, n_steps_1d=10, draw=False,
    )  # fmt: skip
    assert numbers["figures"] == [] and not list(tmp_path.glob("*.png"))
    learned = numbers["toy"]["learned"]
    assert learned["training"]["steps"] == 40 and learned["training"]["hidden"] == [16, 16]
    assert math.isfinite(learned["training"]["final_loss"])
    for sampler in ("plain", "annealed"):
        weights = torch.as_tensor(learned[sampler]["weights"])
        assert abs(float(weights.sum()) - 1) < 1e-12 and learned[sampler]["n"] == 200


# ---------------------------------------------------------------------- trajectories
@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    out = tmp_path_factory.mktemp("traj")
    # 100 steps per level: the slowest level contracts a chain's excess variance by e^-4
    numbers = trajectories.run(
        out, seed=2, n_chains=800, n_steps_each=100, n_ed=400, gif_frames=4, n_panels=3
    )
    assert json.loads((out / "trajectories.json").read_text()) == to_jsonable(numbers)
    gif = out / "trajectories_ring8.gif"
    assert 10_000 < gif.stat().st_size < 1_000_000, gif.stat().st_size
    with Image.open(gif) as image:
        assert image.n_frames == 4
    for name in numbers["figures"]:
        assert (out / name).exists(), name
    return to_jsonable(numbers)


@pytest.mark.parametrize("toy", ["ring8", "ncsn2d"])
def test_trajectory_levels_follow_the_ladder(traj, toy):
    result = traj["toys"][toy]
    assert [row["sigma"] for row in result["levels"]] == pytest.approx(result["sigmas"])


@pytest.mark.parametrize("toy", ["ring8", "ncsn2d"])
def test_final_level_is_indistinguishable_from_p_sigma(traj, toy):
    final = traj["toys"][toy]["levels"][-1]
    # the energy distance against fresh exact samples of p_σ stays below its permutation
    # null's 99 % quantile (a 1 % test at a fixed seed)
    assert final["energy_distance"] <= final["energy_null_q99"], final


@pytest.mark.parametrize("toy", ["ring8", "ncsn2d"])
def test_distance_to_p_falls_as_sigma_decreases(traj, toy):
    levels = traj["toys"][toy]["levels"]
    to_p = [row["energy_distance_to_p"] for row in levels]
    # while the gap to p is well above the sampling noise it must shrink level after level;
    # at the end it is noise (below the 99 % null quantile of the level)
    for i in range(len(to_p) - 1):
        if to_p[i + 1] > 2 * levels[i + 1]["energy_null_q99"]:
            assert to_p[i + 1] < to_p[i], f"{toy}: energy distance to p rose: {to_p}"
    assert to_p[0] > 10 * max(to_p[-1], levels[-1]["energy_null_q99"]), to_p
    assert to_p[-1] <= levels[-1]["energy_null_q99"], to_p


def test_ring_mode_weights_are_uniform_at_every_level(traj):
    # the start σ₁ z and the ring are invariant under rotation by 45°, so each of the eight
    # modes holds exactly 1/8 of the chains' law: counts are Multinomial(n, 1/8)
    result = traj["toys"]["ring8"]
    n = traj["n_chains"]
    bound = Z_BOUND * math.sqrt((1 / 8) * (7 / 8) / n)
    for row in result["levels"]:
        worst = max(abs(w - 1 / 8) for w in row["mode_weights"])
        assert worst <= bound, f"σ={row['sigma']:.3g}: weight off 1/8 by {worst:.4f} > {bound:.4f}"


@pytest.mark.parametrize("toy", ["ring8", "ncsn2d"])
def test_particles_gather_at_the_modes_like_exact_samples(traj, toy):
    final = traj["toys"][toy]["levels"][-1]
    n = traj["n_chains"]
    # two independent binomial fractions: 4 s.e. of their difference
    p = final["frac_within_exact"]
    bound = Z_BOUND * math.sqrt(2 * max(p * (1 - p), 1 / n) / n)
    assert abs(final["frac_within"] - p) <= bound, final
    assert final["frac_within"] > 0.9
