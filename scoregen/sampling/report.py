"""What a sampling run is worth, in numbers a reader can judge: each compared with what exact
(or held-out) sample sets of the same size score."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from scoregen.metrics import ImageQuality

__all__ = ["Banded", "SampleReport", "report_samples"]

# Images: the report compares with at most this many held-out images (the memorisation
# threshold's nearest-training distances cost one pass over the training set each).
MAX_REPORT_IMAGES = 1000
# The report looks at no more than this many samples (a random subset beyond), so its cost
# and memory stay bounded whatever the run's size: energy distances are O(n²).
MAX_REPORT_POINTS = 1000
REFERENCE_SETS = 50  # exact or held-out sets of the same size that make the band
SPREAD_REFERENCE = 20_000  # exact draws that set each mode's expected spread


@dataclass(frozen=True)
class Banded:
    """A statistic of the samples next to the same statistic for reference sets of the same
    size (exact draws, or fresh draws of the data against held-out data): its median and its
    5–95 % band over ``n_sets`` sets, and the Monte-Carlo p-value of "the samples are as
    good as a reference set" (the upper tail: the share of reference sets scoring as badly)."""

    name: str
    value: float
    median: float
    low: float
    high: float
    n_sets: int
    p_value: float

    @property
    def verdict(self) -> str:
        if self.p_value > 0.05:
            return f"as close as reference sets of the same size (p = {self.p_value:.2g})"
        return f"farther than 95 % of reference sets (p = {self.p_value:.2g})"

    def __str__(self) -> str:
        return (
            f"{self.name} {self.value:.4g} (reference sets of the same size: median "
            f"{self.median:.4g}, 5–95 % [{self.low:.4g}, {self.high:.4g}]): {self.verdict}"
        )


def banded(name: str, value: float, reference: Tensor) -> Banded:
    reference = reference.double()
    low, median, high = torch.quantile(reference, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()  # fmt: skip
    p = (1 + int((reference >= value).sum())) / (1 + reference.numel())
    return Banded(name, float(value), median, low, high, reference.numel(), p)


@dataclass
class SampleReport:
    """The quality lines of one run: what the samples are compared with, and each number with
    its reference band. ``str(report)`` is what ``scoregen sample`` prints."""

    target: str | None
    n: int
    lines: list[str] = field(default_factory=list)
    distance: Banded | None = None
    mode_weights: list[float] | None = None
    true_weights: list[float] | None = None
    worst_weight_z: float | None = None
    spread_ratios: list[float] | None = None
    spread_counts: list[int] | None = None
    image: ImageQuality | None = None

    def __str__(self) -> str:
        if self.target is None:
            return "\n".join(self.lines)
        return "\n".join([f"Compared with {self.target}:"] + [f"  {line}" for line in self.lines])


def _subset(x: Tensor, limit: int, generator: torch.Generator) -> Tensor:
    if x.shape[0] <= limit:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:limit]]


def _energy_band(name, samples, reference, draw_reference_set) -> Banded:
    """The energy distance of ``samples`` to ``reference``, and of :data:`REFERENCE_SETS` sets
    from ``draw_reference_set()`` to the same reference (the band). The reference's own
    within-set term is computed once: it shifts every value alike."""

    def offdiag_mean(a: Tensor) -> float:
        distances = torch.cdist(a, a)
        return float(distances.sum() / (a.shape[0] * (a.shape[0] - 1)))

    within_reference = offdiag_mean(reference)

    def distance(x: Tensor) -> float:
        return 2.0 * float(torch.cdist(x, reference).mean()) - offdiag_mean(x) - within_reference

    sets = torch.tensor([distance(draw_reference_set()) for _ in range(REFERENCE_SETS)])
    return banded(name, distance(samples), sets)


def _mixture_lines(report: SampleReport, x: Tensor, target, generator) -> None:
    """Mode weights (binomial standard errors) and within-mode spreads against the mixture.

    A mode's spread is the RMS distance to the mode's mean per coordinate of the samples
    assigned to it (most responsible component), over the same for
    :data:`SPREAD_REFERENCE` exact draws assigned the same way (so overlapping modes, whose
    assignment cuts the tails, compare like with like); for m samples in d dimensions its
    standard error is about ``1 / sqrt(2 d m)``."""
    from scoregen.metrics import mode_weights

    n = x.shape[0]
    weights = mode_weights(x, target)
    true = target.weights.cpu()
    stderr = (true * (1 - true) / n).sqrt().clamp_min(1e-12)
    z = ((weights - true).abs() / stderr).max().item()
    shown = 8
    listed = ", ".join(f"{w:.3f}" for w in weights.tolist()[:shown])
    listed_true = ", ".join(f"{w:.3f}" for w in true.tolist()[:shown])
    more = " ..." if target.n_components > shown else ""
    verdict = "within 3 standard errors" if z <= 3 else f"off by up to {z:.1f} standard errors"
    report.lines.append(
        f"mode weights [{listed}{more}] vs true [{listed_true}{more}] (standard error about "
        f"{stderr.max().item():.3f} with {n} samples): {verdict}"
    )
    report.mode_weights, report.true_weights = weights.tolist(), true.tolist()
    report.worst_weight_z = z
    # spread: RMS distance to the mode's mean per coordinate, samples of that mode only
    def spreads(points: Tensor) -> tuple[list[float], list[int]]:
        assignment = target.responsibilities(points).argmax(dim=1)
        rms, count = [], []
        for k in range(target.n_components):
            members = points[assignment == k]
            rms.append((members - target.means[k]).square().mean().sqrt().item() if members.shape[0] else math.nan)  # fmt: skip
            count.append(members.shape[0])
        return rms, count

    exact, _ = spreads(target.sample(SPREAD_REFERENCE, generator=generator))
    found, found_counts = spreads(x)
    ratios, counts = [], []
    for k in range(target.n_components):
        if found_counts[k] >= 20:
            ratios.append(found[k] / exact[k])
            counts.append(found_counts[k])
    if ratios:
        report.spread_ratios, report.spread_counts = ratios, counts
        stderr = 1.0 / math.sqrt(2 * x.shape[1] * min(counts))
        report.lines.append(
            f"within-mode spread / exact: {min(ratios):.3f} to {max(ratios):.3f} over "
            f"{len(ratios)} modes (the mode's RMS distance to its mean; standard error about "
            f"{stderr:.3f} for its {min(counts)} samples or more)"
        )


def check_classifier(classifier, plan):
    """``classifier`` (an :class:`~scoregen.models.classifier.ImageClassifier`, or a name or
    file for :func:`~scoregen.models.classifier.load_classifier`) loaded, and checked to take
    the images ``plan`` draws; a ValueError (OSError for an unreadable file) otherwise."""
    if not plan.is_image:
        raise ValueError(
            f"classifier scores image samples; these are points of shape {list(plan.shape)}"
        )
    named = ""
    if isinstance(classifier, (str, Path)):
        from scoregen.models.classifier import load_classifier

        named = f"{str(classifier)!r} "
        classifier = load_classifier(classifier)
    takes = tuple(classifier.config.shape)
    if takes != tuple(plan.shape):
        raise ValueError(
            f"classifier {named}takes images of shape {list(takes)}, the model's are "
            f"{list(plan.shape)}"
        )
    return classifier


def report_samples(
    samples: Tensor, model, plan, *, seed: int = 0, classifier=None
) -> SampleReport | None:
    """Compare ``samples`` (data space, ``[n, ...]``) from ``plan`` with what they target.

    * Data from an exact mixture: the mixture ``p`` — or ``p_σ`` for Langevin/MALA at σ > 0,
      which is what those chains target — gives the mode weights (with binomial standard
      errors), the within-mode spreads, and the energy distance to an exact set of the same
      size, next to its band over exact sets.
    * A toy data set with a held-out test set (moons, rings, ...): the energy distance to the
      test set, next to the band of fresh draws of the data against the same test set.

    * Images: :func:`scoregen.metrics.image_quality` against the held-out images of the
      data set the checkpoint was trained on (see :func:`_image_report`): the Fréchet and
      kernel distances and class coverage in the features of a shipped classifier for that
      data (digits), or ``classifier`` when given (an
      :class:`~scoregen.models.classifier.ImageClassifier`, or a name or file for
      :func:`~scoregen.models.classifier.load_classifier`); memorisation in pixels; each next to real
      training images' band.

    Returns None when there is nothing to compare with (points passed from Python have no
    reference). At most :data:`MAX_REPORT_POINTS` samples are used (a random subset, said in
    the report).
    """
    from scoregen.data import DATASETS, dataset_options, load_dataset

    generator = torch.Generator().manual_seed(seed + 1)
    if classifier is not None:
        classifier = check_classifier(classifier, plan)
    if plan.is_image:
        return _image_report(samples, model, plan, seed=seed, classifier=classifier)
    x = samples.detach().reshape(samples.shape[0], -1).double().cpu()
    n_all = x.shape[0]
    if n_all < 2:
        return SampleReport(
            target=None, n=n_all, lines=["One sample: no quality number can be measured."]
        )
    sigma = plan.target_sigma
    if model.oracle is not None:
        mixture = model.oracle.to(device="cpu")
        target = mixture.blurred(sigma) if sigma > 0 else mixture
        what = f"p_σ at σ={sigma:.4g} (the density these chains target)" if sigma > 0 else "the exact density p"
        report = SampleReport(target=what, n=n_all)
        _mixture_lines(report, x, target, generator)  # all samples: linear cost
        x = _subset(x, MAX_REPORT_POINTS, generator)
        n = x.shape[0]
        used = f"{n} of the {n_all} samples" if n < n_all else f"the {n} samples"
        reference = target.sample(n, generator=generator)
        report.distance = _energy_band(
            f"energy distance of {used} to {n} exact samples",
            x,
            reference,
            lambda: target.sample(n, generator=generator),
        )
        report.lines.append(str(report.distance))
        return report
    record = model.data
    name = record.get("name")
    if name not in DATASETS or record.get("kind") != "toy":
        return None
    options = {k: v for k, v in record.items() if k in dataset_options(name)}
    dataset = load_dataset(name, **options)
    x = _subset(x, MAX_REPORT_POINTS, generator)
    n = x.shape[0]
    used = f"{n} of the {n_all} samples" if n < n_all else f"the {n} samples"
    test = _subset(dataset.test.double().reshape(dataset.test.shape[0], -1), n, generator)
    what = f"the held-out test set of {name}" + (f" (p_σ at σ={sigma:.4g} is the chains' target)" if sigma > 0 else "")  # fmt: skip
    report = SampleReport(target=what, n=n)
    data_generator = torch.Generator().manual_seed(seed + 2)

    def fresh():
        draws = dataset.sample(test.shape[0], data_generator).double()
        if sigma > 0:
            draws = draws + sigma * torch.randn(draws.shape, generator=data_generator, dtype=draws.dtype)  # fmt: skip
        return draws.reshape(draws.shape[0], -1)

    if sigma > 0:
        # compare p_σ with p_σ: blur the held-out set by the same σ
        test = test + sigma * torch.randn(test.shape, generator=data_generator, dtype=test.dtype)
    report.distance = _energy_band(
        f"energy distance of {used} to {test.shape[0]} held-out points",
        x if x.shape[0] == test.shape[0] else x[: test.shape[0]],
        test,
        fresh,
    )
    report.lines.append(str(report.distance))
    return report


def _image_report(samples: Tensor, model, plan, *, seed: int, classifier=None) -> SampleReport:
    """The image lines: :func:`~scoregen.metrics.image_quality` of the samples (pixels)
    against the held-out images of the checkpoint's data set (at most
    :data:`MAX_REPORT_IMAGES`, a seeded subset), with ``classifier`` if given, else the shipped
    classifier for that data when there is one; otherwise the lines say which numbers could
    not be measured and why."""
    from scoregen.data import DATASETS, dataset_options, load_dataset
    from scoregen.metrics import image_quality
    from scoregen.models.classifier import BUILTIN_CLASSIFIERS, load_classifier

    n = samples.shape[0]
    name = model.data.get("name")

    def unmeasured(why: str) -> SampleReport:
        return SampleReport(target=None, n=n, lines=[f"Image quality not measured: {why}."])

    if n < 2:
        return unmeasured("it needs at least 2 samples")
    if name not in DATASETS:
        return unmeasured(
            f"{model.name} was trained on data {name!r}, which scoregen cannot rebuild to "
            "compare with"
        )
    # the data record holds the loader's options; the training config also those it does not
    # record (the folder the files came from)
    allowed = dataset_options(name)
    given = {**model.config.get("data_options", {}), **model.data}
    options = {k: v for k, v in given.items() if k in allowed}
    try:
        dataset = load_dataset(name, **options)
    except (ValueError, OSError) as e:
        return unmeasured(f"cannot load the data set {name!r} to compare with ({e})")
    if dataset.train is None or dataset.test is None or min(len(dataset.train), len(dataset.test)) < 2:  # fmt: skip
        return unmeasured(
            f"the data set {name!r} needs at least 2 training and 2 held-out images to compare "
            "with"
        )
    generator = torch.Generator().manual_seed(seed + 1)
    test = _subset(dataset.test, MAX_REPORT_IMAGES, generator)
    train, test = dataset.to_data_space(dataset.train), dataset.to_data_space(test)
    trained_on = None
    if classifier is not None:
        trained_on = (classifier.record.get("data") or {}).get("name") or "given"
    elif name in BUILTIN_CLASSIFIERS:
        classifier, trained_on = load_classifier(name), name
    quality = image_quality(
        samples.detach().float().cpu(), classifier=classifier, train=train, test=test, seed=seed
    )
    what = f"{test.shape[0]} held-out {name} images"
    if plan.target_sigma > 0:
        what += f" (the chains target p_σ at σ={plan.target_sigma:.4g}: noisy images)"
    report = SampleReport(target=what, n=n, image=quality)
    report.lines = image_lines(quality, classifier_for=None if classifier is None else trained_on)
    if classifier is None:
        shipped = ", ".join(sorted(BUILTIN_CLASSIFIERS))
        report.lines.insert(
            1,
            f"Fréchet distance, KID and class coverage: not measured (they need a trained "
            f"classifier for {name!r}; scoregen ships one for {shipped} only: train one with "
            f"python -m experiments.train_classifier and pass it as --classifier / classifier=)",
        )
    return report


def image_lines(quality: ImageQuality, classifier_for: str | None) -> list[str]:
    """:class:`~scoregen.metrics.ImageQuality` as the report's lines: what the bands are,
    then each number beside its real-vs-real band and whether it is inside."""
    bands = quality.bands

    def verdict(key: str) -> str:
        return "ok" if bands[key].within else "outside"

    used = quality.n_evaluated
    of = f" (a random {used} of the {quality.n_samples})" if used < quality.n_samples else ""
    lines = [
        f"each band: the same number for {quality.n_draws} sets of {used} real training "
        f"images{of} (5–95 %, widened for fresh draws)"
    ]
    if "fd" in bands:
        fd, kid = bands["fd"], bands["kid"]
        lines.append(
            f"Fréchet distance in the {classifier_for} classifier's features: "
            f"{quality.fd_ratio:.2f}× the real median (band {fd.low / fd.median:.2f}–"
            f"{fd.high / fd.median:.2f}×): {verdict('fd')}"
        )
        lines.append(
            f"KID ×10³: {1e3 * kid.value:.3g} (real median {1e3 * kid.median:.3g}, band "
            f"{1e3 * kid.low:.3g} to {1e3 * kid.high:.3g}): {verdict('kid')}"
        )
        coverage, tv, weakest = quality.coverage, bands["class_tv"], bands["weakest_class"]
        lines.append(
            f"class shares {coverage.weakest_share:.1%} (class {coverage.weakest_class}) to "
            f"{coverage.largest_share:.1%}: weakest share {verdict('weakest_class')} (real "
            f"band ≥ {weakest.low:.1%}); TV to uniform {tv.value:.3f} (real median "
            f"{tv.median:.3f}, band ≤ {tv.high:.3f}): {verdict('class_tv')}"
        )
    memorised, ratio = bands["memorised"], bands["nn_ratio"]
    lines.append(
        f"memorised: {memorised.value:.1%} of the samples are closer to a training image than "
        f"{1 - memorised.median:.0%} of held-out images are (real band ≤ {memorised.high:.1%}): "
        f"{verdict('memorised')}; nearest-training distance {ratio.value:.2f}× the held-out "
        f"images' (band {ratio.low:.2f}–{ratio.high:.2f}): {verdict('nn_ratio')}"
    )
    return lines
