"""Small helpers shared across scoregen: argument checks, σ broadcasting, one device resolver,
one JSON sanitiser. Importing this module does not import torch (the command line's start-up
depends on it): a value can only be a tensor once torch has been imported by someone else."""

from __future__ import annotations

import math
import numbers
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def is_tensor(value) -> bool:
    """``isinstance(value, torch.Tensor)`` without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


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
    if is_tensor(sigma):
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


def sigma_batch(sigma, x: Tensor, *, keep_single: bool = False) -> Tensor:
    """σ as a ``[B]`` tensor on ``x``'s device and dtype, from a float, a 0-d, ``[1]`` or
    ``[B]`` tensor (the one σ → batch conversion of the package). With ``keep_single`` one σ
    for the whole batch stays ``[1]`` (it broadcasts, and a network can embed it once)."""
    import torch

    if is_tensor(sigma):
        sigma = sigma.to(device=x.device, dtype=x.dtype)
        if sigma.ndim == 0 or sigma.shape == (1,):
            return sigma.reshape(1) if keep_single else sigma.reshape(1).expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"sigma must be a float or a [B] = [{x.shape[0]}] tensor, got shape "
                f"{tuple(sigma.shape)}"
            )
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a float or a tensor, got {type(sigma).__name__}")
    size = 1 if keep_single else x.shape[0]
    return torch.full((size,), float(sigma), device=x.device, dtype=x.dtype)


def check_positive_int(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int >= ``minimum`` (and <= ``maximum``), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), else a ValueError naming ``name``."""
    if is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {allowed}, got {value}")
    return value


def resolve_device(device=None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is a
    ValueError (the one device resolver of the package)."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def jsonable(value: Any) -> Any:
    """Plain JSON values (the one JSON sanitiser of the package): mappings and sequences
    recursively, tuples -> lists, paths -> str, tensors/numpy scalars and arrays -> numbers and
    lists, non-finite floats -> None (JSON has no NaN), anything else -> its str."""
    if isinstance(value, dict) or (hasattr(value, "items") and hasattr(value, "keys")):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if is_tensor(value):
        return jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, numbers.Real):
        return jsonable(float(value))
    return str(value)


def available_memory(device=None) -> int:
    """Bytes a new allocation on ``device`` can take (the one memory probe of the package).

    CUDA: the free device memory plus what torch's caching allocator holds unused. CPU: the
    smallest of the kernel's ``MemAvailable``, the room left under a cgroup (v2) memory limit
    and under this process's ``RLIMIT_AS`` / ``RLIMIT_DATA``; 8 GiB where none can be read.
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(unused, 0))
    limits = []
    meminfo = _read_key_values("/proc/meminfo")
    if "MemAvailable" in meminfo:
        limits.append(meminfo["MemAvailable"])
    try:
        maximum = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if maximum != "max":
            limits.append(max(int(maximum) - int(current), 0))
    except (OSError, ValueError):
        pass
    try:
        import resource

        status = _read_key_values("/proc/self/status")
        for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
            soft, _ = resource.getrlimit(limit)
            if soft != resource.RLIM_INFINITY and used in status:
                limits.append(max(soft - status[used], 0))
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else 8 * 2**30


def _read_key_values(path: str) -> dict[str, int]:
    """``Key:   123 kB`` lines of a /proc file as bytes (empty when the file is absent)."""
    out = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return out


def format_bytes(n_bytes: float) -> str:
    """``1.5 GiB``, ``12 MiB``, ``3 KiB``, ``17 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{int(n_bytes)} B"
