"""experiments.compare_architectures at a tiny size: its JSON against independent facts.

The noisy-input row is checked against the exact distribution of the PSNR of Gaussian
noise; parameter counts against freshly built networks; the table file against the JSON.
"""

import json
import math

import pytest
from scipy.special import digamma, polygamma

from experiments import compare_architectures
from experiments._common import to_jsonable
from scoregen.data import load_dataset
from scoregen.models import build_net, count_parameters

FAMILIES = ("mlp", "dncnn")
SIGMAS_PIXEL = (0.05, 0.2)
N_EVAL = {"digits": 297, "patches": 512}  # all digits test examples; 512 test patches
ROW_FIELDS = {"model", "parameters", "train_seconds", "config", "by_sigma"}
SIGMA_FIELDS = {"sigma_pixel", "sigma", "mse", "psnr", "psnr_se"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    numbers = compare_architectures.run(
        out,
        families=FAMILIES,
        steps=4,
        batch_size=8,
        n_eval=max(N_EVAL.values()),
        sigmas_pixel=SIGMAS_PIXEL,
    )
    return out, numbers


def test_json_holds_what_run_returned(tiny_run):
    out, numbers = tiny_run
    saved = json.loads((out / "compare_architectures.json").read_text())
    assert saved == json.loads(json.dumps(to_jsonable(numbers)))
    assert set(saved["datasets"]) == {"digits", "patches"}
    assert saved["sigmas_pixel"] == list(SIGMAS_PIXEL) and saved["steps"] == 4


def test_every_row_has_its_fields_and_the_sigmas_in_both_units(tiny_run):
    _, numbers = tiny_run
    for name, block in numbers["datasets"].items():
        assert block["n_eval"] == N_EVAL[name]
        assert [row["model"] for row in block["rows"]] == ["noisy", *FAMILIES]
        scale = load_dataset(name).normalization["scale"]
        for row in block["rows"]:
            assert ROW_FIELDS <= set(row), f"{name}/{row['model']} lacks {ROW_FIELDS - set(row)}"
            assert [e["sigma_pixel"] for e in row["by_sigma"]] == list(SIGMAS_PIXEL)
            for entry in row["by_sigma"]:
                assert set(entry) == SIGMA_FIELDS
                assert entry["sigma"] * scale == pytest.approx(entry["sigma_pixel"])
                assert all(math.isfinite(entry[k]) for k in ("mse", "psnr", "psnr_se"))
                # the mean of per-example PSNRs is at least the PSNR of the mean MSE
                # (−log is convex: Jensen), with equality only if every MSE is equal
                assert entry["psnr"] >= 10 * math.log10(1 / entry["mse"]) - 1e-9
            if row["model"] != "noisy":
                assert row["train_seconds"] > 0


def test_parameter_counts_are_those_of_freshly_built_networks(tiny_run):
    _, numbers = tiny_run
    for block in numbers["datasets"].values():
        for row in block["rows"][1:]:
            net = build_net(row["model"], shape=tuple(block["shape"]), **row["config"])
            assert row["parameters"] == count_parameters(net), row["model"]


def test_noisy_row_matches_the_exact_psnr_of_gaussian_noise(tiny_run):
    # Per example (d pixels), MSE_b = s² χ²_d / d exactly, so PSNR_b = −20 log10 s − (10 / ln
    # 10) ln(χ²_d / d), whose mean is −20 log10 s − (10 / ln 10)(ψ(d/2) − ln(d/2)) and variance
    # (10 / ln 10)² ψ'(d/2) (log of a Gamma variable). The pixel MSE over all n·d values has
    # mean s² and relative standard deviation sqrt(2 / (n d)). Bounds: 4.5 standard errors
    # (two-sided probability about 7e-6 per check under the normal approximation).
    _, numbers = tiny_run
    db = 10 / math.log(10)
    for name, block in numbers["datasets"].items():
        d, n = math.prod(block["shape"]), block["n_eval"]
        expected_shift = -db * (digamma(d / 2) - math.log(d / 2))  # Jensen: > 0
        psnr_se = db * math.sqrt(polygamma(1, d / 2) / n)
        for entry in block["rows"][0]["by_sigma"]:
            s = entry["sigma_pixel"]
            want = -20 * math.log10(s) + expected_shift
            assert abs(entry["psnr"] - want) < 4.5 * psnr_se, (
                f"{name}, σ={s}: noisy PSNR {entry['psnr']:.4f} dB, exact mean {want:.4f} "
                f"± {psnr_se:.4f}"
            )
            ratio = entry["mse"] / s**2
            assert abs(ratio - 1) < 4.5 * math.sqrt(2 / (n * d)), (name, s, ratio)
            # the reported standard error is the sample estimate of the same quantity
            assert entry["psnr_se"] == pytest.approx(psnr_se, rel=0.25)


def test_table_and_figures_are_written(tiny_run):
    out, numbers = tiny_run
    table = (out / "compare_architectures.md").read_text()
    assert table.count("| model | parameters | train s | σ=0.05 | σ=0.2 |") == 2
    for block in numbers["datasets"].values():
        for row in block["rows"]:
            cells = " | ".join(f"{e['psnr']:.2f}" for e in row["by_sigma"])
            assert f"| {cells} |" in table, row["model"]
    for suffix in ("psnr", "examples"):
        assert (out / f"compare_architectures_{suffix}.png").stat().st_size > 1000


def test_bad_options_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="families: unknown family 'resnet'"):
        compare_architectures.run(tmp_path, families=["resnet"])
    with pytest.raises(ValueError, match="datasets: unknown dataset 'cifar10'"):
        compare_architectures.run(tmp_path, datasets=["cifar10"])
    with pytest.raises(ValueError, match=r"sigmas_pixel must be finite and > 0, got \[0.1, -0.2\]"):
        compare_architectures.run(tmp_path, sigmas_pixel=[0.1, -0.2])
    with pytest.raises(ValueError, match="n_eval must be an integer >= 1, got 0"):
        compare_architectures.run(tmp_path, n_eval=0)
    assert not any(tmp_path.iterdir())
