"""A small convolutional image classifier whose penultimate layer is the feature space of the
image-sample metrics (Fréchet / kernel distances, class coverage), with safe saving and loading.

Inputs are pixels in data space, ``[B, C, H, W]`` in [0, 1] (what ``scoregen.data``'s
``to_data_space`` gives back), never the model space of a denoiser.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoregen._io import atomic_write
from scoregen.models.layers import check_image_shape, check_widths

__all__ = [
    "CLASSIFIER_FORMAT",
    "BUILTIN_CLASSIFIERS",
    "ClassifierConfig",
    "ImageClassifier",
    "classifier_accuracy",
    "load_classifier",
    "save_classifier",
]

CLASSIFIER_FORMAT = "scoregen-classifier"
CLASSIFIER_FORMAT_VERSION = 1
_BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_data"
# name -> file in scoregen/builtin_data (rebuilt by experiments/train_classifier.py)
BUILTIN_CLASSIFIERS: dict[str, str] = {"digits": "digits-classifier.safetensors"}


@dataclass
class ClassifierConfig:
    """Constructor arguments of :class:`ImageClassifier` (stored in its file to rebuild it)."""

    shape: tuple[int, ...] = (1, 8, 8)  # one image (C, H, W)
    channels: tuple[int, ...] = (32, 64)  # width per level; each level halves H and W
    feature_dim: int = 64  # width of the penultimate (feature) layer
    n_classes: int = 10
    pool: int = 2  # the last level is average-pooled to pool × pool before the feature layer


class ImageClassifier(nn.Module):
    """``logits = head(features(pixels))``.

    Per level: two 3×3 convolutions with SiLU, then 2×2 max pooling (rounding up, so odd sizes
    work); the last map is average-pooled to ``pool × pool``, flattened and mapped to
    ``feature_dim`` features (SiLU), then linearly to ``n_classes`` logits. SiLU rather than
    ReLU keeps the features smooth, which the Gaussian fit of the Fréchet distance prefers.
    Pixels are centred (``2·pixel − 1``) inside, so callers pass [0, 1] pixels.

    :meth:`features` divides the penultimate activations by the buffer ``feature_scale``,
    set by :meth:`calibrate` after training so that the training images' features have
    mean square 1 per coordinate: the kernel distance's ``(xᵀy / d + 1)³`` then sees
    ``xᵀy / d`` of order 1 (the head sees the unscaled activations).
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        channels = check_image_shape(config.shape)[0]
        widths = check_widths(config.channels)
        for name in ("feature_dim", "n_classes", "pool"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < (2 if name == "n_classes" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.config = config
        self.record: dict[str, Any] = {}  # the JSON record of the file it was loaded from
        levels = []
        c = channels
        for width in widths:
            levels += [
                nn.Conv2d(c, width, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.SiLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c = width
        self.body = nn.Sequential(*levels, nn.AdaptiveAvgPool2d(config.pool), nn.Flatten())
        self.feature = nn.Linear(c * config.pool**2, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.n_classes)
        self.register_buffer("feature_scale", torch.ones(()))

    def _check(self, pixels: Tensor) -> Tensor:
        if not isinstance(pixels, Tensor):
            raise TypeError(f"pixels must be a tensor [B, C, H, W], got {type(pixels).__name__}")
        expected = tuple(self.config.shape)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"pixels must be [B, {', '.join(map(str, expected))}] in [0, 1], got "
                f"{tuple(pixels.shape)}"
            )
        return pixels.to(self.feature.weight.dtype)

    def _activations(self, pixels: Tensor) -> Tensor:
        return F.silu(self.feature(self.body(2.0 * self._check(pixels) - 1.0)))

    def features(self, pixels: Tensor) -> Tensor:
        """The penultimate activations over ``feature_scale``, ``[B, feature_dim]``, of pixels
        ``[B, C, H, W]`` in [0, 1]."""
        return self._activations(pixels) / self.feature_scale

    def forward(self, pixels: Tensor) -> Tensor:
        """Class logits ``[B, n_classes]``."""
        return self.head(self._activations(pixels))

    @torch.no_grad()
    def calibrate(self, pixels: Tensor, batch_size: int = 1024) -> float:
        """Set ``feature_scale`` to the root mean square of the activations on ``pixels``
        (the training images); returns it."""
        self.feature_scale.fill_(1.0)
        activations = torch.cat([self.features(c) for c in self._check(pixels).split(batch_size)])
        self.feature_scale.fill_(float(activations.double().square().mean().sqrt()))
        return float(self.feature_scale)

    @torch.no_grad()
    def embed(self, pixels: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
        """``(features [B, feature_dim], predicted labels [B])`` in batches, without gradients,
        on the classifier's device; returned on the CPU in float64 / int64."""
        device = self.feature.weight.device
        feats, labels = [], []
        for chunk in self._check(pixels).split(batch_size):
            activations = self._activations(chunk.to(device))
            feats.append((activations / self.feature_scale).double().cpu())
            labels.append(self.head(activations).argmax(1).cpu())
        return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def classifier_accuracy(classifier: ImageClassifier, pixels: Tensor, labels: Tensor) -> float:
    """The fraction of ``pixels`` whose predicted class is ``labels``."""
    _, predicted = classifier.embed(pixels)
    if predicted.shape != labels.shape:
        raise ValueError(f"labels must be [{predicted.shape[0]}], got {tuple(labels.shape)}")
    return float((predicted == labels.cpu()).double().mean())


# ---------------------------------------------------------------------- files
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scoregen")
    except PackageNotFoundError:
        return "unknown"


def save_classifier(path: str | Path, classifier: ImageClassifier, **record: Any) -> Path:
    """Write ``classifier`` as one safetensors file whose metadata holds the JSON record
    ``{"format", "format_version", "scoregen_version", "architecture": ClassifierConfig fields,
    **record}`` (``record``: data, held-out accuracy, training command, … JSON-able).
    Written atomically."""
    from safetensors.torch import save as save_safetensors

    if not isinstance(classifier, ImageClassifier):
        raise TypeError(f"classifier must be an ImageClassifier, got {type(classifier).__name__}")
    header = {
        "format": CLASSIFIER_FORMAT,
        "format_version": CLASSIFIER_FORMAT_VERSION,
        "scoregen_version": _version(),
        "architecture": dataclasses.asdict(classifier.config),
        **record,
    }
    tensors = {
        name: t.detach().to("cpu").contiguous().clone()
        for name, t in classifier.state_dict().items()
    }
    metadata = {"format": "pt", "scoregen": json.dumps(header, allow_nan=False)}
    payload = save_safetensors(tensors, metadata=metadata)
    return atomic_write(path, lambda f: f.write(payload))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    name = text.removeprefix("builtin:").removesuffix("-classifier")
    if name in BUILTIN_CLASSIFIERS and (text.startswith("builtin:") or text == name):
        return _BUILTIN_DIR / BUILTIN_CLASSIFIERS[name]
    if text.startswith("builtin:"):
        choices = ", ".join(f"builtin:{n}-classifier" for n in BUILTIN_CLASSIFIERS)
        raise ValueError(f"unknown builtin classifier {text!r}; choose one of {choices}")
    return Path(text).expanduser()


def load_classifier(
    name_or_path: str | Path = "digits", device: str | torch.device = "cpu"
) -> ImageClassifier:
    """A trained :class:`ImageClassifier` in eval mode, gradients off, on ``device``.

    ``name_or_path``: a shipped classifier by name (``"digits"`` or
    ``"builtin:digits-classifier"``) or a file written by :func:`save_classifier`. Its JSON
    record is ``classifier.record``. Loading reads safetensors only: nothing in the file runs.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = _resolve(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        record = json.loads(metadata["scoregen"])
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a scoregen classifier file (safetensors with a "
            f"'scoregen' record): {err}"
        ) from None
    found = record.get("format") if isinstance(record, dict) else None
    if found != CLASSIFIER_FORMAT:
        raise ValueError(f"{str(path)!r} holds format {found!r}, not {CLASSIFIER_FORMAT!r}")
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
    architecture = dict(record.get("architecture") or {})
    unknown = sorted(set(architecture) - fields)
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown architecture fields {unknown}")
    for name in ("shape", "channels"):
        if name in architecture:
            architecture[name] = tuple(architecture[name])
    classifier = ImageClassifier(ClassifierConfig(**architecture))
    try:
        classifier.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r}: weights do not fit its architecture: {err}") from None
    classifier.record = record
    classifier.requires_grad_(False)
    return classifier.eval().to(device)
