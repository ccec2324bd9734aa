"""The benchmarks' own correctness checks at a tiny size (timings are printed, never asserted)."""

import pytest

from experiments.bench import deepinv_ula, sampler_overhead


def test_scoregen_posterior_chain_equals_deepinv_ula_with_the_same_noise():
    pytest.importorskip("deepinv")
    times, check = deepinv_ula.run(batch=2, n_steps=5, repeats=1)
    assert set(times) == {
        "floor (denoiser only)",
        "bare loop",
        "deepinv ULA",
        "scoregen + Welford",
        "scoregen (final state)",
    }
    # Same update, same noise stream: float32 rounding only, far below one step's noise.
    assert check["max |Δ posterior mean|"] < 1e-5 * max(1.0, check["noise per step"])
    assert "deepinv ULA" in deepinv_ula.report(times, check, 2, 5, "cpu")


def test_langevin_equals_the_bare_loop_in_the_overhead_benchmark():
    times = sampler_overhead.run(n_particles=64, n_steps=5, repeats=1)
    assert times["max |langevin - bare|"][0] < 1e-5
