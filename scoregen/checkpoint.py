"""The one checkpoint format: safetensors weights + a JSON record; safe loading; resume state.

A checkpoint is one ``.safetensors`` file. Its tensors are the state dict of the
:class:`~scoregen.models.Denoiser` that sampling uses (the EMA weights when written by
:func:`scoregen.train`); its header metadata holds ``{"scoregen": <JSON record>}``::

    {"format": "scoregen-checkpoint", "format_version": 1, "scoregen_version": "0.1.0",
     "model": denoiser_record(...),           # family, constructor arguments, precond, σ_data
     "data": dataset.record(),                 # name, shape, normalisation, ...
     "sigma": {"fixed": σ} | {"min": .., "max": .., "distribution": ..},
     "training": {"steps": .., "seed": .., "final_loss": .., "wall_time_s": .., "config": {..}}}

The raw (non-EMA) weights and the optimizer live in the resume file beside it,
``<name>.resume.pt`` (:func:`resume_path`), read with ``torch.load(weights_only=True)`` only.
Nothing here ever unpickles: safetensors holds no code, and ``weights_only`` refuses any
object other than tensors and plain containers.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scoregen._io import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "load_checkpoint",
    "load_resume_state",
    "read_record",
    "resume_path",
    "save_checkpoint",
    "save_resume_state",
]

FORMAT = "scoregen-checkpoint"
FORMAT_VERSION = 1
RESUME_FORMAT = "scoregen-resume"
RESUME_FORMAT_VERSION = 1

# safetensors: 8-byte little-endian header length, then that many bytes of JSON.
_MAX_HEADER_BYTES = 100 * 2**20
_PICKLE_ADVICE = (
    "scoregen never unpickles a checkpoint, because unpickling can run arbitrary code from the "
    "file. If you trust it, load its state dict yourself (torch.load(path, weights_only=True)) "
    "into a scoregen Denoiser and write it with scoregen.save_checkpoint"
)


class CheckpointError(ValueError):
    """A file that is not a readable scoregen checkpoint (the message names the file and why)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (both a CheckpointError and a FileNotFoundError)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    ``denoiser`` is ``D(x, sigma)`` in eval mode with gradients off (fixed-σ guarded when it
    was trained at one level); ``score`` is its Tweedie score ``(D(x, σ) − x)/σ²``;
    ``metadata`` the whole JSON record; ``config`` the training configuration it holds
    (empty when the checkpoint was written outside :func:`scoregen.train`).
    """

    denoiser: torch.nn.Module
    score: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.metadata.get("training", {}).get("config", {}))

    @property
    def sigma(self) -> dict[str, Any]:
        return dict(self.metadata.get("sigma", {}))

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.metadata.get("data", {}))

    @property
    def fixed_sigma(self) -> float | None:
        return self.denoiser.fixed_sigma


def resume_path(checkpoint: str | Path) -> Path:
    """Where the resume state of ``checkpoint`` lives: ``run/model.safetensors`` ->
    ``run/model.resume.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".resume.pt")


# ---------------------------------------------------------------------- writing
def _jsonable(value):
    """Plain JSON values: tuples -> lists, paths -> str, non-finite floats -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def _sigma_entry(denoiser, sigma) -> dict[str, Any]:
    fixed = getattr(denoiser, "fixed_sigma", None)
    if sigma is None:
        if fixed is None:
            raise ValueError(
                "sigma: pass the noise levels the denoiser was trained on, "
                "{'min': .., 'max': .., 'distribution': ..}, or {'fixed': σ} for a fixed-σ denoiser"
            )
        return {"fixed": fixed}
    if not isinstance(sigma, dict):
        raise TypeError(f"sigma must be a dict, got {type(sigma).__name__}")
    if "fixed" in sigma:
        if fixed is None or abs(float(sigma["fixed"]) - fixed) > 1e-6 * fixed:
            raise ValueError(
                f"sigma={sigma} says fixed σ but the denoiser has fixed_sigma={fixed}; "
                "build the Denoiser with fixed_sigma to match"
            )
        return {"fixed": fixed}
    if fixed is not None:
        raise ValueError(f"the denoiser has fixed_sigma={fixed} but sigma={sigma} gives a range")
    try:
        lo, hi = float(sigma["min"]), float(sigma["max"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"sigma needs numeric 'min' and 'max' entries, got {sigma}") from None
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"sigma range must satisfy 0 < min <= max < inf, got {lo}, {hi}")
    return dict(sigma)


def save_checkpoint(
    path: str | Path,
    denoiser: torch.nn.Module,
    *,
    data=None,
    sigma: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``denoiser`` (a :class:`scoregen.models.Denoiser`) as one self-describing file.

    ``data`` is a :class:`scoregen.data.Dataset` or its ``record()`` dict (shape and
    normalisation); ``sigma`` is ``{"fixed": σ}`` or ``{"min", "max", "distribution", ...}``
    (taken from ``denoiser.fixed_sigma`` when omitted for a fixed-σ model); ``training`` any
    JSON-able summary. Written atomically: a crash mid-write leaves the old file whole.
    """
    from safetensors.torch import save as save_safetensors

    import scoregen
    from scoregen.models import denoiser_record

    model = denoiser_record(denoiser)  # ValueError for an unregistered network
    if data is not None and hasattr(data, "record"):
        data = data.record()
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"data must be a Dataset or a dict, got {type(data).__name__}")
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scoregen_version": scoregen.__version__,
        "model": model,
        "data": data or {},
        "sigma": _sigma_entry(denoiser, sigma),
        "training": training or {},
    }
    # clone: safetensors refuses tensors sharing storage, and wants them contiguous on CPU
    tensors = {
        name: t.detach().to("cpu").contiguous().clone() for name, t in denoiser.state_dict().items()
    }
    metadata = {"format": "pt", "scoregen": json.dumps(_jsonable(record), allow_nan=False)}
    payload = save_safetensors(tensors, metadata=metadata)
    return atomic_write(path, lambda f: f.write(payload))


# ---------------------------------------------------------------------- reading
def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a file")


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path``, after checking the bytes say what the file is."""
    _check_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        n_header = int.from_bytes(head[:8], "little") if len(head) >= 8 else None
        # The 8-byte length can begin with any bytes (0x80, "PK"): a file is taken for
        # safetensors when its JSON header opens at byte 8 with a plausible length, and only
        # otherwise sniffed for the formats that would need unpickling.
        looks_safetensors = head[8:9] == b"{" and n_header <= _MAX_HEADER_BYTES
        if not looks_safetensors:
            if head[:4] == b"PK\x03\x04":
                raise CheckpointError(
                    f"{str(path)!r} is a zip archive, the format of torch.save (a pickled "
                    f".pt/.pth file), not a scoregen checkpoint (.safetensors). {_PICKLE_ADVICE}"
                )
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                raise CheckpointError(
                    f"{str(path)!r} is a Python pickle (an old torch.save or .pkl file), not a "
                    f"scoregen checkpoint (.safetensors). {_PICKLE_ADVICE}"
                )
            if len(head) < 9:
                raise CheckpointError(
                    f"{str(path)!r} is truncated or empty ({size} bytes): a safetensors file "
                    "starts with an 8-byte header length and a JSON header"
                )
            raise CheckpointError(
                f"{str(path)!r} is not a safetensors file (no JSON header after the 8-byte "
                "length), nor a format scoregen recognises"
            )
        if 8 + n_header > size:
            raise CheckpointError(
                f"{str(path)!r} is truncated: it declares a {n_header}-byte header but has "
                f"{size} bytes"
            )
        f.seek(8)
        try:
            header = json.loads(f.read(n_header).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(
                f"{str(path)!r} is not a safetensors file or is corrupt: its header is not JSON"
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(path)!r} is corrupt: its header is not a JSON object")
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    needed = 8 + n_header + max(ends, default=0)
    if needed > size:
        raise CheckpointError(
            f"{str(path)!r} is truncated: its tensors end at byte {needed} but the file has "
            f"{size} bytes (a copy or a write was cut short)"
        )
    return header


def read_record(path: str | Path) -> dict[str, Any]:
    """The JSON record of a checkpoint, read from its header alone (no tensors loaded)."""
    path = Path(path)
    header = _read_header(path)
    metadata = header.get("__metadata__") or {}
    if "scoregen" not in metadata:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without a scoregen record (metadata key "
            "'scoregen'); it holds weights but not what model they belong to"
        )
    try:
        record = json.loads(metadata["scoregen"])
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{str(path)!r}: its scoregen record is not valid JSON ({e})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r}: its record does not say format={FORMAT!r}; not a scoregen checkpoint"
        )
    version = record.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{str(path)!r}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format_version {version}, written by a newer scoregen "
            f"({record.get('scoregen_version')}); this one reads up to {FORMAT_VERSION}: upgrade"
        )
    if not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{str(path)!r}: its record has no 'model' entry")
    return record


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the denoiser a checkpoint describes and load its weights onto ``device``.

    Raises :class:`CheckpointError` (a ValueError) naming the file and the problem for a
    pickle, a truncated or corrupt file, a missing record, an unknown model family or
    weights that do not fit the architecture; :class:`CheckpointNotFoundError` (also a
    FileNotFoundError) when there is no file. Never executes code from the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from scoregen.models import build_denoiser
    from scoregen.score import tweedie_score

    path = Path(path)
    record = read_record(path)
    try:
        denoiser = build_denoiser(record["model"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r}: cannot rebuild its model: {e}") from None
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(
            f"{str(path)!r} is corrupt: safetensors could not read it ({e})"
        ) from None
    expected = denoiser.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{name}: file {tuple(tensors[name].shape)}, model {tuple(t.shape)}"
        for name, t in expected.items()
        if name in tensors and tensors[name].shape != t.shape
    ]
    if missing or unexpected or mismatched:
        family = record["model"].get("family")
        problems = []
        if missing:
            problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if mismatched:
            problems.append("shape mismatch " + "; ".join(mismatched[:5]))
        raise CheckpointError(
            f"{str(path)!r}: its weights do not fit the {family!r} architecture its record "
            f"describes: {', '.join(problems)}"
        )
    denoiser.load_state_dict(tensors, strict=True)
    denoiser = denoiser.to(_resolve_device(device)).eval().requires_grad_(False)
    return Checkpoint(denoiser=denoiser, score=tweedie_score(denoiser), metadata=record, path=path)


# ---------------------------------------------------------------------- resume state
def save_resume_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write training-resume state (tensors, dicts, lists, numbers, strings only), atomically."""
    state = {"format": RESUME_FORMAT, "format_version": RESUME_FORMAT_VERSION, **state}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(payload))


def load_resume_state(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a resume file with ``torch.load(weights_only=True)``: anything but tensors and
    plain containers is refused, so no code from the file runs."""
    path = Path(path)
    _check_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{str(path)!r} holds objects other than tensors and plain containers, which "
            f"weights_only loading refuses (it would have to run code from the file): {e}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{str(path)!r} is truncated or corrupt: {e}") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a scoregen resume file")
    if state.get("format_version", 0) > RESUME_FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has resume format_version {state.get('format_version')}, newer than "
            f"this scoregen reads ({RESUME_FORMAT_VERSION})"
        )
    return state
