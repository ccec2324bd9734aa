"""Posterior scores for linear inverse problems ``y = A x + n``, so every sampler samples p(x | y)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from scoregen.samplers._common import check_callable

__all__ = ["posterior_score"]


def _noise_sigma(noise_sigma, physics) -> float:
    if noise_sigma is None:
        # deepinv physics carry their Gaussian noise level as physics.noise_model.sigma.
        noise_sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
        if noise_sigma is None:
            raise ValueError(
                "noise_sigma is required: the physics has no noise_model.sigma to read it from"
            )
    if isinstance(noise_sigma, Tensor):
        if noise_sigma.numel() != 1:
            raise ValueError(
                f"noise_sigma must be one number, got a tensor of shape {tuple(noise_sigma.shape)}"
            )
        noise_sigma = noise_sigma.item()
    if isinstance(noise_sigma, bool) or not isinstance(noise_sigma, numbers.Real):
        raise TypeError(f"noise_sigma must be a number, got {type(noise_sigma).__name__}")
    noise_sigma = float(noise_sigma)
    if not (math.isfinite(noise_sigma) and noise_sigma > 0):
        raise ValueError(f"noise_sigma must be finite and > 0, got {noise_sigma}")
    return noise_sigma


class _Converted:
    """A tensor and its copies on other devices/dtypes, made once (no host-to-device copy
    per sampler step)."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor
        self._copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def like(self, x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in self._copies:
            self._copies[key] = self.tensor.to(device=x.device, dtype=x.dtype)
        return self._copies[key]


def _operators(physics):
    """``(A, Aᵀ)`` as functions of a batch: a matrix ``[m, d]`` on flattened x, or a
    deepinv-style physics with ``A`` and ``A_adjoint`` methods (duck-typed: no import)."""
    if isinstance(physics, Tensor):
        if physics.ndim != 2 or not physics.is_floating_point():
            raise ValueError(
                f"a matrix physics must be a float [m, d] tensor, got shape "
                f"{tuple(physics.shape)} and dtype {physics.dtype}"
            )
        matrix = _Converted(physics)

        def forward(x: Tensor) -> Tensor:
            a = matrix.like(x)
            flat = x.reshape(x.shape[0], -1)
            if flat.shape[1] != a.shape[1]:
                raise ValueError(
                    f"the matrix is [m, d] = {list(a.shape)} but x holds {flat.shape[1]} "
                    f"numbers per example"
                )
            return flat @ a.T

        def adjoint(r: Tensor, like: Tensor) -> Tensor:
            return (r @ matrix.like(r)).reshape(like.shape)

        return forward, adjoint
    if callable(getattr(physics, "A", None)) and callable(getattr(physics, "A_adjoint", None)):
        return physics.A, lambda r, like: physics.A_adjoint(r)
    raise TypeError(
        "physics must be a [m, d] matrix tensor or an object with A(x) and A_adjoint(y) "
        f"methods (a deepinv LinearPhysics), got {type(physics).__name__}"
    )


def posterior_score(prior_score, y: Tensor, physics, noise_sigma: float | None = None):
    """The score of the posterior of a linear-Gaussian inverse problem ``y = A x + σ_n n``::

        s_post(x, σ) = s_prior(x, σ) + Aᵀ (y − A x) / σ_n²

    Args:
        prior_score: ``score(x, sigma)`` of the prior ``p_σ`` (a Tweedie score, the oracle's).
        y: the observation, shaped like ``A x`` for one example (with a leading batch dim
            of 1, broadcast over the chains) or for each chain (``[B, ...]``). For a matrix
            physics, ``[m]``, ``[1, m]`` or ``[B, m]``.
        physics: a float matrix ``[m, d]`` acting on flattened examples, or a deepinv
            ``LinearPhysics`` (anything with ``A(x)`` and ``A_adjoint(y)``).
        noise_sigma: σ_n > 0; defaults to ``physics.noise_model.sigma`` when present.

    Returns:
        ``score(x, sigma)``, usable by every sampler.

    At ``σ = 0`` this is exactly ``∇ log p(x | y)``, so ULA or MALA at σ = 0 sample the
    posterior. At ``σ > 0`` it adds the exact likelihood gradient to the *blurred* prior's
    score, which is not the score of any blurred posterior: the usual approximation of
    score-based inverse-problem solvers, fine for annealing down to a small σ_L and exact
    only as σ → 0.
    """
    check_callable("prior_score", prior_score)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a tensor, got {type(y).__name__}")
    noise_sigma = _noise_sigma(noise_sigma, physics)
    forward, adjoint = _operators(physics)
    if isinstance(physics, Tensor) and y.ndim == 1:
        y = y[None]
    precision = 1.0 / noise_sigma**2
    observation = _Converted(y)

    def score(x: Tensor, sigma) -> Tensor:
        residual = observation.like(x) - forward(x)
        return prior_score(x, sigma) + precision * adjoint(residual, x)

    score.prior_score = prior_score
    score.noise_sigma = noise_sigma
    return score
