"""Sample-quality metrics as pure functions on tensors: two-sample distances (energy distance,
MMD, sliced Wasserstein) with a permutation test, mixture mode weights, PSNR, and a denoiser's
excess MSE over the exact MMSE denoiser of a Gaussian mixture."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

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
