"""Small tensor helpers shared across scoregen: σ broadcasting and argument checks."""

from __future__ import annotations

import math
import numbers

from torch import Tensor


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``t`` until it has ``ndim`` dims (``[B]`` -> ``[B, 1, ...]``)."""
    missing = ndim - t.ndim
    if missing < 0:
        raise ValueError(f"tensor has {t.ndim} dims, more than the target {ndim}")
    return t[(...,) + (None,) * missing]


def sigma_like(sigma, x: Tensor) -> Tensor | float:
    """σ ready to broadcast against a batch ``x`` of shape ``[B, ...]``.

    A Python number stays a number; a 0-d tensor stays 0-d; a ``[B]`` tensor becomes
    ``[B, 1, ..., 1]``. Anything else is a ValueError naming the shapes.
    """
    if isinstance(sigma, Tensor):
        if sigma.ndim == 0:
            return sigma.to(dtype=x.dtype)
        if sigma.ndim == 1 and sigma.shape[0] in (1, x.shape[0]):
            return append_dims(sigma.to(dtype=x.dtype), x.ndim)
        raise ValueError(
            f"sigma must be a float or a [B] tensor with B = {x.shape[0]}, "
            f"got shape {tuple(sigma.shape)}"
        )
    if isinstance(sigma, numbers.Real):
        return float(sigma)
    raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), else a ValueError naming ``name``."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {allowed}, got {value}")
    return value
