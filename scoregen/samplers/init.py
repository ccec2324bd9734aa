"""Starting batches for the samplers: pure noise, a uniform box, or data plus noise."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int

__all__ = ["init_noise", "init_uniform", "init_from_data"]


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    if not isinstance(shape, Sequence | torch.Size) or not shape:
        raise ValueError(f"shape must be a batch shape (B, ...), got {shape!r}")
    for size in shape:
        check_positive_int("shape entries", size)
    return tuple(int(s) for s in shape)


def _device(device, generator):
    # A generator lives on one device; default to it so a CUDA generator needs no device=.
    if device is None and generator is not None:
        return generator.device
    return device


def init_noise(
    shape,
    sigma_max: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``σ_max z`` with ``z ~ N(0, I)``: the usual start of annealed and diffusion samplers.

    For data of spread much smaller than ``σ_max``, ``p_{σ_max} ≈ N(0, σ_max² I)``.
    ``shape`` is the full batch shape ``(B, ...)``.
    """
    shape = _shape(shape)
    sigma_max = check_positive_float("sigma_max", sigma_max)
    device = _device(device, generator)
    return sigma_max * torch.randn(shape, generator=generator, device=device, dtype=dtype)


def init_uniform(
    shape,
    low: float,
    high: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Independent ``U[low, high]`` entries: the box start of the NCSN toy experiment."""
    shape = _shape(shape)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got low={low}, high={high}")
    device = _device(device, generator)
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return low + (high - low) * u


def init_from_data(
    data: Tensor,
    sigma: float,
    *,
    n: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Data points plus noise, ``x + σ z`` (chains that start next to the data).

    ``data`` is a batch ``[N, ...]``. With ``n=None`` every row is used once; otherwise
    ``n`` rows are drawn uniformly with replacement. The result has ``data``'s device and
    dtype (the generator must live on that device).
    """
    if not isinstance(data, Tensor) or data.ndim < 1 or data.shape[0] == 0:
        raise ValueError("data must be a non-empty tensor batch [N, ...]")
    if not data.is_floating_point():
        raise ValueError(f"data must be floating point, got dtype {data.dtype}")
    sigma = check_positive_float("sigma", sigma, allow_zero=True)
    if n is not None:
        n = check_positive_int("n", n)
        index = torch.randint(data.shape[0], (n,), generator=generator, device=data.device)
        data = data[index]
    noise = torch.randn(data.shape, generator=generator, device=data.device, dtype=data.dtype)
    return data + sigma * noise
