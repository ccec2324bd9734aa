"""experiments.inverse_problems at a tiny size, and the worked example of docs/inverse_problems.md
run as written."""

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments import inverse_problems as ip
from scoregen.metrics import psnr

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "inverse_problems.md"


def test_the_worked_example_runs_as_written_and_prints_what_the_page_says(capsys):
    text = DOC.read_text()
    section = text.split("## Worked example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"It prints[^\n]*\n\n```\n(.*?)```", section, re.S).group(1)
    exec(compile(code, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == shown.splitlines()[0]  # the shapes
    got = [float(v) for v in re.findall(r"([\d.]+) dB", printed)]
    doc = [float(v) for v in re.findall(r"([\d.]+) dB", shown)]
    zero_filled, posterior_mean = got
    assert posterior_mean > zero_filled + 6, printed
    # the page's numbers, up to float differences between machines
    assert all(abs(a - b) < 0.5 for a, b in zip(got, doc)), (printed, shown)
    within = float(re.search(r"(\d+)% of the pixels", printed).group(1)) / 100
    assert 0.8 <= within <= 1.0, printed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("inverse_problems")
    numbers = ip.run(
        out,
        seed=0,
        priors=("digits",),
        n_images={"digits": 2},
        n_val=1,
        n_samples=2,
        study_images=1,
        steps=3,
    )
    return out, numbers


def test_tiny_run_writes_json_figure_and_every_row(tiny):
    out, numbers = tiny
    saved = json.loads((out / "inverse_problems.json").read_text())
    assert saved["table_markdown"] == numbers["table_markdown"]
    with Image.open(out / "inverse_problems.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
    for problem in ip.PROBLEMS:
        rows = saved["table"]["digits"][problem]
        expected = {"A†y (baseline)"} | {f"scoregen {s}" for s in ip.SCOREGEN_SAMPLERS}
        expected |= {f"deepinv {s}" for s in ip.DEEPINV_SOLVERS}
        if problem == "deblurring":
            expected.add("y (observed image)")
        assert set(rows) == expected
        for name, row in rows.items():
            assert -1 <= row["ssim_mean"] <= 1 and row["seconds_per_image"] >= 0, (name, row)
            if "calibration_2std" in row:
                assert 0 <= row["calibration_2std"] <= 1
        for solver in ip.DEEPINV_SOLVERS:
            chosen = saved["deepinv_grid"]["digits"][problem][solver]["chosen"]
            assert (
                chosen in ip.DEEPINV_GRID[solver] and rows[f"deepinv {solver}"]["params"] == chosen
            )


def test_baseline_row_is_the_psnr_of_the_pseudo_inverse(tiny):
    # recomputed here from the same seeded mask, noise and images
    _, numbers = tiny
    x_test, _ = ip.held_out_images("digits", 2, 1, seed=0)
    for problem in ip.PROBLEMS:
        physics = ip.make_physics(problem, tuple(x_test.shape[1:]), ip.NOISE_SIGMA, 0)
        y = ip.observe(physics, x_test, ip.NOISE_SIGMA, 2)
        expected = psnr(physics.A_dagger(y).clamp(0, 1), x_test).mean().item()
        got = numbers["table"]["digits"][problem]["A†y (baseline)"]["psnr_mean"]
        assert got == pytest.approx(expected, abs=1e-6)


def test_step_rule_study_shows_the_exact_likelihood_trap(tiny):
    _, numbers = tiny
    rules = {(r["noise_sigma"], r["problem"], r["rule"]): r for r in numbers["langevin_step_rules"]}
    naive = rules[(0.01, "inpainting", "NCSN steps, exact likelihood")]
    ours = rules[(0.01, "inpainting", "(a)+(b) annealed_posterior_langevin")]
    assert naive["diverged"] and "likelihood term's step is too large" in naive["message"]
    assert not any(r["diverged"] for k, r in rules.items() if k[2].startswith("(a)+(b)"))
    assert ours["psnr_mean"] is not None
    assert {r["noise_sigma"] for r in numbers["noise_levels"]} == {0.01, 0.05, 0.2}


def test_build_patch_prior_trains_a_loadable_checkpoint(tmp_path):
    from scoregen.builtins import load_score_model

    path = ip.build_patch_prior(tmp_path / "prior.safetensors", steps=2)
    model = load_score_model(path)
    assert model.sigma_range == pytest.approx((0.01, 10.0))
    assert model.data["normalization"] == {"scale": 0.5, "shift": 0.5}
    x = torch.zeros(1, 1, 16, 16)
    assert model.score(x, 0.5).shape == x.shape
