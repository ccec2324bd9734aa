"""The σ-aware denoiser that wraps a raw network (EDM's split: the net never sees σ directly)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from scoregen._util import append_dims, sigma_batch

__all__ = ["Denoiser", "PRECONDITIONINGS"]

PRECONDITIONINGS = ("none", "edm")


class Denoiser(nn.Module):
    """``D(x, σ)`` built from a raw network ``net(x, c_noise)``.

    ``precond="edm"`` (Karras et al. 2022, eq. 7 and Table 1)::

        D(x, σ) = c_skip(σ) x + c_out(σ) net(c_in(σ) x, c_noise(σ))
        c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / sqrt(σ² + σ_d²),
        c_in   = 1 / sqrt(σ² + σ_d²), c_noise = log(σ) / 4

    ``precond="none"``: ``D(x, σ) = net(x, log(σ) / 4)`` (a plain DAE: the net sees σ only through ``c_noise``).

    ``precond=None`` takes the net's own choice: the first of its ``preconditionings``
    attribute when it has one (deepinv's DnCNN/DRUNet allow only ``"none"``: they take σ in
    the data's units), else ``"edm"``; a precond the net does not allow is a ValueError.

    With ``fixed_sigma`` set, the denoiser was trained at that single level: ``sigma`` may
    be omitted, and any other value raises a ValueError naming both (a fixed-σ DAE says
    nothing true about other noise levels).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        precond: str | None = None,
        sigma_data: float = 0.5,
        fixed_sigma: float | None = None,
    ):
        super().__init__()
        allowed = tuple(getattr(net, "preconditionings", PRECONDITIONINGS))
        if precond is None:
            precond = allowed[0] if hasattr(net, "preconditionings") else "edm"
        if precond not in PRECONDITIONINGS:
            raise ValueError(f"precond must be one of {PRECONDITIONINGS}, got {precond!r}")
        if precond not in allowed:
            raise ValueError(
                f"precond={precond!r} does not suit {type(net).__name__}; it allows {allowed}"
            )
        if not (sigma_data > 0 and math.isfinite(sigma_data)):
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        if fixed_sigma is not None and not (fixed_sigma > 0 and math.isfinite(fixed_sigma)):
            raise ValueError(f"fixed_sigma must be > 0 or None, got {fixed_sigma}")
        self.net = net
        self.precond = precond
        self.sigma_data = float(sigma_data)
        self.fixed_sigma = None if fixed_sigma is None else float(fixed_sigma)

    def _sigma_levels(self, sigma, x: Tensor) -> Tensor:
        """σ as a ``[B]`` tensor, or ``[1]`` when one σ serves the whole batch."""
        if sigma is None:
            if self.fixed_sigma is None:
                raise ValueError(
                    "sigma is required: this denoiser is conditioned on the noise level"
                )
            sigma = self.fixed_sigma
        elif self.fixed_sigma is not None:
            values = (
                (sigma.min().item(), sigma.max().item())
                if isinstance(sigma, Tensor)
                else (float(sigma),)
            )
            for value in values:
                if abs(value - self.fixed_sigma) > 1e-4 * self.fixed_sigma:
                    raise ValueError(
                        f"this denoiser was trained at the single noise level "
                        f"sigma={self.fixed_sigma:g}; it cannot be used at sigma={value:g}"
                    )
        # One σ for the batch stays one number, [1]: the net then embeds it once and every
        # preconditioning factor broadcasts (no per-example copies, no device synchronisation).
        return sigma_batch(sigma, x, keep_single=True)

    def forward(self, x: Tensor, sigma=None) -> Tensor:
        if isinstance(sigma, numbers.Real) and self.fixed_sigma is None:
            return self._forward_one_level(x, float(sigma))
        sigma = self._sigma_levels(sigma, x)
        c_noise = sigma.log() / 4
        if self.precond == "none":
            return self.net(x, c_noise)
        s = append_dims(sigma, x.ndim)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, c_noise)

    def _forward_one_level(self, x: Tensor, sigma: float) -> Tensor:
        """The same for one σ given as a number (every sampler's call): the preconditioning
        factors are numbers, so a step costs the network and two fused element-wise ops
        instead of a dozen tensor operations on [1]-shaped factors."""
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be finite and > 0, got {sigma}")
        c_noise = torch.full((1,), math.log(sigma) / 4, device=x.device, dtype=x.dtype)
        if self.precond == "none":
            return self.net(x, c_noise)
        sd2 = self.sigma_data**2
        norm = math.sqrt(sigma**2 + sd2)
        c_skip, c_out, c_in = sd2 / (sigma**2 + sd2), sigma * self.sigma_data / norm, 1 / norm
        out = self.net(x * c_in, c_noise)
        if torch.is_grad_enabled() and (out.requires_grad or x.requires_grad):
            return c_skip * x + c_out * out
        return out.mul_(c_out).add_(x, alpha=c_skip)

    def extra_repr(self) -> str:
        return f"precond={self.precond!r}, sigma_data={self.sigma_data:g}, fixed_sigma={self.fixed_sigma}"
