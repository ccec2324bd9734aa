"""Image-sample metrics against known answers: the Fréchet distance of Gaussians in closed form
(and its estimator within a sample-size bound), the kernel distance's unbiasedness against the
cubic kernel's exact Gaussian expectation, class coverage of known label sets, memorisation of
copied vs fresh digits, the report's bands and verdicts, and the shipped digits classifier."""

from __future__ import annotations

import math

import pytest
import torch

from scoregen.metrics import (
    class_coverage,
    frechet_distance,
    frechet_distance_gaussians,
    gaussian_fit,
    image_quality,
    kernel_distance,
    memorisation,
    nearest_distances,
)
from scoregen.models.classifier import (
    ClassifierConfig,
    ImageClassifier,
    classifier_accuracy,
    load_classifier,
    save_classifier,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(seed), dtype=torch.float64))
    return q


@pytest.fixture(scope="module")
def digits_pixels():
    from scoregen.data import load_dataset

    data = load_dataset("digits")
    return (
        data.to_data_space(data.train),
        data.train_labels,
        data.to_data_space(data.test),
        data.test_labels,
    )


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("digits")


# ---------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    # commuting covariances: FD = ‖Δμ‖² + Σ (√a_i − √b_i)², exactly; zeros allowed (singular)
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.0, 2.0]), torch.tensor([9.0, 1.0, 0.25, 0.0])
    exact = (mean_a - mean_b).square().sum() + (var_a.sqrt() - var_b.sqrt()).square().sum()
    value = frechet_distance_gaussians(mean_a, torch.diag(var_a), mean_b, torch.diag(var_b))
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(exact.item(), abs=1e-10)


def test_frechet_distance_of_rotated_gaussians_matches_scipy_sqrtm():
    # non-commuting covariances: the trace term against scipy's general matrix square root
    scipy_linalg = pytest.importorskip("scipy.linalg")
    d = 6
    rotation = random_rotation(d, 0)
    cov_a = torch.diag(torch.linspace(0.1, 3.0, d, dtype=torch.float64))
    cov_b = rotation @ torch.diag(torch.linspace(2.0, 0.5, d, dtype=torch.float64)) @ rotation.T
    mean_a = torch.zeros(d, dtype=torch.float64)
    mean_b = torch.full((d,), 0.5, dtype=torch.float64)
    cross = scipy_linalg.sqrtm((cov_a @ cov_b).numpy())
    exact = 0.25 * d + torch.trace(cov_a + cov_b).item() - 2 * float(cross.real.trace())
    value = frechet_distance_gaussians(mean_a, cov_a, mean_b, cov_b).item()
    assert value == pytest.approx(exact, rel=1e-9)
    # symmetric in its two Gaussians
    assert frechet_distance_gaussians(mean_b, cov_b, mean_a, cov_a).item() == pytest.approx(value)


def test_frechet_distance_of_a_set_with_itself_is_zero_even_when_rank_deficient():
    # 20 points in 64 dimensions: a rank-19 covariance, where sqrtm gives imaginary round-off
    x = torch.randn(20, 64, generator=gen(1))
    value = frechet_distance(x, x).item()
    assert math.isfinite(value) and abs(value) < 1e-10, value


def test_frechet_distance_estimator_of_shifted_gaussians_is_within_the_sample_size_bound():
    # X ~ N(0, I_d), Y ~ N(δ, I_d): population FD = ‖δ‖². With n = m the plug-in estimate has
    # E ≈ ‖δ‖² + 2d/n (means) + d(d+1)/(2n) (covariances, to second order), and standard
    # deviation ≈ sqrt(8‖δ‖²/n) from the mean term.
    d, n = 4, 4000
    delta = torch.tensor([1.0, -0.5, 0.0, 0.5])
    exact = delta.square().sum().item()
    bias = 2 * d / n + d * (d + 1) / (2 * n)
    sd = math.sqrt(8 * exact / n)
    x = torch.randn(n, d, generator=gen(2))
    y = torch.randn(n, d, generator=gen(3)) + delta
    value = frechet_distance(x, y).item()
    assert abs(value - (exact + bias)) < 4 * sd, (value, exact, bias, sd)
    # and without a shift only the (small, positive) bias is left
    same = frechet_distance(x, torch.randn(n, d, generator=gen(4))).item()
    assert 0 < same < 3 * bias, (same, bias)


def test_gaussian_fit_is_the_unbiased_covariance():
    x = torch.randn(50, 3, generator=gen(5), dtype=torch.float64)
    mean, cov = gaussian_fit(x)
    assert torch.allclose(mean, x.mean(0)) and torch.allclose(cov, torch.cov(x.T))


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same number of values"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance_gaussians(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))


# ---------------------------------------------------------------------------- kernel distance
def cubic_kernel_mean(mu, cov, m, s) -> float:
    """E (xᵀy / d + 1)³ for independent x ~ N(μ, Σ), y ~ N(m, S), from the Gaussian moments:
    u = xᵀy has E u = μᵀm, E u² = tr((Σ + μμᵀ)(S + mmᵀ)) and
    E u³ = a³ + 3a (mᵀΣm + μᵀSμ + tr(SΣ)) + 6 μᵀSΣm, with a = μᵀm."""
    d = mu.shape[0]
    a = mu @ m
    first = a
    second = torch.trace((cov + torch.outer(mu, mu)) @ (s + torch.outer(m, m)))
    third = a**3 + 3 * a * (m @ cov @ m + mu @ s @ mu + torch.trace(s @ cov)) + 6 * mu @ s @ cov @ m
    return float(third / d**3 + 3 * second / d**2 + 3 * first / d + 1)


@pytest.mark.parametrize("subset_size", [None, 100])
def test_kernel_distance_is_unbiased_for_the_exact_gaussian_mmd(subset_size):
    d, n, m, reps = 3, 300, 200, 30
    mu_a, mu_b = torch.zeros(d, dtype=torch.float64), torch.tensor([0.8, 0.0, -0.4]).double()
    cov_a = torch.eye(d, dtype=torch.float64)
    cov_b = torch.diag(torch.tensor([0.5, 2.0, 1.0])).double()
    exact = (
        cubic_kernel_mean(mu_a, cov_a, mu_a, cov_a)
        + cubic_kernel_mean(mu_b, cov_b, mu_b, cov_b)
        - 2 * cubic_kernel_mean(mu_a, cov_a, mu_b, cov_b)
    )
    g = gen(6)
    chol_b = torch.linalg.cholesky(cov_b)
    estimates, nulls = [], []
    for _ in range(reps):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = mu_b + torch.randn(m, d, generator=g, dtype=torch.float64) @ chol_b.T
        x2 = torch.randn(m, d, generator=g, dtype=torch.float64)
        estimates.append(kernel_distance(x, y, subset_size=subset_size, n_subsets=5, generator=g))
        nulls.append(kernel_distance(x, x2, subset_size=subset_size, n_subsets=5, generator=g))
    for values, target in ((torch.stack(estimates), exact), (torch.stack(nulls), 0.0)):
        se = values.std().item() / math.sqrt(reps)
        assert abs(values.mean().item() - target) < 4 * se, (values.mean().item(), target, se)
    assert exact > 10 * torch.stack(estimates).std().item() / math.sqrt(reps)  # a real signal


# ---------------------------------------------------------------------------- class coverage
def test_class_coverage_of_known_label_sets():
    balanced = torch.arange(10).repeat(30)
    result = class_coverage(balanced, 10)
    assert result.tv_to_uniform == pytest.approx(0.0)
    assert result.weakest_share == pytest.approx(0.1) and result.n_missing == 0
    # class 3 missing, its 30 samples given to class 7: TV = ½(0.1 + 0.1) = 0.1
    missing = torch.where(balanced == 3, 7, balanced)
    result = class_coverage(missing, 10)
    assert result.weakest_share == 0.0 and result.weakest_class == 3 and result.n_missing == 1
    assert result.tv_to_uniform == pytest.approx(0.1) and result.largest_share == pytest.approx(0.2)
    assert result.counts.tolist() == [30, 30, 30, 0, 30, 30, 30, 60, 30, 30]
    with pytest.raises(ValueError, match=r"integers in \[0, 9\]"):
        class_coverage(torch.tensor([0, 10]), 10)


# ---------------------------------------------------------------------------- memorisation
def test_nearest_distances_are_exact():
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    x = torch.tensor([[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]])
    assert torch.allclose(nearest_distances(x, reference), torch.tensor([1.0, 0.0, 5.0]).double())


def test_memorisation_flags_copies_of_training_digits_and_not_fresh_ones(digits_pixels):
    from scipy.stats import binom

    train, _, test, _ = digits_pixels
    calibration, fresh = test[100:], test[:100]
    copies = train[torch.randperm(train.shape[0], generator=gen(7))[:100]]
    result = memorisation(copies, train, calibration)
    assert result.fraction_close == 1.0 and result.median_ratio < 1e-3
    result = memorisation(fresh, train, calibration)
    # a fresh digit falls below the 1 % quantile with probability 0.01: binomial bound
    bound = binom.ppf(0.999, 100, 0.01) / 100
    assert result.fraction_close <= bound, (result.fraction_close, bound)
    assert 0.7 < result.median_ratio < 1.4, result.median_ratio


# ---------------------------------------------------------------------------- the report
def test_image_quality_of_training_digits_is_real_but_memorised(digits_pixels, classifier):
    train, _, test, _ = digits_pixels
    reports = [
        image_quality(
            train[torch.randperm(train.shape[0], generator=gen(seed))[:300]],
            classifier=classifier,
            train=train,
            test=test,
            seed=seed,
        )  # fmt: skip
        for seed in range(5)
    ]
    # copies of training digits are draws of the reference's own kind: each lands outside the
    # 5-95 % band with probability 0.1, their median (of 5) with probability below 0.01
    for key in ("fd", "kid", "class_tv"):
        median = torch.tensor([r.bands[key].value for r in reports]).median().item()
        band = reports[0].bands[key]
        assert band.low <= median <= band.high, (key, median, band)
    report = reports[0]
    assert report.bands["memorised"].value == 1.0 and not report.bands["memorised"].within
    assert report.bands["nn_ratio"].value == 0.0 and not report.bands["nn_ratio"].within
    assert {"memorised", "nn_ratio"} <= set(report.outside)
    text = str(report)
    assert "Fréchet distance" in text and "closer to train than 0.01 of test" in text
    assert "outside the band" in report.verdict
    assert set(report.to_dict()["bands"]) == set(report.bands)


def test_image_quality_scores_noise_and_a_missing_class_outside_the_band(digits_pixels, classifier):
    train, train_labels, test, _ = digits_pixels
    noise = torch.rand(200, 1, 8, 8, generator=gen(9))
    report = image_quality(noise, classifier=classifier, train=train, test=test)
    assert report.fd_ratio > 5 and not report.bands["fd"].within
    no_sevens = train[train_labels != 7][:300]
    report = image_quality(no_sevens, classifier=classifier, train=train, test=test)
    assert report.coverage.shares[7] < 0.01 and not report.bands["weakest_class"].within
    assert "weakest class share" in report.verdict


def test_image_quality_scores_at_most_two_thirds_of_the_training_set(digits_pixels, classifier):
    train, _, test, _ = digits_pixels
    many = torch.cat([test] * 4)  # 1,188 > two thirds of the 1,500 training digits
    report = image_quality(many, classifier=classifier, train=train, test=test, n_reference_draws=3)
    assert report.n_samples == 1188 and report.n_evaluated == 1000


def test_image_quality_without_a_classifier_scores_memorisation_only(digits_pixels, classifier):
    train, _, test, _ = digits_pixels
    copies = train[:200]
    bare = image_quality(copies, classifier=None, train=train, test=test, n_reference_draws=3)
    assert set(bare.bands) == {"memorised", "nn_ratio"}
    assert bare.unavailable == ["fd", "kid", "class_tv", "weakest_class"]
    assert bare.fd_ratio is None and bare.coverage is None and bare.feature_dim is None
    assert bare.bands["memorised"].value == 1.0 and bare.outside == ["memorised", "nn_ratio"]
    assert "no classifier" in bare.verdict and "class counts" not in str(bare)
    saved = bare.to_dict()
    assert saved["class_counts"] is None and saved["unavailable"] == bare.unavailable
    # the memorisation numbers do not depend on the classifier
    full = image_quality(copies, classifier=classifier, train=train, test=test, n_reference_draws=3)
    assert full.unavailable == []
    for key in ("memorised", "nn_ratio"):
        assert bare.bands[key].value == full.bands[key].value


def test_image_quality_rejects_bad_inputs(digits_pixels, classifier):
    train, _, test, _ = digits_pixels
    with pytest.raises(ValueError, match="samples must be at least 2 images"):
        image_quality(torch.rand(10, 64), classifier=classifier, train=train, test=test)
    with pytest.raises(ValueError, match="one shape"):
        image_quality(torch.rand(10, 1, 9, 9), classifier=classifier, train=train, test=test)
    with pytest.raises(TypeError, match="ImageClassifier"):
        image_quality(train[:10], classifier=lambda x: x, train=train, test=test)


# ---------------------------------------------------------------------------- the classifier
def test_shipped_digits_classifier_is_accurate_on_the_held_out_split(digits_pixels, classifier):
    _, _, test, test_labels = digits_pixels
    accuracy = classifier_accuracy(classifier, test, test_labels)
    assert accuracy >= 0.97, accuracy
    assert accuracy == pytest.approx(classifier.record["held_out_accuracy"])
    assert classifier.record["data"]["n_test"] == 297
    assert "train_classifier" in classifier.record["training"]["command"]
    features, labels = classifier.embed(test)
    assert features.shape == (297, classifier.config.feature_dim)
    assert features.dtype == torch.float64 and labels.dtype == torch.int64
    assert load_classifier("builtin:digits-classifier").record == classifier.record


def test_classifier_files_round_trip_and_foreign_files_are_refused(tmp_path):
    torch.manual_seed(0)
    net = ImageClassifier(ClassifierConfig(shape=(1, 28, 28), channels=(4, 8, 8), feature_dim=6))
    net.calibrate(torch.rand(16, 1, 28, 28, generator=gen(10)))
    path = save_classifier(tmp_path / "c.safetensors", net, held_out_accuracy=0.5)
    loaded = load_classifier(path)
    x = torch.rand(5, 1, 28, 28, generator=gen(11))
    assert torch.equal(loaded(x), net.eval()(x)) and torch.equal(
        loaded.features(x), net.features(x)
    )
    assert loaded.record["held_out_accuracy"] == 0.5 and not loaded.feature.weight.requires_grad
    from scoregen.builtins import BUILTIN_DIR

    with pytest.raises(ValueError, match="not 'scoregen-classifier'"):
        load_classifier(BUILTIN_DIR / "digits-dae.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="not a scoregen classifier file"):
        load_classifier(tmp_path / "pickle.safetensors")
    with pytest.raises(ValueError, match="unknown builtin classifier"):
        load_classifier("builtin:cifar-classifier")
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match=r"pixels must be \[B, 1, 28, 28\]"):
        loaded(torch.rand(2, 1, 8, 8))
