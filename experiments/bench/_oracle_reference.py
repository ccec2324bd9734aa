"""The oracle's previous layout, kept as a benchmark contender: ``[B, K, d]`` broadcasts.

Before the batch-last rewrite, ``GaussianMixture`` formed every rotated residual
``z_k = U_kᵀ(x − μ_k)`` as one ``[B, K, d]`` tensor, divided by the blurred eigenvalues
``λ + σ²``, summed over d and took a softmax over K. These functions are that code, unchanged
in its arithmetic, reading a mixture's parameters (``weights``, ``means``, ``eigvals``,
``eigvecs``). They are not part of the package: benchmarks time them against the new layout
(`experiments/bench/cpu.py`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def _sigma(mixture, sigma, batch: int) -> Tensor:
    """σ as a ``[B, 1, 1]`` or ``[1, 1, 1]`` tensor (broadcast against ``[B, K, d]``)."""
    if isinstance(sigma, Tensor):
        return sigma.to(mixture.device, mixture.dtype).expand(batch)[:, None, None]
    return torch.full((1, 1, 1), float(sigma), dtype=mixture.dtype, device=mixture.device)


def _rotate(mixture, x: Tensor) -> Tensor:
    """``z_k = U_kᵀ (x − μ_k)``, ``[B, K, d]``."""
    diff = x[:, None, :] - mixture.means[None]
    if mixture.eigvecs is None:
        return diff
    return torch.einsum("kji,bkj->bki", mixture.eigvecs, diff)


def _unrotate(mixture, z: Tensor) -> Tensor:
    """``U_k z_k``, ``[B, K, d]``."""
    if mixture.eigvecs is None:
        return z
    return torch.einsum("kij,bkj->bki", mixture.eigvecs, z)


def _blur_terms(mixture, x: Tensor, sigma):
    """Rotated residuals, blurred variances and the joint log-densities ``[B, K]``."""
    z = _rotate(mixture, x)
    sigma2 = _sigma(mixture, sigma, x.shape[0]) ** 2
    var = mixture.eigvals[None] + sigma2
    quad = (z**2 / var).sum(-1)
    logdet = torch.log(var).sum(-1)
    joint = torch.log(mixture.weights) - 0.5 * (quad + logdet + mixture.dim * _LOG_2PI)
    return z, var, joint


def log_prob(mixture, x: Tensor, sigma=0.0) -> Tensor:
    """``log p_σ(x)``, ``[B]``, for a batch ``[B, d]`` in the mixture's dtype."""
    return torch.logsumexp(_blur_terms(mixture, x, sigma)[2], dim=-1)


def responsibilities(mixture, x: Tensor, sigma=0.0) -> Tensor:
    """``P(k | x)`` under ``p_σ``, ``[B, K]``."""
    return torch.softmax(_blur_terms(mixture, x, sigma)[2], dim=-1)


def score(mixture, x: Tensor, sigma=0.0) -> Tensor:
    """``∇ log p_σ(x)``, ``[B, d]``."""
    z, var, joint = _blur_terms(mixture, x, sigma)
    resp = torch.softmax(joint, dim=-1)
    return -(resp[..., None] * _unrotate(mixture, z / var)).sum(1)


def denoise(mixture, y: Tensor, sigma) -> Tensor:
    """``E[x | y]``, ``[B, d]``."""
    z, var, joint = _blur_terms(mixture, y, sigma)
    resp = torch.softmax(joint, dim=-1)
    means = mixture.means + _unrotate(mixture, mixture.eigvals * z / var)
    return (resp[..., None] * means).sum(1)
