"""experiments.digits at a tiny size: its JSON against exact values and independent computations.

One run (60 training steps, 20 chains of a few steps) is shared by the tests. The exact
values: the noisy input's PSNR follows from the χ² law of the noise; the reference numbers
(nearest-neighbour distances, pixel statistics, energy distance, MMD) are recomputed here
with numpy/scipy from the digits split.
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist, pdist
from scipy.special import digamma, polygamma
from sklearn.datasets import load_digits

from experiments import digits
from experiments._common import to_jsonable
from scoregen.data import load_dataset

TINY = {"train_steps": 60, "n_samples": 20, "n_levels": 4, "n_steps_each": 5, "seeded_steps": 10}
FIGURES = (
    "digits_denoising.png",
    "digits_samples.png",
    "digits_trajectory_annealed.png",
    "digits_trajectory_seeded.png",
)
DB = 10.0 / math.log(10.0)  # dB per neper of the MSE ratio


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `python -m experiments.digits` runs: small convs gain nothing
    try:
        numbers = digits.run(out, seed=0, **TINY)
    finally:
        torch.set_num_threads(threads)
    return out, numbers, json.loads((out / "digits.json").read_text())


@pytest.fixture(scope="module")
def split():
    data = load_dataset("digits", model_range=(0.0, 1.0))
    flat = lambda x: x.reshape(x.shape[0], -1).double().numpy()  # noqa: E731
    return flat(data.train), flat(data.test)


def test_writes_json_and_figures(result):
    out, numbers, saved = result
    assert saved == json.loads(json.dumps(to_jsonable(numbers)))
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 50, name


def test_noisy_psnr_matches_the_gaussian_noise_law(result, split):
    """The noise is not clipped, so each image's MSE is σ² χ²_k / k with k = 64 pixels.

    Pooled over N = n_test·64 pixels: PSNR = −20 log10 σ − DB·ln(χ²_N/N), sd ≈ DB·sqrt(2/N)
    (0.045 dB). Mean over images of per-image PSNR: expectation −20 log10 σ − DB·(ψ(k/2) −
    ln(k/2)) (Jensen: +0.068 dB), sd DB·sqrt(ψ'(k/2)/n_test). Bounds are 5 sd. Clipping the
    noisy input would raise the PSNR at σ = 0.8 by several dB.
    """
    _, _, saved = result
    n_test, k = split[1].shape
    pooled_sd = DB * math.sqrt(2.0 / (n_test * k))
    mean_bias = -DB * (digamma(k / 2) - math.log(k / 2))
    mean_sd = DB * math.sqrt(polygamma(1, k / 2) / n_test)
    for row in saved["psnr"]:
        exact = -20.0 * math.log10(row["sigma"])
        assert row["noisy_expected"] == pytest.approx(exact, abs=1e-9)
        assert abs(row["noisy_pooled"] - exact) < 5 * pooled_sd, (row, 5 * pooled_sd)
        assert abs(row["noisy_mean"] - exact - mean_bias) < 5 * mean_sd, (row, 5 * mean_sd)


def test_briefly_trained_denoiser_beats_the_noisy_input(result, split):
    """At σ ≥ 0.4 EDM's skip path alone, D = c_skip·y with c_skip = σ_d²/(σ² + σ_d²), has
    per-pixel MSE (1 − c)² E[x²] + c² σ² well below σ² (computed below from the data: about
    0.10 vs 0.16 at σ = 0.4, 0.18 vs 0.64 at σ = 0.8). The freshly initialised net adds a
    small output on top of it (c_out·net), and the loss minimised in training is exactly this
    MSE, so a pipeline that works clears 1 dB after 60 steps (measured: +6.3 dB at σ = 0.4,
    +10 dB at σ = 0.8); one that is broken (σ in the wrong units, noisy inputs clipped,
    a mismatched split, no conditioning) does not.
    """
    _, _, saved = result
    train, _ = split
    second_moment, sigma_data = float((train**2).mean()), float(train.std())
    checked = 0
    for row in saved["psnr"]:
        if row["sigma"] < 0.4:
            continue
        c = sigma_data**2 / (row["sigma"] ** 2 + sigma_data**2)
        skip_mse = (1 - c) ** 2 * second_moment + c**2 * row["sigma"] ** 2
        assert skip_mse < 0.7 * row["sigma"] ** 2  # the margin claimed above
        assert row["denoised_pooled"] > row["noisy_pooled"] + 1.0, row
        assert row["denoised_mean"] > row["noisy_mean"] + 1.0, row
        checked += 1
    assert checked >= 2


def test_class_histograms_count_every_sample(result):
    _, _, saved = result
    sampling = saved["sampling"]
    for name in ("seeded", "annealed"):
        block = sampling[name]
        histogram = block["class_histogram"]
        assert len(histogram) == 10 and sum(histogram) == sampling["n_samples"] == block["n"]
        assert block["classes_covered"] == sum(h > 0 for h in histogram)
        assert 0.1 <= block["confidence_mean"] <= 1.0
        assert 0.0 <= block["pixel_mean"] <= 1.0 and 0.0 <= block["pixel_std"] <= 0.5
        assert 1 / 201 <= block["energy_test"]["p_value"] <= 1.0  # 200 permutations
        assert block["energy_test"]["null_quantile_99"] > 0.0
    assert 0.0 <= sampling["seeded"]["changed_class_fraction"] <= 1.0
    assert sum(saved["reference"]["class_histogram_test"]) == saved["reference"]["n_test"]


def test_reference_statistics_agree_with_numpy(result, split):
    _, _, saved = result
    ref = saved["reference"]
    train, test = split
    assert (ref["n_train"], ref["n_test"]) == (len(train), len(test))

    nearest = cdist(test, train).min(1)
    assert ref["nn_distance_test_to_train"]["mean"] == pytest.approx(nearest.mean(), rel=1e-6)
    assert ref["nn_distance_test_to_train"]["median"] == pytest.approx(
        np.sort(nearest)[(len(nearest) - 1) // 2],
        rel=1e-6,  # torch's median: the lower middle
    )
    assert ref["pixel_mean_test"] == pytest.approx(test.mean(), rel=1e-5)
    assert ref["pixel_std_test"] == pytest.approx(test.std(ddof=1), rel=1e-5)
    assert ref["pixel_mean_train"] == pytest.approx(train.mean(), rel=1e-5)

    # energy distance (U-statistic within samples) and MMD² with the JSON's bandwidth
    def offdiag_mean(block):
        n = len(block)
        return (block.sum() - np.trace(block)) / (n * (n - 1))

    d_xy, d_xx, d_yy = cdist(train, test), cdist(train, train), cdist(test, test)
    energy = 2 * d_xy.mean() - offdiag_mean(d_xx) - offdiag_mean(d_yy)
    assert ref["energy_distance_train_test"] == pytest.approx(energy, rel=1e-4, abs=1e-7)
    bandwidth = np.median(pdist(np.concatenate([train, test])))
    assert ref["mmd_bandwidth"] == pytest.approx(bandwidth, rel=1e-5)
    kernel = lambda d: np.exp(-(d**2) / (2 * bandwidth**2))  # noqa: E731
    mmd2 = offdiag_mean(kernel(d_xx)) + offdiag_mean(kernel(d_yy)) - 2 * kernel(d_xy).mean()
    assert ref["mmd_train_test"] == pytest.approx(mmd2, rel=1e-3, abs=1e-7)


def test_classifier_histogram_matches_the_true_test_labels(result):
    """A classifier with accuracy a mislabels (1 − a)·n test digits; each moves one count
    from one bin to another, so the histograms differ by at most 2(1 − a)n in L1."""
    _, _, saved = result
    ref = saved["reference"]
    assert ref["classifier_test_accuracy"] > 0.9  # logistic regression on digits: ~0.96
    targets = load_digits().target
    # the test split holds n_test digits; compare with the label counts of the same split
    from scoregen.data import split_indices

    _, test_index = split_indices(len(targets), ref["n_test"], seed=0)
    truth = np.bincount(targets[test_index.numpy()], minlength=10)
    predicted = np.array(ref["class_histogram_test"])
    errors = round((1 - ref["classifier_test_accuracy"]) * ref["n_test"])
    assert np.abs(truth - predicted).sum() <= 2 * errors


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_samples"):
        digits.run(tmp_path, n_samples=0)
    with pytest.raises(ValueError, match="seeded_sigma"):
        digits.run(tmp_path, seeded_sigma=5.0)
