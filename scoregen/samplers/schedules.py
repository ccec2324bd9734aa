"""Noise-level ladders σ_max = σ_0 > … > σ_{n-1} = σ_min as pure functions returning tensors.

None of them appends a trailing 0 (k-diffusion does): the samplers end at σ_min and take the
last step to σ = 0 themselves when asked (``final_denoise``), because a Tweedie score is not
defined at σ = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int

__all__ = ["geometric_sigmas", "linear_sigmas", "karras_sigmas"]


def _check_range(sigma_max, sigma_min, n, *, allow_zero_min: bool) -> tuple[float, float, int]:
    sigma_max = check_positive_float("sigma_max", sigma_max)
    sigma_min = check_positive_float("sigma_min", sigma_min, allow_zero=allow_zero_min)
    n = check_positive_int("n", n)
    if sigma_min > sigma_max:
        raise ValueError(
            f"sigma_min must be <= sigma_max, got sigma_min={sigma_min} > sigma_max={sigma_max}"
        )
    if n == 1 and sigma_min != sigma_max:
        raise ValueError(
            f"n must be >= 2 to span sigma_max={sigma_max} to sigma_min={sigma_min}, got n=1"
        )
    return sigma_max, sigma_min, n


def _finish(sigmas: Tensor, sigma_max: float, sigma_min: float, dtype, device) -> Tensor:
    # Pin the end points exactly (no round-off from pow/exp) and cast once at the end.
    sigmas[0] = sigma_max
    sigmas[-1] = sigma_min
    return sigmas.to(dtype=dtype, device=device)


def geometric_sigmas(
    sigma_max: float,
    sigma_min: float,
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """NCSN's geometric ladder: ``σ_i = σ_max (σ_min / σ_max)^(i / (n − 1))``, ``i = 0 … n−1``.

    Consecutive ratios are constant, so each level's noise ball overlaps the next one's
    (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models",
    Technique 2). Returns a descending ``[n]`` tensor; ``σ_min > 0``.
    """
    sigma_max, sigma_min, n = _check_range(sigma_max, sigma_min, n, allow_zero_min=False)
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    sigmas = sigma_max * (sigma_min / sigma_max) ** t
    return _finish(sigmas, sigma_max, sigma_min, dtype, device)


def linear_sigmas(
    sigma_max: float,
    sigma_min: float,
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Evenly spaced levels: ``σ_i = σ_max + (i / (n − 1)) (σ_min − σ_max)``; ``σ_min >= 0``.

    A trailing ``σ_min = 0`` is only accepted by samplers that do not evaluate the score
    there; the samplers in scoregen all need ``σ > 0``.
    """
    sigma_max, sigma_min, n = _check_range(sigma_max, sigma_min, n, allow_zero_min=True)
    sigmas = torch.linspace(sigma_max, sigma_min, n, dtype=torch.float64)
    return _finish(sigmas, sigma_max, sigma_min, dtype, device)


def karras_sigmas(
    sigma_max: float,
    sigma_min: float,
    n: int,
    rho: float = 7.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """EDM's ladder (Karras et al. 2022, eq. 5):
    ``σ_i = (σ_max^(1/ρ) + (i / (n − 1)) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ``.

    ``ρ = 7`` spends more steps at small σ, where the ODE's curvature is highest; ``ρ = 1``
    is the linear ladder and ``ρ → ∞`` tends to the geometric one. ``σ_min > 0``.

    The argument order is scoregen's (largest σ first, as in every schedule here), not
    k-diffusion's ``get_sigmas_karras(n, sigma_min, sigma_max, rho)``, whose ladder also ends
    with an appended 0: ``torch.cat([karras_sigmas(sigma_max, sigma_min, n), torch.zeros(1)])``
    is that ladder.
    """
    sigma_max, sigma_min, n = _check_range(sigma_max, sigma_min, n, allow_zero_min=False)
    rho = check_positive_float("rho", rho)
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + t * (lo - hi)) ** rho
    return _finish(sigmas, sigma_max, sigma_min, dtype, device)
