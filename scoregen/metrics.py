"""Sample-quality metrics as pure functions on tensors: two-sample distances (energy distance,
MMD, sliced Wasserstein) with a permutation test, mixture mode weights, PSNR, a denoiser's
excess MSE over the exact MMSE denoiser of a Gaussian mixture, and image-sample scores in a
classifier's features (Fréchet and kernel distances, class coverage, memorisation) reported
with their real-vs-real bands (:func:`image_quality`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int

__all__ = [
    "energy_distance",
    "mmd",
    "median_bandwidth",
    "sliced_wasserstein",
    "permutation_test",
    "PermutationTest",
    "mode_weights",
    "psnr",
    "excess_mse",
    "ExcessMSE",
    "gaussian_fit",
    "frechet_distance_gaussians",
    "frechet_distance",
    "kernel_distance",
    "class_coverage",
    "ClassCoverage",
    "nearest_distances",
    "memorisation",
    "Memorisation",
    "image_quality",
    "ImageQuality",
    "Band",
]


def _flat(x, name: str, *, min_rows: int = 2) -> Tensor:
    """``[n, ...]`` -> ``[n, d]`` float64 (distances are sums of many squares: keep precision)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor [n, ...], got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < min_rows:
        raise ValueError(
            f"{name} must be a batch of at least {min_rows} samples, got shape {tuple(x.shape)}"
        )
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def _pair(x, y) -> tuple[Tensor, Tensor]:
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must hold the same number of values per sample, got {x.shape[1]} and "
            f"{y.shape[1]}"
        )
    return x, y.to(x.device)


def _offdiag_mean(block: Tensor) -> Tensor:
    """Mean over ``i ≠ j`` of a square block (the U-statistic of within-sample terms)."""
    n = block.shape[0]
    return (block.sum() - block.diagonal().sum()) / (n * (n - 1))


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance (Székely & Rizzo) between samples ``x`` ``[n, ...]`` and ``y`` ``[m, ...]``::

        E = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖

    with the within-sample means over pairs ``i ≠ j`` (an unbiased U-statistic: its
    expectation is the population energy distance, 0 exactly when the laws agree, so
    estimates of equal laws scatter around 0 and can be slightly negative). Returns a 0-d
    float64 tensor. Memory ``O((n + m)²)``.
    """
    x, y = _pair(x, y)
    return (
        2.0 * torch.cdist(x, y).mean()
        - _offdiag_mean(torch.cdist(x, x))
        - _offdiag_mean(torch.cdist(y, y))
    )


def median_bandwidth(x: Tensor, y: Tensor | None = None) -> float:
    """The median heuristic: the median pairwise distance in the pooled sample (``i ≠ j``)."""
    pooled = _flat(x, "x") if y is None else torch.cat(_pair(x, y))
    dist = torch.cdist(pooled, pooled)
    upper = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1, device=dist.device)
    return float(dist[upper[0], upper[1]].median())


def _rbf(dist: Tensor, bandwidth: float) -> Tensor:
    return torch.exp(-(dist**2) / (2.0 * bandwidth**2))


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian (RBF) kernel::

        MMD² = E k(X, X') + E k(Y, Y') − 2 E k(X, Y),   k(a, b) = exp(−‖a − b‖² / (2h²))

    within-sample means over ``i ≠ j`` (Gretton et al. 2012's MMD²_u), so the estimate is 0 in
    expectation for equal laws and may be slightly negative. ``bandwidth`` h defaults to the
    median heuristic on the pooled sample (:func:`median_bandwidth`). Returns a 0-d float64
    tensor. Memory ``O((n + m)²)``.
    """
    x, y = _pair(x, y)
    h = (
        median_bandwidth(x, y)
        if bandwidth is None
        else check_positive_float("bandwidth", bandwidth)
    )
    return (
        _offdiag_mean(_rbf(torch.cdist(x, x), h))
        + _offdiag_mean(_rbf(torch.cdist(y, y), h))
        - 2.0 * _rbf(torch.cdist(x, y), h).mean()
    )


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 128,
    *,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced Wasserstein-p distance: ``(E_θ W_p^p(θᵀX, θᵀY))^(1/p)`` over uniform directions θ.

    Each 1-D ``W_p^p`` is the mean of ``|F_X⁻¹(q) − F_Y⁻¹(q)|^p`` at the quantile levels
    ``q = (k + ½) / L``, ``L = max(n, m)`` (sorted samples when ``n = m``, linear quantile
    interpolation otherwise). The ``n_projections`` directions are normalised Gaussian draws
    from ``generator`` (on CPU). Returns a 0-d float64 tensor.
    """
    x, y = _pair(x, y)
    n_projections = check_positive_int("n_projections", n_projections)
    p = check_positive_float("p", p)
    directions = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    directions = (directions / directions.norm(dim=0, keepdim=True)).to(x.device)
    px, py = x @ directions, y @ directions  # [n, P], [m, P]
    if px.shape[0] == py.shape[0]:
        qx, qy = px.sort(dim=0).values, py.sort(dim=0).values
    else:
        levels = (torch.arange(max(px.shape[0], py.shape[0]), dtype=torch.float64) + 0.5) / max(
            px.shape[0], py.shape[0]
        )
        levels = levels.to(x.device)
        qx, qy = _quantiles(px, levels), _quantiles(py, levels)
    return (qx - qy).abs().pow(p).mean().pow(1.0 / p)


def _quantiles(samples: Tensor, levels: Tensor) -> Tensor:
    """Linear-interpolation quantiles along dim 0 of ``[n, P]`` at ``levels`` -> ``[L, P]``."""
    ordered = samples.sort(dim=0).values
    pos = levels * (samples.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(samples.shape[0] - 1)
    frac = (pos - lo)[:, None]
    return ordered[lo] * (1 - frac) + ordered[hi] * frac


# ---------------------------------------------------------------------------- permutation test
class PermutationTest(NamedTuple):
    """Result of :func:`permutation_test`.

    ``statistic``: the observed value; ``p_value``: ``(1 + #{null >= statistic}) / (1 + P)``;
    ``threshold``: the ``1 − alpha`` quantile of the permutation null (reject "same law" when
    ``statistic > threshold``); ``null``: the ``P`` permuted statistics.
    """

    statistic: float
    p_value: float
    threshold: float
    null: Tensor


_KERNEL_STATISTICS = ("energy_distance", "mmd")


def _kernel_statistic_name(statistic) -> str | None:
    if statistic is energy_distance or statistic == "energy_distance":
        return "energy_distance"
    if statistic is mmd or statistic == "mmd":
        return "mmd"
    return None


def _pooled_statistics(name: str, x: Tensor, y: Tensor, labels: Tensor, chunk: int = 64) -> Tensor:
    """The U-statistic for every split of the pooled sample given by ``labels`` ``[P, N]``
    (1 = first sample), from one pooled matrix: each split costs one matrix–vector product.

    With ``a`` the indicator of the first group, ``M`` the pooled matrix, ``r = M 1`` and
    ``δ = diag M``: ``S_xx = aᵀMa − aᵀδ``, ``S_xy = aᵀr − aᵀMa``,
    ``S_yy = 1ᵀM1 − 2aᵀr + aᵀMa − (1ᵀδ − aᵀδ)``.
    """
    n, m = x.shape[0], y.shape[0]
    pooled = torch.cat([x, y])
    dist = torch.cdist(pooled, pooled)
    if name == "energy_distance":
        matrix, c_within, c_between = dist, -1.0, 2.0
    else:
        matrix, c_within, c_between = _rbf(dist, median_bandwidth(x, y)), 1.0, -2.0
    del dist
    row_sums = matrix.sum(1)
    total = row_sums.sum()
    diag = matrix.diagonal()
    diag_total = diag.sum()
    out = []
    for start in range(0, labels.shape[0], chunk):
        a = labels[start : start + chunk].to(matrix.dtype)
        a_m_a = ((a @ matrix) * a).sum(1)
        a_r = a @ row_sums
        a_d = a @ diag
        s_xx = a_m_a - a_d
        s_xy = a_r - a_m_a
        s_yy = total - 2.0 * a_r + a_m_a - (diag_total - a_d)
        out.append(
            c_within * (s_xx / (n * (n - 1)) + s_yy / (m * (m - 1))) + c_between * s_xy / (n * m)
        )
    return torch.cat(out)


def permutation_test(
    statistic: Callable[[Tensor, Tensor], Tensor] | str,
    x: Tensor,
    y: Tensor,
    n_permutations: int = 200,
    *,
    alpha: float = 0.01,
    generator: torch.Generator | None = None,
) -> PermutationTest:
    """Two-sample permutation test of "x and y come from the same law".

    The null distribution is the statistic recomputed on ``n_permutations`` random splits of
    the pooled sample into groups of sizes ``n`` and ``m`` (permutations drawn on CPU from
    ``generator``). ``statistic`` is a callable ``statistic(x, y)`` (e.g.
    :func:`sliced_wasserstein` with a fixed generator) or :func:`energy_distance` /
    :func:`mmd` (or their names), which are computed for all permutations from one pooled
    distance matrix (the MMD bandwidth, a function of the pooled sample, is the same for every
    split). Returns a :class:`PermutationTest`.
    """
    n_permutations = check_positive_int("n_permutations", n_permutations)
    alpha = check_positive_float("alpha", alpha)
    if alpha >= 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    name = _kernel_statistic_name(statistic)
    if name is None and not callable(statistic):
        raise ValueError(
            f"statistic must be a callable statistic(x, y) or one of {_KERNEL_STATISTICS}, "
            f"got {statistic!r}"
        )
    x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    order = torch.argsort(torch.rand(n_permutations, n + m, generator=generator), dim=1)
    if name is not None:
        labels = torch.zeros(n_permutations + 1, n + m, dtype=torch.bool)
        labels[0, :n] = True  # the observed split first
        labels[1:].scatter_(1, order[:, :n], True)
        values = _pooled_statistics(name, x, y, labels.to(x.device)).cpu()
        observed, null = values[0], values[1:]
    else:
        pooled = torch.cat([x, y])
        observed = torch.as_tensor(statistic(x, y), dtype=torch.float64).cpu()
        null = torch.stack(
            [
                torch.as_tensor(statistic(pooled[idx[:n]], pooled[idx[n:]]), dtype=torch.float64)
                .cpu()
                .reshape(())
                for idx in order.to(x.device)
            ]
        )
    p_value = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    threshold = float(torch.quantile(null, 1.0 - alpha))
    return PermutationTest(float(observed), p_value, threshold, null)


# ---------------------------------------------------------------------------- mixtures
def mode_weights(samples: Tensor, mixture, sigma: float = 0.0) -> Tensor:
    """Fraction of ``samples`` assigned to each component of ``mixture`` ``[K]`` (float64).

    A sample goes to its most responsible component under ``p_σ``,
    ``argmax_k w_k N(x; μ_k, Σ_k + σ²I)``. ``samples`` is ``[B, d]`` or ``[B, ...]`` holding
    ``d`` numbers each. For well-separated components the result estimates the mixture
    weights with standard error ``sqrt(w (1 − w) / B)``.
    """
    if not isinstance(samples, Tensor) or samples.ndim < 1 or samples.shape[0] == 0:
        raise ValueError("samples must be a non-empty batch [B, ...]")
    assignment = mixture.responsibilities(samples, sigma).argmax(dim=1)
    counts = torch.bincount(assignment, minlength=mixture.n_components)
    return counts.to(torch.float64) / samples.shape[0]


def psnr(x: Tensor, ref: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per example, ``10 log10(data_range² / MSE_b)`` in dB, ``[B]``.

    ``MSE_b`` is the mean of ``(x − ref)²`` over all but the batch dim; ``ref`` is shaped
    like ``x`` or broadcastable to it. An exact match gives ``inf``.
    """
    if not isinstance(x, Tensor) or not isinstance(ref, Tensor):
        raise TypeError("x and ref must be tensors")
    data_range = check_positive_float("data_range", data_range)
    diff = (x - ref).to(torch.float64)
    if diff.shape != x.shape:
        raise ValueError(f"ref {tuple(ref.shape)} must broadcast to x {tuple(x.shape)}")
    mse = diff.reshape(x.shape[0], -1).square().mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


class ExcessMSE(NamedTuple):
    """Result of :func:`excess_mse`: per-dimension MSEs of the model and of the exact MMSE
    denoiser, their difference, and the standard error of that difference (paired)."""

    excess: float
    model_mse: float
    oracle_mse: float
    stderr: float


@torch.no_grad()
def excess_mse(
    denoiser,
    mixture,
    sigma: float,
    n: int,
    *,
    generator: torch.Generator | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 4096,
) -> ExcessMSE:
    """How far a denoiser is from the best possible one on a Gaussian mixture, at noise σ::

        excess = E‖D(y, σ) − x‖² / d − E‖D*(y, σ) − x‖² / d,   y = x + σz, x ~ mixture

    with ``D*`` the mixture's exact posterior mean (``mixture.denoise``), the minimum of the
    MSE over all denoisers, so ``excess >= 0`` up to Monte-Carlo error (``stderr``, from the
    per-example paired differences on the same ``(x, y)``). ``n`` pairs are drawn from
    ``generator`` (on the mixture's device); the model sees them reshaped to ``(n, *shape)``
    (default ``(n, d)``), cast to ``dtype`` (default the mixture's) and moved to ``device``
    (default the mixture's), in batches of ``batch_size``.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable D(x, sigma), got {type(denoiser).__name__}")
    sigma = check_positive_float("sigma", sigma)
    n = check_positive_int("n", n, minimum=2)
    batch_size = check_positive_int("batch_size", batch_size)
    shape = (mixture.dim,) if shape is None else tuple(shape)
    if math.prod(shape) != mixture.dim:
        raise ValueError(f"shape {shape} must hold the mixture's d = {mixture.dim} numbers")
    dtype = dtype or mixture.dtype
    device = torch.device(device) if device is not None else mixture.device
    x = mixture.sample(n, generator=generator)
    y = x + sigma * torch.randn(
        x.shape, generator=generator, device=mixture.device, dtype=mixture.dtype
    )
    oracle = mixture.denoise(y, sigma)
    model = torch.cat(
        [
            denoiser(chunk.reshape(-1, *shape).to(device=device, dtype=dtype), sigma)
            .reshape(chunk.shape[0], -1)
            .to(device=mixture.device, dtype=mixture.dtype)
            for chunk in y.split(batch_size)
        ]
    )
    model_err = (model - x).square().mean(1)
    oracle_err = (oracle - x).square().mean(1)
    diff = model_err - oracle_err
    return ExcessMSE(
        excess=float(diff.mean()),
        model_mse=float(model_err.mean()),
        oracle_mse=float(oracle_err.mean()),
        stderr=float(diff.std() / math.sqrt(n)),
    )


# ---------------------------------------------------------------------------- image samples
def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` (divisor ``n − 1``) of ``[n, d]`` rows,
    in float64."""
    x = _flat(features, "features")
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / (x.shape[0] - 1)


def _psd_eigenvalues(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and eigenvectors of a symmetric PSD matrix, with the eigenvalues that are
    round-off (negative, or below ``d · eps · λ_max``) set to 0: a square root would turn
    round-off of ``1e-16 λ_max`` into errors of ``1e-8 sqrt(λ_max)`` per direction."""
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    floor = matrix.shape[0] * torch.finfo(values.dtype).eps * values.abs().max()
    return torch.where(values > floor, values, torch.zeros_like(values)), vectors


def _psd_sqrt(matrix: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix by eigendecomposition (real, and
    exact for singular matrices)."""
    values, vectors = _psd_eigenvalues(matrix)
    return (vectors * values.sqrt()) @ vectors.T


def frechet_distance_gaussians(
    mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor
) -> Tensor:
    """The Fréchet (2-Wasserstein²) distance between ``N(μ_a, Σ_a)`` and ``N(μ_b, Σ_b)``::

        FD = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^½ Σ_b Σ_a^½)^½

    The last trace is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``Σ_a^½ Σ_b Σ_a^½`` (the same eigenvalues as ``Σ_a Σ_b``); computing it from a
    symmetric eigendecomposition keeps it real and exact for singular covariances, where a
    general ``sqrtm`` returns tiny imaginary parts or fails. Returns a 0-d float64 tensor
    (>= 0 up to round-off).
    """
    mean_a, mean_b = (torch.as_tensor(m, dtype=torch.float64) for m in (mean_a, mean_b))
    cov_a, cov_b = (torch.as_tensor(c, dtype=torch.float64) for c in (cov_a, cov_b))
    d = mean_a.shape[-1]
    if mean_a.shape != (d,) or mean_b.shape != (d,):
        raise ValueError(
            f"means must be [d] vectors of one size, got {tuple(mean_a.shape)} and "
            f"{tuple(mean_b.shape)}"
        )
    if cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(
            f"covariances must be [{d}, {d}], got {tuple(cov_a.shape)} and {tuple(cov_b.shape)}"
        )
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b.to(root_a.device) @ root_a
    cross = _psd_eigenvalues(middle)[0].sqrt().sum()
    return (
        (mean_a - mean_b.to(mean_a.device)).square().sum()
        + cov_a.trace()
        + cov_b.trace()
        - 2 * cross
    )


def frechet_distance(features_a: Tensor, features_b: Tensor) -> Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets ``[n, d]``, ``[m, d]``
    (FID's formula, :func:`frechet_distance_gaussians`, on any features).

    The plug-in estimate is biased upwards: for equal laws its expectation is about
    ``tr Σ (1/n + 1/m)`` from the means plus a covariance term of order ``d² (1/n + 1/m)``,
    so compare it only with the same distance between real sets of the same sizes (as
    :func:`image_quality` does). Returns a 0-d float64 tensor.
    """
    a, b = _pair(features_a, features_b)
    return frechet_distance_gaussians(*gaussian_fit(a), *gaussian_fit(b))


def _cubic_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _kernel_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² U-statistic of the cubic polynomial kernel."""
    return (
        _offdiag_mean(_cubic_kernel(x, x))
        + _offdiag_mean(_cubic_kernel(y, y))
        - 2.0 * _cubic_kernel(x, y).mean()
    )


def kernel_distance(
    features_a: Tensor,
    features_b: Tensor,
    *,
    subset_size: int | None = 1000,
    n_subsets: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Kernel (Inception-style) distance, KID: the unbiased MMD² with the cubic kernel
    ``k(x, y) = (xᵀy / d + 1)³`` between feature sets ``[n, d]`` and ``[m, d]``::

        KID = mean_{i≠j} k(a_i, a_j) + mean_{i≠j} k(b_i, b_j) − 2 mean_{i,j} k(a_i, b_j)

    Unbiased for every sample size (0 in expectation for equal laws, so estimates can be
    slightly negative). When a set is larger than ``subset_size`` the statistic is averaged
    over ``n_subsets`` random subsets of ``min(n, subset_size)`` and ``min(m, subset_size)``
    rows (drawn without replacement from ``generator``), which bounds the memory at
    ``subset_size²``; ``subset_size=None`` always uses every row. Returns a 0-d float64 tensor.
    """
    a, b = _pair(features_a, features_b)
    n_subsets = check_positive_int("n_subsets", n_subsets)
    if subset_size is not None:
        subset_size = check_positive_int("subset_size", subset_size, minimum=2)
    if subset_size is None or max(a.shape[0], b.shape[0]) <= subset_size:
        return _kernel_mmd2(a, b)
    size_a, size_b = min(a.shape[0], subset_size), min(b.shape[0], subset_size)
    values = []
    for _ in range(n_subsets):
        pick_a = torch.randperm(a.shape[0], generator=generator)[:size_a].to(a.device)
        pick_b = torch.randperm(b.shape[0], generator=generator)[:size_b].to(b.device)
        values.append(_kernel_mmd2(a[pick_a], b[pick_b]))
    return torch.stack(values).mean()


class ClassCoverage(NamedTuple):
    """Result of :func:`class_coverage`: ``counts`` ``[K]`` and ``shares`` (fractions) per
    class, the total-variation distance of the shares to uniform ``½ Σ |p_k − 1/K|``, the
    smallest share and its class, the largest share, and how many classes got no sample."""

    counts: Tensor
    shares: Tensor
    tv_to_uniform: float
    weakest_share: float
    weakest_class: int
    largest_share: float
    n_missing: int


def class_coverage(labels: Tensor, n_classes: int) -> ClassCoverage:
    """How evenly integer ``labels`` ``[n]`` (e.g. a classifier's argmax on samples) cover
    ``0 … n_classes − 1``."""
    n_classes = check_positive_int("n_classes", n_classes, minimum=2)
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D tensor of class indices")
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be integers in [0, {n_classes - 1}]")
    counts = torch.bincount(labels.long().cpu(), minlength=n_classes)
    shares = counts.double() / labels.numel()
    weakest = int(shares.argmin())
    return ClassCoverage(
        counts=counts,
        shares=shares,
        tv_to_uniform=float(0.5 * (shares - 1.0 / n_classes).abs().sum()),
        weakest_share=float(shares[weakest]),
        weakest_class=weakest,
        largest_share=float(shares.max()),
        n_missing=int((counts == 0).sum()),
    )


def nearest_distances(x: Tensor, reference: Tensor, *, chunk: int = 256) -> Tensor:
    """The L2 distance from each row of ``x`` ``[n, ...]`` to its nearest row of ``reference``
    ``[N, ...]`` (flattened), ``[n]`` float64; computed ``chunk`` rows at a time in float32
    (memory ``chunk × N``), exact copies giving 0 up to round-off."""
    x, reference = _pair(x, reference)
    reference = reference.float()
    out = [torch.cdist(part.float(), reference).min(1).values.double() for part in x.split(chunk)]
    return torch.cat(out)


class Memorisation(NamedTuple):
    """Result of :func:`memorisation`.

    ``fraction_close``: the fraction of samples whose nearest training image is closer than
    ``threshold``, the ``quantile`` of the held-out images' nearest-training distances (so
    fresh real images give ``quantile`` in expectation, copies of training images give 1);
    ``median_ratio``: the samples' median nearest-training distance over the held-out
    images' median (about 1 for fresh real images, 0 for copies, above 1 for images unlike
    any training image); ``sample_distances`` ``[n]`` and ``test_distances`` ``[m]``.
    """

    fraction_close: float
    threshold: float
    median_ratio: float
    sample_distances: Tensor
    test_distances: Tensor


def memorisation(
    samples: Tensor, train: Tensor, test: Tensor, *, quantile: float = 0.01
) -> Memorisation:
    """Are the samples copies of training images? Pixel-space nearest-neighbour distances of
    the samples to the training set, against those of held-out images ``test`` (all three
    ``[n, ...]`` with the same values per image)."""
    quantile = check_positive_float("quantile", quantile)
    if quantile >= 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    sample_distances = nearest_distances(samples, train)
    test_distances = nearest_distances(test, train)
    threshold = float(torch.quantile(test_distances, quantile))
    return Memorisation(
        fraction_close=float((sample_distances < threshold).double().mean()),
        threshold=threshold,
        median_ratio=float(sample_distances.median() / test_distances.median()),
        sample_distances=sample_distances,
        test_distances=test_distances,
    )


# ---------------------------------------------------------------------------- the report
# the numbers of image_quality that need a classifier's features or labels
CLASSIFIER_KEYS = ("fd", "kid", "class_tv", "weakest_class")


class Band(NamedTuple):
    """One number of :class:`ImageQuality` with its reference: the same statistic on real
    images at the samples' size, over several random draws (``median`` and the 5–95 %
    ``low`` … ``high`` band). ``better`` is ``"lower"``, ``"higher"`` or ``"near"`` (both
    directions are bad); ``within`` says whether ``value`` lies on the good side of the band."""

    name: str
    value: float
    median: float
    low: float
    high: float
    better: str

    @property
    def within(self) -> bool:
        if self.better == "lower":
            return self.value <= self.high
        if self.better == "higher":
            return self.value >= self.low
        return self.low <= self.value <= self.high

    @property
    def ratio(self) -> float:
        """``value / median`` (inf when the median is 0 and the value is not)."""
        if self.median == 0:
            return 1.0 if self.value == 0 else math.inf
        return self.value / self.median


@dataclass
class ImageQuality:
    """What :func:`image_quality` measured: every number with its real-vs-real band.

    ``bands`` maps a key (``fd``, ``kid``, ``class_tv``, ``weakest_class``, ``memorised``,
    ``nn_ratio``) to a :class:`Band`; ``fd_ratio`` is the samples' Fréchet distance over the
    median real-vs-real one; ``coverage`` and ``memorisation`` hold the details;
    ``verdict`` one line. ``str(report)`` is a short table (:meth:`format`). Scored without
    a classifier, only the memorisation numbers are there: ``fd_ratio``, ``coverage`` and
    ``feature_dim`` are None and :attr:`unavailable` names what is missing.
    """

    n_samples: int
    n_evaluated: int
    n_test: int
    n_draws: int
    bands: dict[str, Band]
    coverage: ClassCoverage | None
    memorisation: Memorisation
    feature_dim: int | None
    seconds: float = 0.0

    @property
    def fd_ratio(self) -> float | None:
        return self.bands["fd"].ratio if "fd" in self.bands else None

    @property
    def unavailable(self) -> list[str]:
        """Keys of the numbers that need a classifier and were not measured."""
        return [key for key in CLASSIFIER_KEYS if key not in self.bands]

    @property
    def outside(self) -> list[str]:
        """Keys of the numbers on the bad side of their band."""
        return [key for key, band in self.bands.items() if not band.within]

    @property
    def verdict(self) -> str:
        if "fd" in self.bands:
            fd = self.bands["fd"]
            head = f"FD {self.fd_ratio:.2f}× the real-vs-real median"
            head += f" (real band {fd.low / fd.median:.2f}–{fd.high / fd.median:.2f}×)"
        else:
            head = "no classifier: FD, KID and class coverage not measured"
        if not self.outside:
            return f"{head}; every number within the real-vs-real band"
        names = ", ".join(self.bands[key].name for key in self.outside)
        return f"{head}; outside the band: {names}"

    def format(self) -> str:
        """A short table: metric, samples, real median, real 5–95 % band, ok / outside."""
        lines = [
            f"image quality of {self.n_evaluated} samples"
            + (f" (of {self.n_samples})" if self.n_evaluated != self.n_samples else "")
            + f"; reference: {self.n_draws} draws of {self.n_evaluated} training images, "
            f"each against the {self.n_test} held-out images",
            f"{'metric':<34}{'samples':>10}{'real median':>13}{'real 5–95 %':>22}  verdict",
        ]
        for key, band in self.bands.items():
            scale = 1e3 if key == "kid" else 1.0
            if key == "fd":
                verdict = f"{band.ratio:.2f}× real"
            else:
                verdict = "ok" if band.within else "outside"
            lines.append(
                f"{band.name:<34}{band.value * scale:>10.4g}{band.median * scale:>13.4g}"
                f"{f'{band.low * scale:.4g} – {band.high * scale:.4g}':>22}  {verdict}"
            )
        if self.coverage is not None:
            counts = " ".join(str(int(c)) for c in self.coverage.counts)
            lines.append(f"class counts 0–{len(self.coverage.counts) - 1}: {counts}")
        lines.append(self.verdict)
        return "\n".join(lines)

    __str__ = format

    def to_dict(self) -> dict[str, Any]:
        """JSON-able numbers (bands as dicts; the per-image distances left out)."""
        coverage = self.coverage
        return {
            "n_samples": self.n_samples,
            "n_evaluated": self.n_evaluated,
            "n_test": self.n_test,
            "n_draws": self.n_draws,
            "feature_dim": self.feature_dim,
            "fd_ratio": self.fd_ratio,
            "verdict": self.verdict,
            "bands": {
                key: {**band._asdict(), "within": band.within} for key, band in self.bands.items()
            },
            "unavailable": self.unavailable,
            "class_counts": None if coverage is None else coverage.counts.tolist(),
            "class_share_range": (
                None if coverage is None else [coverage.weakest_share, coverage.largest_share]
            ),
            "memorisation_threshold": self.memorisation.threshold,
            "seconds": self.seconds,
        }


def _check_pixels(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of pixels [n, C, H, W], got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] < 2:
        raise ValueError(
            f"{name} must be at least 2 images [n, C, H, W] (pixels in [0, 1]), got shape "
            f"{tuple(x.shape)}"
        )
    return x.detach().float().cpu()


def _band(
    name: str, value, reference: Tensor, better: str, widen: float = 1.0, floor: float | None = 0.0
) -> Band:
    """The median and 5–95 % quantiles of ``reference``, the quantiles' distances from the
    median multiplied by ``widen`` (and clamped at ``floor`` for non-negative statistics)."""
    low, median, high = torch.quantile(
        reference.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    ).tolist()
    low, high = median - widen * (median - low), median + widen * (high - median)
    if floor is not None:
        low = max(low, floor)
    return Band(name, float(value), median, low, high, better)


def _classifier_bands(classifier, samples, train, test, n_reference_draws, widen, generator):
    """The bands of :func:`image_quality` that need the classifier (Fréchet and kernel
    distances of its features, class coverage of its labels), and the samples' coverage."""
    n = samples.shape[0]
    sample_features, sample_labels = classifier.embed(samples)
    train_features, train_labels = classifier.embed(train)
    test_features, _ = classifier.embed(test)
    n_classes = classifier.config.n_classes
    coverage = class_coverage(sample_labels, n_classes)
    reference = {key: [] for key in ("fd", "kid", "class_tv", "weakest_class")}
    for _ in range(n_reference_draws):
        pick = torch.randperm(train.shape[0], generator=generator)[:n]
        real = class_coverage(train_labels[pick], n_classes)
        reference["fd"].append(frechet_distance(train_features[pick], test_features))
        reference["kid"].append(
            kernel_distance(train_features[pick], test_features, n_subsets=10, generator=generator)
        )
        reference["class_tv"].append(real.tv_to_uniform)
        reference["weakest_class"].append(real.weakest_share)
    reference = {key: torch.tensor([float(v) for v in values]) for key, values in reference.items()}
    bands = {
        "fd": _band(
            "Fréchet distance (features)",
            frechet_distance(sample_features, test_features),
            reference["fd"],
            "lower",
            widen,
        ),
        "kid": _band(
            "kernel distance KID (×10³)",
            kernel_distance(sample_features, test_features, n_subsets=10, generator=generator),
            reference["kid"],
            "lower",
            widen,
            None,
        ),
        "class_tv": _band(
            "class shares: TV to uniform",
            coverage.tv_to_uniform,
            reference["class_tv"],
            "lower",
            widen,
        ),
        "weakest_class": _band(
            "weakest class share",
            coverage.weakest_share,
            reference["weakest_class"],
            "higher",
            widen,
        ),
    }
    return bands, coverage


@torch.no_grad()
def image_quality(
    samples: Tensor,
    *,
    classifier,
    train: Tensor,
    test: Tensor,
    n_reference_draws: int = 20,
    quantile: float = 0.01,
    seed: int = 0,
) -> ImageQuality:
    """Score image samples against real images, each number with a real-vs-real band.

    All images are pixels in [0, 1], ``[n, C, H, W]`` (samples are clamped to [0, 1]).
    ``classifier`` is an :class:`~scoregen.models.classifier.ImageClassifier` (e.g.
    ``load_classifier("digits")``), whose penultimate features and argmax labels are used;
    None (data without a trained classifier) skips the four numbers that need one
    (``ImageQuality.unavailable`` lists them). Measured on the samples:

    * ``fd``: :func:`frechet_distance` of the samples' features to the held-out ``test``
      images' features;
    * ``kid``: :func:`kernel_distance` (KID) between the same two sets (shown ×10³);
    * ``class_tv`` / ``weakest_class``: :func:`class_coverage` of the predicted labels;
    * ``memorised`` / ``nn_ratio``: :func:`memorisation` in pixel space against ``train``.

    The reference for the first four: ``n_reference_draws`` random sets of as many training
    images as there are samples (without replacement), each scored the same way against the
    same held-out images. So the median is what a perfect sampler (one that draws the
    training distribution) gets at this sample size, and estimator bias (the Fréchet
    distance's grows as the sets shrink) cancels in the ratio. The band is their 5–95 %
    quantiles with the distances from the median widened by ``sqrt((N + n)/(N − n))``:
    subsets of one set of ``N`` training images vary less than fresh sets of ``n`` (by the
    finite-population factor ``(N − n)/N``) around a centre that is itself off by
    ``n/N`` of the variance, and the samples are fresh. (A split-half check on the digits,
    reference draws from one half and fresh sets from the other, put 72–90 % of fresh sets'
    Fréchet distances inside the band for n = 100–500 of N = 750: it is approximate.)
    Samples beyond two thirds of ``N`` are not used (a random subset of ``2N/3`` is scored,
    ``n_evaluated``), which keeps the factor at most √5. The memorisation band: held-out images fall below
    the ``quantile`` of their own nearest-training distances with probability ``quantile``,
    so the count is binomial (5–95 % quantiles); the distance ratio's band comes from
    bootstrap sets of held-out images of the samples' size. Randomness comes from ``seed``.
    For 1,000 8×8 digits this takes about a second on a CPU thread.
    """
    import time

    from scipy.stats import binom

    start = time.perf_counter()
    samples = _check_pixels(samples, "samples").clamp(0.0, 1.0)
    train, test = _check_pixels(train, "train"), _check_pixels(test, "test")
    if not samples.shape[1:] == train.shape[1:] == test.shape[1:]:
        raise ValueError(
            f"samples, train and test must hold images of one shape, got "
            f"{tuple(samples.shape[1:])}, {tuple(train.shape[1:])}, {tuple(test.shape[1:])}"
        )
    n_reference_draws = check_positive_int("n_reference_draws", n_reference_draws, minimum=2)
    if classifier is not None and not all(hasattr(classifier, m) for m in ("embed", "config")):
        raise TypeError(
            f"classifier must be a scoregen ImageClassifier (load_classifier) or None, got "
            f"{type(classifier).__name__}"
        )
    generator = torch.Generator().manual_seed(seed)
    n_samples, n_train = samples.shape[0], train.shape[0]
    n_max = max(2, (2 * n_train) // 3)
    if n_samples > n_max:
        samples = samples[torch.randperm(n_samples, generator=generator)[:n_max]]
    n = samples.shape[0]
    # The reference draws are subsets of one training set of N: they vary around that set's
    # own centre, by Var · (N − n)/N (sampling without replacement), and that centre is off
    # the population's by Var · n/N. Fresh samples vary by the full Var, so the distance of
    # a fresh value from the draws' median varies by Var · (N + n)/N; the band's half-widths
    # are widened by sqrt((N + n)/(N − n)) (first order, for statistics that are smooth
    # functions of means, as all four are).
    widen = math.sqrt((n_train + n) / (n_train - n))

    bands: dict[str, Band] = {}
    coverage, feature_dim = None, None
    if classifier is not None:
        bands, coverage = _classifier_bands(classifier, samples, train, test, n_reference_draws,
                                            widen, generator)  # fmt: skip
        feature_dim = classifier.config.feature_dim

    memo = memorisation(samples, train, test, quantile=quantile)
    # fresh images: each falls below the threshold with probability `quantile`
    low, high = binom.ppf([0.05, 0.95], n, quantile) / n
    boot = torch.randint(0, test.shape[0], (n_reference_draws, n), generator=generator)
    boot_ratio = memo.test_distances[boot].median(1).values / memo.test_distances.median()

    bands.update({
        "memorised": Band(
            f"closer to train than {quantile:g} of test",
            memo.fraction_close,
            quantile,
            float(low),
            float(high),
            "lower",
        ),
        "nn_ratio": _band("nearest-train distance / test's", memo.median_ratio, boot_ratio, "near"),
    })  # fmt: skip
    return ImageQuality(
        n_samples=n_samples,
        n_evaluated=n,
        n_test=test.shape[0],
        n_draws=n_reference_draws,
        bands=bands,
        coverage=coverage,
        memorisation=memo,
        feature_dim=feature_dim,
        seconds=time.perf_counter() - start,
    )
