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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scoregen._io import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "ScoreModel",
    "oracle_for",
    "validate_record",
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


def resume_path(checkpoint: str | Path) -> Path:
    """Where the resume state of ``checkpoint`` lives: ``run/model.safetensors`` ->
    ``run/model.resume.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".resume.pt")


# ---------------------------------------------------------------------- writing
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

    ``data`` is the :class:`scoregen.data.Dataset` it was trained on (its statistics,
    :func:`scoregen.data.dataset_stats`, are computed and stored), or that dataset's
    ``record()`` dict (shape, normalisation, statistics), or at least ``{"shape": [...]}``;
    it may be omitted only when the network fixes its input shape itself (the MLP).
    ``sigma`` is ``{"fixed": σ}`` or ``{"min", "max", "distribution", ...}`` (taken from
    ``denoiser.fixed_sigma`` when omitted for a fixed-σ model); ``training`` any JSON-able
    summary. The record is validated as :func:`load_checkpoint` will validate it, so a file
    this writes always loads. Written atomically: a crash mid-write leaves the old file whole.
    """
    from safetensors.torch import save as save_safetensors

    from scoregen import __version__
    from scoregen._util import jsonable
    from scoregen.models import denoiser_record

    model = denoiser_record(denoiser)  # ValueError for an unregistered network
    if data is not None and hasattr(data, "record"):
        from scoregen.data import dataset_stats

        # the statistics a sampler's start needs (train records the same)
        data = {**data.record(), "stats": dataset_stats(data)}
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"data must be a Dataset or a dict, got {type(data).__name__}")
    if not (data or {}).get("shape") and model["net"].get("shape") is None:
        raise ValueError(
            f"data: pass the Dataset the denoiser was trained on (or at least "
            f"{{'shape': [C, H, W]}}); a {model['family']!r} network does not fix the shape of "
            "its examples, and sampling needs it"
        )
    record = jsonable(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scoregen_version": __version__,
            "model": model,
            "data": data or {},
            "sigma": _sigma_entry(denoiser, sigma),
            "training": training or {},
        }
    )
    try:
        validate_record(record, "the record to save")
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    # clone: safetensors refuses tensors sharing storage, and wants them contiguous on CPU
    tensors = {
        name: t.detach().to("cpu").contiguous().clone() for name, t in denoiser.state_dict().items()
    }
    metadata = {"format": "pt", "scoregen": json.dumps(record, allow_nan=False)}
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
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{str(path)!r} is corrupt: its __metadata__ is not a map of strings")
    ends = [
        _tensor_entry_end(name, entry, path)
        for name, entry in header.items()
        if name != "__metadata__"
    ]
    needed = 8 + n_header + max(ends, default=0)
    if needed > size:
        raise CheckpointError(
            f"{str(path)!r} is truncated: its tensors end at byte {needed} but the file has "
            f"{size} bytes (a copy or a write was cut short)"
        )
    return header


# bytes per number of the dtypes a safetensors header names
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip


def _tensor_entry_end(name: str, entry, path: Path) -> int:
    """Where one tensor of the header ends in the data, after checking its entry: a known
    dtype, a shape of non-negative integers and offsets spanning exactly its bytes."""
    where = f"{str(path)!r} is corrupt: tensor {name!r} in its header"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where} is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        raise CheckpointError(f"{where} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
    ):
        raise CheckpointError(f"{where} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
        or offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[dtype]
    ):
        raise CheckpointError(
            f"{where} has data_offsets {offsets!r} that do not hold its {dtype} {shape}"
        )
    return offsets[1]


def _record_from_header(header: dict[str, Any], path: Path) -> dict[str, Any]:
    """The scoregen JSON record in a safetensors header: present, JSON, our format, a version
    this code reads."""
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
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{str(path)!r}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format_version {version}, written by a newer scoregen "
            f"({record.get('scoregen_version')}); this one reads up to {FORMAT_VERSION}: upgrade"
        )
    if not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{str(path)!r}: its record has no 'model' entry")
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """The JSON record of a checkpoint, read from its header alone (no tensors loaded)."""
    path = Path(path)
    return _record_from_header(_read_header(path), path)


# ---------------------------------------------------------------------- the record, validated
_MAX_SHAPE_NUMBERS = 2**26  # numbers per example: far beyond any model here, short of a bomb


# Scales (σ, σ_data, data statistics, normalisation) beyond this overflow float32 once
# squared; a record holding one was not written by a training run.
_MAX_SCALE = 1e10


def _number(
    value,
    field: str,
    where: str,
    *,
    positive: bool = False,
    nonzero: bool = False,
    maximum: float = _MAX_SCALE,
):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{where}: {field} must be a finite number, got {value!r}")
    if abs(value) > maximum:
        raise CheckpointError(
            f"{where}: {field} must be at most {maximum:g} in size, got {value!r}"
        )
    if positive and value <= 0:
        raise CheckpointError(f"{where}: {field} must be > 0, got {value!r}")
    if nonzero and value == 0:
        raise CheckpointError(f"{where}: {field} must not be 0")
    return float(value)


def _shape(value, field: str, where: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 4
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in value)
        or math.prod(value) > _MAX_SHAPE_NUMBERS
    ):
        raise CheckpointError(
            f"{where}: {field} must be a list of 1 to 4 positive integers holding at most "
            f"{_MAX_SHAPE_NUMBERS} numbers per example, got {value!r}"
        )
    return list(value)


def _validate_data(data, model: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``data`` entry: shape, normalisation, value range, statistics (all optional but
    shape, which falls back to the network's own ``shape`` when it has one)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: data must be a JSON object, got {type(data).__name__}")
    data = dict(data)
    for key in ("name", "kind"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise CheckpointError(f"{where}: data.{key} must be a string, got {data[key]!r}")
    net_shape = model["net"].get("shape")
    if data.get("shape") is None and net_shape is not None:
        data["shape"] = net_shape
    if data.get("shape") is not None:
        data["shape"] = _shape(data["shape"], "data.shape", where)
        if net_shape is not None and list(net_shape) != data["shape"]:
            raise CheckpointError(
                f"{where}: data.shape {data['shape']} disagrees with the network's shape "
                f"{list(net_shape)}"
            )
    norm = data.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            raise CheckpointError(f"{where}: data.normalization must be a JSON object")
        data["normalization"] = {
            **norm,
            "scale": _number(norm.get("scale", 1.0), "data.normalization.scale", where,
                             positive=True),
            "shift": _number(norm.get("shift", 0.0), "data.normalization.shift", where),
        }  # fmt: skip
    value_range = data.get("value_range")
    if value_range is not None:
        if not isinstance(value_range, list) or len(value_range) != 2:
            raise CheckpointError(f"{where}: data.value_range must be [low, high], got {value_range!r}")  # fmt: skip
        low = _number(value_range[0], "data.value_range[0]", where)
        high = _number(value_range[1], "data.value_range[1]", where)
        if not low < high:
            raise CheckpointError(f"{where}: data.value_range must have low < high, got {value_range}")  # fmt: skip
    stats = data.get("stats")
    if stats is not None:
        length = data["shape"][0] if data.get("shape") else None
        if not isinstance(stats, dict):
            raise CheckpointError(f"{where}: data.stats must be a JSON object")
        for key in ("mean", "std"):
            values = stats.get(key)
            if not isinstance(values, list) or (length is not None and len(values) != length):
                raise CheckpointError(
                    f"{where}: data.stats.{key} must be a list of {length} numbers (one per "
                    f"channel or coordinate), got {values!r}"
                )
            for i, v in enumerate(values):
                _number(v, f"data.stats.{key}[{i}]", where, positive=key == "std")
        cov = stats.get("cov")
        if cov is not None:
            d = len(stats["mean"])
            if (
                not isinstance(cov, list)
                or len(cov) != d
                or any(not isinstance(row, list) or len(row) != d for row in cov)
            ):
                raise CheckpointError(f"{where}: data.stats.cov must be a {d}×{d} list of lists")
            for i, row in enumerate(cov):
                for j, v in enumerate(row):
                    _number(v, f"data.stats.cov[{i}][{j}]", where, maximum=_MAX_SCALE**2)
    return data


def _validate_sigma(sigma, model: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(sigma, dict) or not sigma:
        raise CheckpointError(
            f"{where}: its record has no sigma entry ({{'fixed': σ}} or {{'min': .., 'max': ..}}),"
            " so the noise levels its denoiser can be trusted at are unknown"
        )
    fixed = model.get("fixed_sigma")
    if "fixed" in sigma:
        value = _number(sigma["fixed"], "sigma.fixed", where, positive=True)
        if fixed is None or abs(value - fixed) > 1e-6 * value:
            raise CheckpointError(
                f"{where}: sigma.fixed={value:g} disagrees with model.fixed_sigma={fixed}"
            )
        return {**sigma, "fixed": value}
    if fixed is not None:
        raise CheckpointError(
            f"{where}: model.fixed_sigma={fixed:g} but sigma gives a range, not {{'fixed': σ}}"
        )
    low = _number(sigma.get("min"), "sigma.min", where, positive=True)
    high = _number(sigma.get("max"), "sigma.max", where, positive=True)
    if low > high:
        raise CheckpointError(f"{where}: sigma.min={low:g} is above sigma.max={high:g}")
    return {**sigma, "min": low, "max": high}


def validate_record(record: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """Check a checkpoint record field by field; returns it with shapes and numbers normalised.

    Every problem is a :class:`CheckpointError` naming ``where`` (the file) and the field.
    The network's own arguments are checked when it is built (unknown fields, bad widths).
    """
    model = record.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where}: its record has no 'model' entry")
    if not isinstance(model.get("family"), str) or not isinstance(model.get("net"), dict):
        raise CheckpointError(
            f"{where}: model must name a 'family' and hold its 'net' arguments, got "
            f"{ {k: model.get(k) for k in ('family', 'net')} }"
        )
    model = dict(model)
    if model.get("precond") is not None and model["precond"] not in ("edm", "none"):
        raise CheckpointError(f"{where}: model.precond must be 'edm', 'none' or null, got {model['precond']!r}")  # fmt: skip
    if model.get("sigma_data") is not None:
        model["sigma_data"] = _number(model["sigma_data"], "model.sigma_data", where, positive=True)
    if model.get("fixed_sigma") is not None:
        model["fixed_sigma"] = _number(model["fixed_sigma"], "model.fixed_sigma", where, positive=True)  # fmt: skip
    if model["net"].get("shape") is not None:
        model["net"]["shape"] = _shape(model["net"]["shape"], "model.net.shape", where)
    data = _validate_data(record.get("data"), model, where)
    if data.get("shape") is None:
        raise CheckpointError(
            f"{where}: its record gives no example shape (data.shape, or the network's "
            "model.net.shape), and sampling needs it"
        )
    if model["net"].get("shape") is None and _takes_shape(model["family"]):
        # the network would otherwise be built with its family's default shape
        model["net"] = {**model["net"], "shape": list(data["shape"])}
    return {
        **record,
        "model": model,
        "data": data,
        "sigma": _validate_sigma(record.get("sigma"), model, where),
        "training": _validate_training(record.get("training"), where),
    }


def _takes_shape(family: str) -> bool:
    """Whether a model family's config has a ``shape`` field (unknown families: no)."""
    import dataclasses

    from scoregen.models import MODELS

    return family in MODELS and any(
        f.name == "shape" for f in dataclasses.fields(MODELS[family][0])
    )


# training summary fields that readers format: (kind, check)
_TRAINING_FIELDS = {
    "steps": (int, lambda v: v >= 0, "an integer >= 0"),
    "seed": (int, lambda v: True, "an integer"),
    "world_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "global_batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "final_loss": ((int, float), math.isfinite, "a finite number or null"),
    "wall_time_s": ((int, float), lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "objective": (str, lambda v: True, "a string"),
    "device": (str, lambda v: True, "a string"),
    "config": (dict, lambda v: True, "a JSON object"),
    "lr_segments": (list, lambda v: True, "a list"),
    "data": (dict, lambda v: True, "a JSON object"),
}


def _validate_training(training, where: str) -> dict[str, Any]:
    """The informational ``training`` entry: a JSON object whose known fields, when not
    null, have the types readers (``scoregen info``, ``ScoreModel.config``) format."""
    if training is None:
        return {}
    if not isinstance(training, dict):
        raise CheckpointError(f"{where}: training must be a JSON object")
    for name, (kind, check, what) in _TRAINING_FIELDS.items():
        value = training.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind) or not check(value):
            raise CheckpointError(f"{where}: training.{name} must be {what}, got {value!r}")
    return dict(training)


# ---------------------------------------------------------------------- the loaded model
@dataclass
class ScoreModel:
    """A score to sample from, with what is known about it: the one loaded-model type.

    ``score(x, σ)`` is the score of ``p_σ`` in model space; ``denoiser(x, σ)`` the matching
    posterior mean (for a trained checkpoint an ``nn.Module`` in eval mode, gradients off);
    ``metadata`` the validated record (``model``, ``data``, ``sigma``, ``training``);
    ``oracle`` the exact mixture of the data when the data is a mixture preset;
    ``log_prob(x, σ)`` the exact log-density of ``p_σ``, only for the exact builtins (MALA
    needs it). Samples live in model space; :meth:`to_data_space` maps them back.
    """

    name: str
    score: Any
    denoiser: Any
    metadata: dict[str, Any]
    oracle: Any = None
    log_prob: Any = None
    path: Path | None = None
    description: str = ""

    @property
    def exact(self) -> bool:
        """Whether the score is exact (a builtin oracle, with a log-density)."""
        return self.log_prob is not None

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.metadata.get("data") or {})

    @property
    def sigma(self) -> dict[str, Any]:
        return dict(self.metadata.get("sigma") or {})

    @property
    def config(self) -> dict[str, Any]:
        """The training configuration (empty for a checkpoint written outside ``train``)."""
        return dict((self.metadata.get("training") or {}).get("config") or {})

    @property
    def fixed_sigma(self) -> float | None:
        fixed = self.sigma.get("fixed")
        return None if fixed is None else float(fixed)

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """``(σ_min, σ_max)`` the score is trusted on; None for a fixed-σ model."""
        sigma = self.sigma
        if "min" in sigma and "max" in sigma:
            return float(sigma["min"]), float(sigma["max"])
        return None

    @property
    def sigma_data(self) -> float:
        """The data's standard deviation (EDM's σ_data) in model space."""
        return float(self.metadata.get("model", {}).get("sigma_data") or 1.0)

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of one example, or None when the record does not say."""
        shape = self.data.get("shape")
        return None if shape is None else tuple(int(s) for s in shape)

    @property
    def is_image(self) -> bool:
        return self.shape is not None and len(self.shape) == 3

    @property
    def device(self) -> torch.device:
        if isinstance(self.denoiser, torch.nn.Module):
            for tensor in self.denoiser.parameters():
                return tensor.device
        if self.oracle is not None:
            return self.oracle.device
        return torch.device("cpu")

    @property
    def data_covariance(self) -> torch.Tensor | None:
        """The training data's covariance ``[d, d]`` in model space, recorded for points of
        few coordinates (None otherwise)."""
        cov = (self.data.get("stats") or {}).get("cov")
        return None if cov is None else torch.tensor(cov, dtype=torch.float64)

    @property
    def data_stats(self) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """``(mean, std, note)`` of the training data in model space, one entry per channel
        (images) or coordinate (points), as recorded at training time. A checkpoint written
        before the statistics were recorded falls back to mean 0 and std σ_data, and ``note``
        says so (None otherwise)."""
        stats = self.data.get("stats")
        if stats is not None:
            mean = torch.tensor(stats["mean"], dtype=torch.float64)
            std = torch.tensor(stats["std"], dtype=torch.float64)
            return mean, std, None
        length = self.shape[0] if self.shape else 1
        note = (
            f"{self.name} records no data statistics (written by an older scoregen): the "
            f"start assumes mean 0 and std σ_data={self.sigma_data:.4g}"
        )
        return (
            torch.zeros(length, dtype=torch.float64),
            torch.full((length,), self.sigma_data, dtype=torch.float64),
            note,
        )

    def to_data_space(self, x: torch.Tensor, clip: bool | None = None) -> torch.Tensor:
        """Model space -> data space, ``x·scale + shift``; ``clip`` (default: when the data has
        a value range, e.g. pixels in [0, 1]) clamps to that range."""
        from scoregen.data import to_data_space

        data = self.data
        if clip is None:
            clip = data.get("value_range") is not None
        return to_data_space(x, data, clip=clip)

    def from_data_space(self, x: torch.Tensor) -> torch.Tensor:
        """Data space -> model space, ``(x − shift) / scale``."""
        from scoregen.data import from_data_space

        return from_data_space(x, self.data)


# A loaded checkpoint is a ScoreModel (the name scripts have imported since the first release).
Checkpoint = ScoreModel


def oracle_for(data_record: dict[str, Any]):
    """The exact mixture behind a data record, when its data is a mixture preset; else None."""
    from scoregen.gmm import PRESETS, preset

    name = data_record.get("name")
    if data_record.get("kind") == "mixture" and name in PRESETS:
        return preset(name)
    return None


_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_DTYPE_NAMES = {
    torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


def _check_tensors(header: dict[str, Any], expected: dict[str, torch.Tensor], family, where):
    """Compare the file's tensor names, shapes and dtypes (from its header) with the state
    dict the record's architecture has, before any weight is read."""
    found = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched, wrong_dtype = [], []
    for name, t in expected.items():
        if name not in found:
            continue
        shape = tuple(found[name].get("shape") or ())
        if shape != tuple(t.shape):
            mismatched.append(f"{name}: file {shape}, model {tuple(t.shape)}")
        dtype = found[name].get("dtype")
        want = _DTYPE_NAMES.get(t.dtype)
        if t.is_floating_point() and dtype not in _FLOAT_DTYPES:
            wrong_dtype.append(f"{name}: file {dtype}, model a float")
        elif not t.is_floating_point() and dtype != want:
            wrong_dtype.append(f"{name}: file {dtype}, model {want}")
    if missing or unexpected or mismatched or wrong_dtype:
        problems = []
        if missing:
            problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if mismatched:
            problems.append("shape mismatch " + "; ".join(mismatched[:5]))
        if wrong_dtype:
            problems.append("dtype mismatch " + "; ".join(wrong_dtype[:5]))
        raise CheckpointError(
            f"{where}: its weights do not fit the {family!r} architecture its record "
            f"describes: {', '.join(problems)}"
        )


def _build(record: dict[str, Any], where: str, device: str | torch.device = "cpu"):
    from scoregen.models import build_denoiser

    try:
        with torch.device(device):
            return build_denoiser(record["model"])
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{where}: cannot rebuild its model: {e}") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ScoreModel:
    """Rebuild the denoiser a checkpoint describes and load its weights onto ``device``.

    The record is validated field by field (:func:`validate_record`) and the architecture is
    first built on the ``meta`` device (no memory) to compare its tensor names, shapes and
    dtypes with the file's header; only then are the module and its weights materialised.
    Raises :class:`CheckpointError` (a ValueError) naming the file and the problem for a
    pickle, a truncated or corrupt file, a missing or invalid record field, an unknown model
    family or weights that do not fit the architecture; :class:`CheckpointNotFoundError`
    (also a FileNotFoundError) when there is no file. Never executes code from the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from scoregen._util import resolve_device
    from scoregen.score import tweedie_score

    path = Path(path)
    where = repr(str(path))
    header = _read_header(path)
    record = validate_record(_record_from_header(header, path), where)
    skeleton = _build(record, where, "meta")
    _check_tensors(header, skeleton.state_dict(), record["model"].get("family"), where)
    del skeleton
    denoiser = _build(record, where)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{where} is corrupt: safetensors could not read it ({e})") from None
    denoiser.load_state_dict(tensors, strict=True)
    denoiser = denoiser.to(resolve_device(device)).eval().requires_grad_(False)
    oracle = oracle_for(record["data"])
    if oracle is not None:
        oracle = oracle.to(device=next(denoiser.parameters()).device)
    return ScoreModel(
        name=str(path),
        score=tweedie_score(denoiser),
        denoiser=denoiser,
        metadata=record,
        oracle=oracle,
        path=path,
    )


# ---------------------------------------------------------------------- resume state
def save_resume_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write training-resume state (tensors, dicts, lists, numbers, strings only), atomically."""
    state = {"format": RESUME_FORMAT, "format_version": RESUME_FORMAT_VERSION, **state}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(payload))


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's long weights_only message that says what was refused."""
    for line in str(error).splitlines():
        if "WeightsUnpickler error:" in line or "Unsupported" in line:
            reason = line.split("WeightsUnpickler error:")[-1].strip()
            if reason:
                return reason
    return "it is not a torch.save file of tensors"


def load_resume_state(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a resume file with ``torch.load(weights_only=True)``: anything but tensors and
    plain containers is refused, so no code from the file runs."""
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{str(path)!r} holds objects other than tensors and plain containers, which "
            f"weights_only loading refuses (it would have to run code from the file; "
            f"{_unpickling_reason(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} is truncated or corrupt: {e}") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a scoregen resume file")
    version = state.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{str(path)!r} has an invalid resume format_version {version!r}")
    if version > RESUME_FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has resume format_version {state.get('format_version')}, newer than "
            f"this scoregen reads ({RESUME_FORMAT_VERSION})"
        )
    return state
