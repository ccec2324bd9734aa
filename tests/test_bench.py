"""The benchmarks' own correctness checks at a tiny size (timings are printed, never asserted)."""

import re

import pytest

from experiments.bench import cpu, deepinv_ula, sampler_overhead


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


def test_cpu_benchmark_quick_run_prints_ratios_and_agrees_with_the_previous_code(capsys):
    cpu.main(["--quick", "--particles", "300", "--batch", "64", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "machine: " in out and " cores; torch " in out and "command: python -m" in out
    assert re.search(r"scoregen CPU benchmarks, \d{4}-\d\d-\d\d \d\d:\d\d UTC", out)
    for name in ("grid25", "ncsn2d"):
        for dtype in ("float64", "float32"):
            row = re.search(rf"{name}\s+300\s+{dtype}\s+\S+\s+\S+\s+(\d+\.\d\d)\s", out)
            assert row, f"no previous/new ratio printed for {name} {dtype}:\n{out}"
    assert "new float32 vs previous float64" in out
    for case in ("one σ, c_noise [1]", "10 levels", "distinct σ (training)"):
        assert re.search(rf"{re.escape(case)}\s+64\s+\S+\s+\S+\s+\d+\.\d\d\s", out), case
    # the contenders compute the same thing (timings are printed, never asserted)
    for row in cpu.oracle_rows(particles=[300], repeats=1):
        limit = 1e-13 if row["dtype"] == "float64" else 1e-4
        assert row["max_rel_diff"] < limit, row
    rows = {row["case"]: row for row in cpu.embedding_rows(batch=64, repeats=1)}
    assert rows["distinct σ (training)"]["max_abs_diff"] == 0.0
    assert rows["one σ, c_noise [1]"]["max_abs_diff"] < 1e-6
