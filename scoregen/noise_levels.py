"""Training noise-level distributions: fixed σ, log-uniform, NCSN's geometric ladder, EDM's log-normal.

Each sampler is a small pure function ``(n, parameters, generator) -> [n]`` tensor of σ.
:class:`NoiseLevels` bundles one choice with its parameters for the training loop and the
checkpoint record (which σ the model has seen, hence where its denoiser can be trusted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int
from scoregen.config import NOISE_DISTRIBUTIONS

__all__ = [
    "NOISE_DISTRIBUTIONS",
    "NoiseLevels",
    "fixed_sigmas",
    "geometric_ladder",
    "ladder_sigmas",
    "log_normal_sigmas",
    "log_uniform_sigmas",
]


# EDM's log-normal has unbounded support; its "range" (for buckets and the record) is the
# central interval exp(P_mean ± 3 P_std), which holds 99.73 % of the draws.
LOG_NORMAL_RANGE_STDS = 3.0


def _where(generator: torch.Generator | None, device) -> torch.device | None:
    return generator.device if generator is not None else device


def fixed_sigmas(n: int, sigma: float, *, device=None, dtype=torch.float32) -> Tensor:
    """``[n]`` copies of one σ (a single-level DAE)."""
    return torch.full((n,), float(sigma), device=device, dtype=dtype)


def log_uniform_sigmas(
    n: int,
    sigma_min: float,
    sigma_max: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    """``log σ ~ U[log σ_min, log σ_max]``: every octave of σ gets the same share of draws."""
    u = torch.rand(n, generator=generator, device=_where(generator, device), dtype=torch.float64)
    log_sigma = math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))
    return log_sigma.exp().to(dtype)


def geometric_ladder(sigma_max: float, sigma_min: float, n_levels: int) -> Tensor:
    """NCSN's levels ``σ_i = σ_max (σ_min/σ_max)^{i/(L−1)}``, i = 0..L−1 (decreasing), float64."""
    if n_levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    steps = torch.arange(n_levels, dtype=torch.float64) / (n_levels - 1)
    return torch.exp(math.log(sigma_max) + steps * (math.log(sigma_min) - math.log(sigma_max)))


def ladder_sigmas(
    n: int,
    sigma_min: float,
    sigma_max: float,
    n_levels: int,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    """σ drawn uniformly from the L levels of :func:`geometric_ladder` (NCSN's training)."""
    where = _where(generator, device)
    levels = geometric_ladder(sigma_max, sigma_min, n_levels).to(device=where, dtype=dtype)
    index = torch.randint(0, n_levels, (n,), generator=generator, device=where)
    return levels[index]


def log_normal_sigmas(
    n: int,
    p_mean: float,
    p_std: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    """EDM's ``log σ ~ N(P_mean, P_std²)`` (Karras et al. 2022, sec. 5; defaults −1.2, 1.2)."""
    normal = torch.randn(n, generator=generator, device=_where(generator, device), dtype=dtype)
    return (p_mean + p_std * normal).exp()


@dataclass(frozen=True)
class NoiseLevels:
    """One training noise-level distribution and its parameters.

    ``distribution`` is one of :data:`NOISE_DISTRIBUTIONS`; ``fixed`` uses ``sigma``,
    ``log_uniform`` uses ``[sigma_min, sigma_max]``, ``geometric`` adds ``n_levels``,
    ``log_normal`` uses ``p_mean`` and ``p_std``.
    """

    distribution: str = "log_uniform"
    sigma: float = 0.5
    sigma_min: float = 0.01
    sigma_max: float = 10.0
    n_levels: int = 10
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self):
        if self.distribution not in NOISE_DISTRIBUTIONS:
            raise ValueError(
                f"noise must be one of {NOISE_DISTRIBUTIONS}, got {self.distribution!r}"
            )
        if self.distribution == "fixed":
            check_positive_float("sigma", self.sigma)
        elif self.distribution in ("log_uniform", "geometric"):
            lo = check_positive_float("sigma_min", self.sigma_min)
            hi = check_positive_float("sigma_max", self.sigma_max)
            if lo >= hi:
                raise ValueError(f"sigma_min must be < sigma_max, got {lo} >= {hi}")
            if self.distribution == "geometric":
                check_positive_int("n_levels", self.n_levels, minimum=2)
        else:
            if not math.isfinite(self.p_mean):
                raise ValueError(f"p_mean must be finite, got {self.p_mean}")
            check_positive_float("p_std", self.p_std)

    @property
    def is_fixed(self) -> bool:
        return self.distribution == "fixed"

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, device=None, dtype=torch.float32
    ) -> Tensor:
        """``[n]`` noise levels from this distribution."""
        kw = {"device": device, "dtype": dtype}
        if self.distribution == "fixed":
            return fixed_sigmas(n, self.sigma, device=_where(generator, device), dtype=dtype)
        if self.distribution == "log_uniform":
            return log_uniform_sigmas(n, self.sigma_min, self.sigma_max, generator=generator, **kw)
        if self.distribution == "geometric":
            return ladder_sigmas(
                n, self.sigma_min, self.sigma_max, self.n_levels, generator=generator, **kw
            )
        return log_normal_sigmas(n, self.p_mean, self.p_std, generator=generator, **kw)

    def range(self) -> tuple[float, float]:
        """``(lo, hi)``: where the training σ lie (log-normal: ``exp(P_mean ± 3 P_std)``)."""
        if self.distribution == "fixed":
            return self.sigma, self.sigma
        if self.distribution == "log_normal":
            half = LOG_NORMAL_RANGE_STDS * self.p_std
            return math.exp(self.p_mean - half), math.exp(self.p_mean + half)
        return self.sigma_min, self.sigma_max

    def bucket_edges(self, n_buckets: int = 8) -> Tensor:
        """``n_buckets + 1`` log-spaced edges over :meth:`range` (one bucket for fixed σ;
        one per level, at most ``n_buckets``, for the ladder). Float64."""
        lo, hi = self.range()
        if self.distribution == "fixed":
            return torch.tensor([lo, hi], dtype=torch.float64)
        if self.distribution == "geometric" and self.n_levels <= n_buckets:
            # one bucket around each level: edges at the geometric midpoints
            levels = geometric_ladder(hi, lo, self.n_levels).flip(0).log()
            mids = (levels[1:] + levels[:-1]) / 2
            edges = torch.cat([levels[:1], mids, levels[-1:]])
            return edges.exp()
        return torch.logspace(math.log10(lo), math.log10(hi), n_buckets + 1, dtype=torch.float64)

    def record(self) -> dict[str, Any]:
        """The checkpoint's ``sigma`` entry: ``{"fixed": σ}`` or the range and distribution."""
        if self.distribution == "fixed":
            return {"fixed": float(self.sigma)}
        lo, hi = self.range()
        out: dict[str, Any] = {"min": lo, "max": hi, "distribution": self.distribution}
        if self.distribution == "geometric":
            out["n_levels"] = int(self.n_levels)
        if self.distribution == "log_normal":
            out.update(p_mean=float(self.p_mean), p_std=float(self.p_std))
        return out
