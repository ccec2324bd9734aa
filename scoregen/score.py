"""Tweedie's formula: denoisers to scores and back, and the fixed-σ guard for single-level DAEs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from torch import Tensor

from scoregen._util import sigma_like

__all__ = ["tweedie_score", "score_denoiser", "FixedSigmaDenoiser", "Denoiser", "ScoreFn"]

Denoiser = Callable[[Tensor, "float | Tensor"], Tensor]
ScoreFn = Callable[[Tensor, "float | Tensor"], Tensor]


def _check_sigma_positive(sigma) -> None:
    # Only Python numbers are checked: a check on a CUDA tensor would cost a sync per call.
    if isinstance(sigma, numbers.Real) and not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0 for Tweedie's formula, got {sigma}")


def tweedie_score(denoiser: Denoiser) -> ScoreFn:
    """The score of ``p_σ`` from an MMSE denoiser: ``s(x, σ) = (D(x, σ) − x) / σ²``.

    ``D`` is any callable ``D(x, sigma)`` returning a tensor shaped like ``x`` (scoregen's
    models, deepinv's denoisers, the oracle's ``denoise``). ``sigma`` is a float or a
    ``[B]`` tensor broadcast over the trailing dims of ``x``.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable D(x, sigma), got {type(denoiser).__name__}")

    def score(x: Tensor, sigma) -> Tensor:
        _check_sigma_positive(sigma)
        return (denoiser(x, sigma) - x) / sigma_like(sigma, x) ** 2

    score.denoiser = denoiser
    return score


def score_denoiser(score: ScoreFn) -> Denoiser:
    """The denoiser of a score, Tweedie inverted: ``D(x, σ) = x + σ² s(x, σ)``."""
    if not callable(score):
        raise TypeError(f"score must be callable s(x, sigma), got {type(score).__name__}")

    def denoiser(x: Tensor, sigma) -> Tensor:
        return x + sigma_like(sigma, x) ** 2 * score(x, sigma)

    denoiser.score = score
    return denoiser


class FixedSigmaDenoiser:
    """A denoiser trained at one noise level σ₀, callable only at that level.

    ``D(x, sigma)`` forwards to ``net(x)`` when ``sigma`` equals σ₀ (relative tolerance
    ``rtol``) and raises a ValueError naming both values otherwise: a DAE trained at
    σ₀ = 0.1 says nothing true about the posterior mean at σ = 0.5. ``sigma=None`` means σ₀.
    """

    def __init__(self, net: Callable[[Tensor], Tensor], sigma: float, *, rtol: float = 1e-4):
        if not callable(net):
            raise TypeError(f"net must be callable net(x), got {type(net).__name__}")
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma (the training noise level) must be > 0, got {sigma}")
        self.net = net
        self.sigma = sigma
        self.rtol = rtol

    def check_sigma(self, sigma) -> None:
        if sigma is None:
            return
        if isinstance(sigma, Tensor):
            lo, hi = sigma.min().item(), sigma.max().item()
        else:
            lo = hi = float(sigma)
        for value in (lo, hi):
            if abs(value - self.sigma) > self.rtol * self.sigma:
                raise ValueError(
                    f"this denoiser was trained at the single noise level sigma={self.sigma:g}; "
                    f"it cannot be used at sigma={value:g}"
                )

    def __call__(self, x: Tensor, sigma=None) -> Tensor:
        self.check_sigma(sigma)
        return self.net(x)

    def __repr__(self) -> str:
        return f"FixedSigmaDenoiser(sigma={self.sigma:g}, net={self.net!r})"
