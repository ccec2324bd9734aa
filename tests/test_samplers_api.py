"""What every sampler promises besides the math: σ ladders, initialisers, reproducibility, any
shape/dtype/device, divergence errors, callbacks, trajectories, progress bars, argument errors."""

import math
from itertools import count

import pytest
import torch

from scoregen import (
    GaussianMixture,
    SamplerDivergence,
    TrajectoryRecorder,
    annealed_langevin,
    geometric_sigmas,
    init_from_data,
    init_noise,
    init_uniform,
    karras_sigmas,
    langevin,
    linear_sigmas,
    mala,
    predictor_corrector,
    probability_flow,
    tweedie_score,
)
from scoregen.gmm import preset


def standard_normal_score(x, sigma):
    """Score of N(0, (1 + σ²)I), for any shape and a float or [B] σ."""
    s = sigma if not isinstance(sigma, torch.Tensor) else sigma.reshape(-1, *[1] * (x.ndim - 1))
    return -x / (1 + s**2)


def standard_normal_log_prob(x, sigma):
    return -0.5 * x.reshape(x.shape[0], -1).square().sum(1) / (1 + sigma**2)


SIGMAS = [4.0, 2.0, 1.0, 0.5]

# name -> run(score, x, generator, **options): every sampler through one small call.
SAMPLERS = {
    "langevin": lambda score, x, g, **kw: langevin(
        score, x, sigma=0.5, step_size=0.05, n_steps=6, generator=g, **kw
    ),
    "annealed_langevin": lambda score, x, g, **kw: annealed_langevin(
        score, x, SIGMAS, n_steps_each=2, step_lr=0.05, generator=g, **kw
    ),
    "predictor_corrector": lambda score, x, g, **kw: predictor_corrector(
        score, x, SIGMAS, generator=g, **kw
    ),
    "probability_flow": lambda score, x, g, **kw: probability_flow(score, x, SIGMAS, **kw),
    "mala": lambda score, x, g, **kw: mala(
        standard_normal_log_prob, x, sigma=0.5, step_size=0.05, n_steps=6, generator=g, **kw
    ),
}
STOCHASTIC = [name for name in SAMPLERS if name != "probability_flow"]


# ---------------------------------------------------------------------------- σ ladders
def test_geometric_sigmas_have_constant_ratio_and_exact_ends():
    sigmas = geometric_sigmas(20.0, 1.0, 10, dtype=torch.float64)
    assert sigmas.shape == (10,) and sigmas.dtype == torch.float64
    assert sigmas[0] == 20.0 and sigmas[-1] == 1.0
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 20.0 ** (-1 / 9)), rtol=1e-12)
    assert geometric_sigmas(20, 1, 10).dtype == torch.float32


def test_karras_sigmas_follow_edm_formula_and_rho_one_is_linear():
    sigmas = karras_sigmas(80.0, 0.002, 18, dtype=torch.float64)
    i = torch.arange(18, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(sigmas, expected, rtol=1e-12)
    assert (sigmas[1:] < sigmas[:-1]).all()
    linear = linear_sigmas(5.0, 1.0, 5, dtype=torch.float64)
    assert linear.tolist() == [5.0, 4.0, 3.0, 2.0, 1.0]
    assert torch.allclose(karras_sigmas(5.0, 1.0, 5, rho=1.0, dtype=torch.float64), linear)
    assert linear_sigmas(1.0, 0.0, 3).tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: geometric_sigmas(1.0, 2.0, 5), "sigma_min must be <= sigma_max"),
        (lambda: geometric_sigmas(1.0, 0.0, 5), "sigma_min must be finite and > 0"),
        (lambda: geometric_sigmas(-1.0, 0.1, 5), "sigma_max must be finite and > 0"),
        (lambda: karras_sigmas(1.0, 0.1, 0), "n must be an integer >= 1"),
        (lambda: karras_sigmas(1.0, 0.1, 5, rho=0.0), "rho must be finite and > 0"),
        (lambda: linear_sigmas(1.0, 0.1, 1), "n must be >= 2"),
    ],
)
def test_sigma_ladders_reject_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------- initialisers
def test_initialisers_shapes_spreads_and_reproducibility():
    n = 40_000
    x = init_noise((n, 2), 3.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    # std of a Gaussian sample: relative SE 1/sqrt(2n) ≈ 0.35 %.
    assert abs(x.std().item() / 3.0 - 1) < 4 / math.sqrt(2 * 2 * n)
    same = init_noise((n, 2), 3.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(x, same)
    u = init_uniform((n, 1, 2, 2), -2.0, 6.0, generator=torch.Generator().manual_seed(1))
    assert u.shape == (n, 1, 2, 2) and u.min() >= -2 and u.max() <= 6
    # mean of U(−2, 6) is 2 with SE 8/sqrt(12 · 4n).
    assert abs(u.mean().item() - 2.0) < 4 * 8 / math.sqrt(12 * 4 * n)
    data = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(init_from_data(data, 0.0), data)
    picked = init_from_data(data, 0.0, n=7, generator=torch.Generator().manual_seed(2))
    assert picked.shape == (7, 2) and all(row.tolist() in data.tolist() for row in picked)
    noisy = init_from_data(data[:1].expand(n, 2), 0.5, generator=torch.Generator().manual_seed(3))
    assert abs((noisy - data[0]).std().item() / 0.5 - 1) < 4 / math.sqrt(2 * 2 * n)
    with pytest.raises(ValueError, match="low < high"):
        init_uniform((3, 2), 1.0, 1.0)
    with pytest.raises(ValueError, match="sigma_max must be finite and > 0"):
        init_noise((3, 2), 0.0)


# ---------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_generator_makes_runs_bit_reproducible(name):
    run = SAMPLERS[name]
    x0 = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    a = run(standard_normal_score, x0, torch.Generator().manual_seed(5))
    b = run(standard_normal_score, x0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    if name in STOCHASTIC:
        c = run(standard_normal_score, x0, torch.Generator().manual_seed(6))
        assert not torch.equal(a, c)


# ---------------------------------------------------------------------------- shapes, dtypes, devices
@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("shape", [(16, 2), (4, 1, 16, 16)])
def test_any_shape_dtype_and_device(name, shape, device):
    for dtype in (torch.float32, torch.float64):
        x0 = torch.randn(shape, dtype=dtype, device=device)
        g = torch.Generator(device=device).manual_seed(0)
        x = SAMPLERS[name](standard_normal_score, x0, g)
        assert x.shape == shape and x.dtype == dtype and x.device.type == device.type
        assert torch.isfinite(x).all()


@pytest.mark.parametrize(
    "name", ["langevin", "annealed_langevin", "predictor_corrector", "probability_flow"]
)
def test_samplers_run_a_deepinv_dncnn_through_tweedie(name):
    dinv = pytest.importorskip("deepinv")
    torch.manual_seed(0)
    dncnn = dinv.models.DnCNN(in_channels=1, out_channels=1, pretrained=None).eval()
    score = tweedie_score(dncnn)
    x0 = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x = SAMPLERS[name](score, x0, torch.Generator().manual_seed(1), progress=False)
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
    assert not x.requires_grad  # samplers run under no_grad


def test_langevin_in_half_precisions():
    for dtype in (torch.bfloat16, torch.float16):
        x = langevin(
            standard_normal_score,
            torch.zeros(64, 2, dtype=dtype),
            step_size=0.1,
            n_steps=20,
            generator=torch.Generator().manual_seed(0),
        )
        assert x.dtype == dtype and torch.isfinite(x).all()


def test_oracle_mixture_score_on_image_shaped_batches():
    # A 16-pixel mixture drives chains shaped [B, 1, 4, 4].
    mixture = GaussianMixture(
        [0.5, 0.5], torch.stack([torch.zeros(16), torch.ones(16)]), [0.1, 0.1]
    )
    x = annealed_langevin(
        mixture.score,
        torch.randn(8, 1, 4, 4),
        geometric_sigmas(2.0, 0.1, 3),
        n_steps_each=10,
        step_lr=0.01,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (8, 1, 4, 4) and x.dtype == torch.float32


# ---------------------------------------------------------------------------- divergence
def first_overflow_step(growth: float, dtype=torch.float32) -> int:
    """0-based step at which |x_k| = growth^(k+1) first exceeds the dtype's largest value."""
    return next(k for k in count() if growth ** (k + 1) > torch.finfo(dtype).max)


def test_huge_step_raises_naming_the_exact_first_bad_step():
    # Gradient ascent (T = 0) on N(0, I) with ε = 1000: x_k = (1 − 1000)^k x_0 overflows.
    expected = first_overflow_step(999.0)
    calls = []
    with pytest.raises(
        SamplerDivergence, match=r"smaller step_size \(e\.g\. step_size=100\)"
    ) as err:
        langevin(
            lambda x, sigma: -x,
            torch.ones(4, 3),
            step_size=1000.0,
            n_steps=500,
            temperature=0.0,
            check_every=10,
            callback=calls.append,
        )
    assert err.value.step == expected
    assert err.value.step_size == 1000.0 and err.value.sigma == 0.0
    assert f"non-finite at step {expected}" in str(err.value)
    # The flags are read once per window of 10 steps: the run stopped at the window's end.
    assert len(calls) == (expected // 10 + 1) * 10
    assert not isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)


def test_divergence_in_the_last_window_is_caught_at_the_end():
    expected = first_overflow_step(999.0)
    with pytest.raises(SamplerDivergence) as err:
        langevin(
            lambda x, sigma: -x,
            torch.ones(4, 3),
            step_size=1000.0,
            n_steps=expected + 2,
            temperature=0.0,
            check_every=1000,
        )
    assert err.value.step == expected


@pytest.mark.parametrize("name", ["annealed_langevin", "predictor_corrector", "probability_flow"])
def test_other_samplers_raise_on_divergence(name):
    def exploding(x, sigma):
        return torch.full_like(x, float("nan"))

    with pytest.raises(SamplerDivergence, match=f"{name} diverged.*step 0 \\(level 0, sigma=4"):
        SAMPLERS[name](exploding, torch.zeros(4, 2), torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- callbacks
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_sees_every_step_with_its_level_sigma_and_step_size(name):
    infos = []
    x = SAMPLERS[name](
        standard_normal_score,
        torch.zeros(5, 2),
        torch.Generator().manual_seed(0),
        callback=infos.append,
    )
    assert [info["step"] for info in infos] == list(range(len(infos))) and infos
    for info in infos:
        assert {"step", "level", "sigma", "step_size", "x", "sampler"} <= set(info)
        assert info["sampler"] == name and info["x"].shape == (5, 2)
    assert torch.equal(infos[-1]["x"], x)
    if name == "mala":
        assert {"accepted", "acceptance_rate"} <= set(infos[-1])
    if name in ("annealed_langevin", "predictor_corrector", "probability_flow"):
        levels = [info["level"] for info in infos]
        assert levels == sorted(levels) and levels[-1] == len(SIGMAS) - 1


def test_trajectory_recorder_keeps_cpu_copies_every_k_steps():
    recorder = TrajectoryRecorder(every=5, max_chains=3, x0=torch.zeros(10, 2))
    x = langevin(
        standard_normal_score,
        torch.zeros(10, 2),
        sigma=0.5,
        step_size=0.1,
        n_steps=20,
        generator=torch.Generator().manual_seed(0),
        callback=recorder,
    )
    assert recorder.steps == [-1, 4, 9, 14, 19] and len(recorder) == 5
    path = recorder.stack()
    assert path.shape == (5, 3, 2) and path.device.type == "cpu"
    assert torch.equal(path[-1], x[:3]) and torch.equal(path[0], torch.zeros(3, 2))
    assert recorder.sigmas[1:] == [0.5] * 4
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        TrajectoryRecorder(every=0)


# ---------------------------------------------------------------------------- progress bars
def test_progress_bar_on_when_asked_and_off_when_false(capsys):
    run = SAMPLERS["langevin"]
    run(standard_normal_score, torch.zeros(4, 2), None, progress=True)
    assert "langevin" in capsys.readouterr().err
    run(standard_normal_score, torch.zeros(4, 2), None, progress=False)
    run(standard_normal_score, torch.zeros(4, 2), None)  # auto: short run, not a terminal
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress must be None"):
        run(standard_normal_score, torch.zeros(4, 2), None, progress="yes")


# ---------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda x: langevin(standard_normal_score, x, step_size=0.0, n_steps=3),
            ValueError,
            "step_size",
        ),
        (
            lambda x: langevin(standard_normal_score, x, step_size=0.1, n_steps=0),
            ValueError,
            "n_steps",
        ),
        (
            lambda x: langevin(standard_normal_score, x, step_size=0.1, n_steps=2, temperature=-1),
            ValueError,
            "temperature",
        ),
        (
            lambda x: langevin(standard_normal_score, x, sigma=-1.0, step_size=0.1, n_steps=2),
            ValueError,
            "sigma",
        ),
        (
            lambda x: langevin("score", x, step_size=0.1, n_steps=2),
            TypeError,
            "score must be callable",
        ),
        (
            lambda x: langevin(standard_normal_score, x.long(), step_size=0.1, n_steps=2),
            ValueError,
            "floating-point",
        ),
        (
            lambda x: langevin(lambda v, s: v[:, 0], x, step_size=0.1, n_steps=2),
            ValueError,
            "shaped like x",
        ),
        (
            lambda x: annealed_langevin(standard_normal_score, x, [1.0, 2.0]),
            ValueError,
            "descending",
        ),
        (
            lambda x: annealed_langevin(standard_normal_score, x, [1.0, 0.0, 0.0]),
            ValueError,
            "sigmas must be finite and > 0",
        ),
        (
            lambda x: annealed_langevin(standard_normal_score, x, [1.0], step_lr=0),
            ValueError,
            "step_lr",
        ),
        (lambda x: predictor_corrector(standard_normal_score, x, [1.0]), ValueError, "at least 2"),
        (
            lambda x: predictor_corrector(standard_normal_score, x, [2.0, 1.0], step_norm="max"),
            ValueError,
            "step_norm",
        ),
        (
            lambda x: probability_flow(standard_normal_score, x, [2.0, 1.0], solver="rk4"),
            ValueError,
            "solver",
        ),
        (
            lambda x: mala(lambda v, s: v, x, step_size=0.1, n_steps=2),
            ValueError,
            r"log_prob must return shape \[B\]",
        ),
        (
            lambda x: langevin(standard_normal_score, x, step_size=0.1, n_steps=2, check_every=0),
            ValueError,
            "check_every",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.zeros(4, 2))


def test_oracle_presets_work_as_scores():
    # The oracle's score is a valid `score(x, sigma)` for every sampler (float σ from ladders).
    mixture = preset("ring8")
    x = predictor_corrector(mixture.score, init_noise((8, 2), 10.0), geometric_sigmas(10, 0.1, 5))
    assert x.shape == (8, 2)
