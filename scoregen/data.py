"""Datasets, all offline: toys (with their exact oracle where one exists) and image sets.

Conventions. Toys live in their own coordinates (``normalization`` is the identity). Image
sets hold pixels in [0, 1] ("data space") and give the model ``x = (pixel - shift) / scale``;
by default ``model_range=(-1, 1)``, i.e. ``scale = shift = 0.5`` (EDM's ``sigma_data = 0.5``
fits this range). ``Dataset.record()`` is what a checkpoint stores so that a sampler can map
its output back to pixels with :func:`to_data_space` (:func:`from_data_space` is the way in). Heavy imports (scikit-learn,
scikit-image, torchvision, PIL) happen inside the loaders.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from scoregen._util import (
    available_memory,
    check_positive_float,
    check_positive_int,
    format_bytes,
    is_tensor,
    jsonable,
)
from scoregen.gmm import PRESETS, GaussianMixture, preset

__all__ = [
    "Dataset",
    "DATASETS",
    "as_dataset",
    "dataset_from_array",
    "fingerprint",
    "dataset_options",
    "load_dataset",
    "mixture_dataset",
    "two_moons",
    "swiss_roll",
    "checkerboard",
    "rings",
    "digits",
    "image_patches",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "image_folder",
    "noise2noise_pairs",
    "split_indices",
    "to_data_space",
    "from_data_space",
    "dataset_stats",
    "PHOTOS_GRAY",
    "PHOTOS_COLOR",
]


@dataclass
class Dataset:
    """Training data in model space, with what is needed to map samples back.

    Either ``train`` holds a finite set ``[N, *shape]`` (minibatches are drawn from it with
    replacement, from the caller's generator), or ``sampler(n, generator)`` draws fresh
    examples without end (the toys), or ``pairs`` holds ``[N, 2, *shape]`` independent noisy
    observations of the same images at level ``info["pair_sigma"]`` and no clean data
    (Noise2Noise training). ``normalization`` maps model space back to data
    space, ``data = x * scale + shift``; it is stored in checkpoints. ``value_range`` is the
    range of the data in data space (``(0, 1)`` for images; None for toys), used to clip
    samples mapped back. ``oracle`` is the exact mixture for the mixture toys.
    ``train_labels`` / ``test_labels`` are the class labels ``[N]`` (int64) of labelled image
    sets (digits, MNIST, Fashion-MNIST), aligned with ``train`` / ``test``; None otherwise.
    """

    name: str
    shape: tuple[int, ...]
    train: Tensor | None = None
    test: Tensor | None = None
    sampler: Callable[[int, torch.Generator | None], Tensor] | None = None
    pairs: Tensor | None = None
    normalization: dict[str, Any] = field(default_factory=lambda: {"scale": 1.0, "shift": 0.0})
    oracle: GaussianMixture | None = None
    info: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None

    def __post_init__(self):
        sources = sum(s is not None for s in (self.train, self.sampler, self.pairs))
        if sources != 1:
            raise ValueError(
                "a Dataset needs exactly one of train (a tensor), sampler (a function) "
                "or pairs (a tensor of noisy pairs)"
            )
        if self.train is not None and tuple(self.train.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"train has examples of shape {tuple(self.train.shape[1:])}, expected {self.shape}"
            )
        if self.pairs is not None and tuple(self.pairs.shape[1:]) != (2, *self.shape):
            raise ValueError(
                f"pairs must have shape [N, 2, *{self.shape}], got {tuple(self.pairs.shape)}"
            )
        for split in ("train", "test"):
            labels, images = getattr(self, f"{split}_labels"), getattr(self, split)
            if labels is not None and (images is None or tuple(labels.shape) != (images.shape[0],)):
                raise ValueError(
                    f"{split}_labels must be one label per {split} example, got shape "
                    f"{tuple(labels.shape)} for {split} "
                    f"{None if images is None else tuple(images.shape)}"
                )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """A batch ``[n, *shape]`` of training examples (float32)."""
        if self.sampler is not None:
            return self.sampler(n, generator).float()
        if self.train is None:
            raise ValueError(f"dataset {self.name!r} holds only noisy pairs; use sample_pairs()")
        index = torch.randint(0, self.train.shape[0], (n,), generator=generator)
        return self.train[index]

    def sample_pairs(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` Noise2Noise pairs ``(noisy input, independent noisy target)``."""
        if self.pairs is None:
            raise ValueError(f"dataset {self.name!r} has no noisy pairs")
        index = torch.randint(0, self.pairs.shape[0], (n,), generator=generator)
        batch = self.pairs[index]
        return batch[:, 0], batch[:, 1]

    def to_data_space(self, x: Tensor, clip: bool = False) -> Tensor:
        """Undo the normalisation: model space -> data (pixel) space, clipped if asked."""
        return to_data_space(x, self.record(), clip=clip)

    def from_data_space(self, x: Tensor) -> Tensor:
        """Apply the normalisation: data (pixel) space -> model space."""
        return from_data_space(x, self.record())

    def record(self) -> dict[str, Any]:
        """What a checkpoint stores about its data (JSON-able): enough to map samples back."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "normalization": dict(self.normalization),
            "value_range": None if self.value_range is None else list(self.value_range),
            "channels": self.shape[0] if len(self.shape) == 3 else None,
            **self.info,
        }


def to_data_space(x: Tensor, record: dict[str, Any], clip: bool = False) -> Tensor:
    """Model space -> data space from a data record: ``x * scale + shift``.

    With ``clip=True`` the result is clamped to ``record["value_range"]`` (when it has one):
    samples of an image model are pixels in [0, 1] after this.
    """
    norm = record.get("normalization") or {}
    out = x * norm.get("scale", 1.0) + norm.get("shift", 0.0)
    value_range = record.get("value_range")
    if clip and value_range is not None:
        out = out.clamp(value_range[0], value_range[1])
    return out


def from_data_space(x: Tensor, record: dict[str, Any]) -> Tensor:
    """Data space -> model space from a data record: ``(x - shift) / scale``.

    The inverse of :func:`to_data_space` (without clipping): use it to hand a model data of
    your own in the units it was trained on, e.g. pixels in [0, 1] to a checkpoint whose
    record (``load_checkpoint(path).data``) says ``scale = shift = 0.5``.
    """
    norm = record.get("normalization") or {}
    return (x - norm.get("shift", 0.0)) / norm.get("scale", 1.0)


# ----------------------------------------------------------------------------- identity
# A data set drawn by a function is fingerprinted by this many draws from a fixed seed.
FINGERPRINT_DRAWS = 1024
FINGERPRINT_SEED = 20240607


def fingerprint(data: Dataset) -> str:
    """A SHA-256 of what ``data`` trains on: the shape, the normalisation and the training
    tensor's bytes, dtype and shape (``pairs`` for pair-only data), or, for data drawn by a
    function (the toys), :data:`FINGERPRINT_DRAWS` draws from a generator seeded with
    :data:`FINGERPRINT_SEED`. Two data sets with the same fingerprint give a training run the
    same batches; a resumed run checks it. The name and the test split are not part of it."""
    digest = hashlib.sha256()
    header = {"shape": list(data.shape), "normalization": jsonable(data.normalization)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    if data.train is not None:
        _hash_tensor(digest, "train", data.train)
    elif data.pairs is not None:
        _hash_tensor(digest, "pairs", data.pairs)
    else:
        draws = data.sampler(FINGERPRINT_DRAWS, torch.Generator().manual_seed(FINGERPRINT_SEED))
        _hash_tensor(digest, "draws", draws)
    return digest.hexdigest()


def _hash_tensor(digest, name: str, tensor: Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)


def dataset_from_array(values, name: str = "array") -> Dataset:
    """The examples a user holds (a torch tensor or a numpy array) as a :class:`Dataset`.

    ``[N, d]`` holds points, ``[N, C, H, W]`` images. Floating-point values are taken as they
    are (the identity normalisation, no value range: the model sees exactly these numbers and
    samples come back in the same units). ``uint8`` images are 8-bit pixels: ``pixel / 255``
    in [0, 1], mapped to the model's [−1, 1] as the image data sets are (``scale = shift =
    0.5``, value range (0, 1), so samples map back to clipped pixels). The values are copied
    to a float32 CPU tensor; non-finite values, other shapes and other dtypes are refused.
    """
    import numpy as np

    if isinstance(values, np.ndarray):
        if values.dtype == object or not (
            np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_
        ):
            raise TypeError(f"data: a numpy array of numbers, got dtype {values.dtype}")
        values = torch.from_numpy(np.ascontiguousarray(values))
    elif not is_tensor(values):
        raise TypeError(
            f"data must be a scoregen.data.Dataset, a torch.Tensor or a numpy array, got "
            f"{type(values).__name__}"
        )
    shape = tuple(values.shape)
    if values.ndim not in (2, 4) or shape[0] < 1 or 0 in shape:
        raise ValueError(
            f"data: an array of points [N, d] or of images [N, C, H, W] with N >= 1, got shape "
            f"{list(shape)}" + (" (add the channel axis: x[:, None])" if values.ndim == 3 else "")
        )
    values = values.detach().to("cpu")
    if values.dtype == torch.uint8 and values.ndim == 4:
        return _image_dataset(name, values.float() / 255.0, None, (-1.0, 1.0), {"source": "python"})
    if not values.is_floating_point() or values.is_complex():
        raise TypeError(
            f"data: floating-point values (or uint8 pixels for images), got {values.dtype}"
        )
    values = values.to(torch.float32).contiguous()
    if not torch.isfinite(values).all():
        raise ValueError("data: every value must be finite; the array holds NaN or inf")
    kind = "points" if values.ndim == 2 else "image"
    return Dataset(
        name=name, shape=shape[1:], train=values, info={"kind": kind, "source": "python"}
    )


def as_dataset(data) -> Dataset:
    """``data`` itself when it is a :class:`Dataset`, else :func:`dataset_from_array` of it."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        raise TypeError(
            f"data={data!r}: a data set's name goes in TrainConfig(data=...); the data argument "
            "takes a scoregen.data.Dataset, a torch.Tensor or a numpy array"
        )
    name = "tensor" if is_tensor(data) else "array"
    return dataset_from_array(data, name=name)


def _check_fits(name: str, value, n_bytes: float, most: int) -> None:
    """A loader option whose data would not fit in memory: a ValueError saying what fits."""
    available = available_memory()
    if n_bytes > 0.5 * available:
        raise ValueError(
            f"{name}={value} needs about {format_bytes(n_bytes)} of memory; about "
            f"{format_bytes(available)} is available: use at most {max(most, 0):,}"
        )


# Points of up to this many coordinates also record their full covariance (d² numbers).
STATS_FULL_COVARIANCE_MAX_DIM = 64


def dataset_stats(data: Dataset, n: int = 4096, seed: int = 0) -> dict[str, Any]:
    """The mean and standard deviation of ``data`` in model space, one entry per channel
    (images ``[C, H, W]``) or per coordinate (points ``[d]``), from ``n`` draws of its own
    generator (the caller's random streams are untouched); points of up to
    :data:`STATS_FULL_COVARIANCE_MAX_DIM` coordinates add their covariance matrix ``cov``.
    Checkpoints store them so that samplers can start where the data is. For data made only
    of noisy pairs the known pair noise is removed from the variance."""
    generator = torch.Generator().manual_seed(seed + 7919)
    pair_sigma = 0.0
    if data.sampler is None and data.train is None:
        draws, _ = data.sample_pairs(n, generator)
        pair_sigma = float(data.info.get("pair_sigma", 0.0))
    else:
        draws = data.sample(n, generator)
    draws = draws.double()
    per_entry = draws.transpose(0, 1).reshape(draws.shape[1], -1)
    variance = (per_entry.var(dim=1) - pair_sigma**2).clamp_min(1e-12)
    stats: dict[str, Any] = {
        "mean": per_entry.mean(dim=1).tolist(),
        "std": variance.sqrt().tolist(),
    }
    if draws.ndim == 2 and draws.shape[1] <= STATS_FULL_COVARIANCE_MAX_DIM:
        cov = draws.T.cov() - pair_sigma**2 * torch.eye(draws.shape[1], dtype=draws.dtype)
        stats["cov"] = cov.tolist()
    return stats


def split_indices(n: int, n_test: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Disjoint ``(train, test)`` index sets of ``range(n)``, a seeded random permutation cut."""
    n = check_positive_int("n", n, minimum=2)
    if not isinstance(n_test, int) or not 0 < n_test < n:
        raise ValueError(
            f"n_test must be an integer in [1, {n - 1}] for {n} examples, got {n_test!r}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:].sort().values, order[:n_test].sort().values


# ----------------------------------------------------------------------------- toys


def mixture_dataset(name: str, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """A mixture preset (:data:`scoregen.gmm.PRESETS`) as an endless toy with its oracle."""
    if name not in PRESETS:
        raise ValueError(f"unknown mixture {name!r}; choose one of {sorted(PRESETS)}")
    mix = preset(name)
    n_test = check_positive_int("n_test", n_test)
    per_point = 8 * (4 * mix.dim + mix.n_components + 2)  # float64 draws and their components
    _check_fits("n_test", n_test, n_test * per_point, int(0.5 * available_memory() / per_point))

    def sampler(n: int, generator: torch.Generator | None = None) -> Tensor:
        return mix.sample(n, generator=generator)

    test = mix.sample(n_test, generator=torch.Generator().manual_seed(seed + 1_000_003)).float()
    return Dataset(
        name=name,
        shape=(mix.dim,),
        sampler=sampler,
        test=test,
        oracle=mix,
        info={"kind": "mixture"},
    )


def _toy(name: str, draw: Callable, n_test: int, seed: int, **params: Any) -> Dataset:
    """An endless 2-D toy: ``draw(n, generator, **params)``; the test set comes from ``seed``."""
    n_test = check_positive_int("n_test", n_test)
    per_point = 64  # a 2-D float32 point and the draws it is made of
    _check_fits("n_test", n_test, n_test * per_point, int(0.5 * available_memory() / per_point))

    def sampler(n: int, generator: torch.Generator | None = None) -> Tensor:
        return draw(n, generator, **params)

    test = sampler(n_test, torch.Generator().manual_seed(seed))
    return Dataset(
        name=name, shape=(2,), sampler=sampler, test=test, info={"kind": "toy", **params}
    )


def _moons(n: int, generator, noise: float) -> Tensor:
    # upper arc (cos θ, sin θ), lower arc (1 - cos θ, 1/2 - sin θ), θ ~ U[0, π], centred
    # on (1/2, 1/4) and doubled, so the points fill about [-3, 3] × [-1.5, 1.5]
    theta = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, theta.cos(), 1 - theta.cos()) - 0.5
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin()) - 0.25
    points = 2 * torch.stack([x, y], dim=1)
    return points + noise * torch.randn(n, 2, generator=generator)


def _swiss_roll(n: int, generator, noise: float) -> Tensor:
    # t ~ U[1.5π, 4.5π], point t (cos t, sin t) / 5 (so |x| <= 2.83): a spiral of 1.5 turns
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    points = torch.stack([t * t.cos(), t * t.sin()], dim=1) / 5
    return points + noise * torch.randn(n, 2, generator=generator)


def _checkerboard(n: int, generator, cells: int) -> Tensor:
    # uniform on the dark cells (i + j even) of a cells × cells board of unit squares on
    # [-cells/2, cells/2]²: a dark cell uniformly at random, then a uniform point inside it
    grid = torch.cartesian_prod(torch.arange(cells), torch.arange(cells))
    dark = grid[grid.sum(dim=1) % 2 == 0]
    corner = dark[torch.randint(0, dark.shape[0], (n,), generator=generator)].float()
    return corner - cells / 2 + torch.rand(n, 2, generator=generator)


def _rings(n: int, generator, n_rings: int, noise: float) -> Tensor:
    # radii 1, 2, ..., n_rings; a ring is picked with probability ∝ its radius (uniform
    # along the union of circles), then a uniform angle; Gaussian noise on the radius
    radii = torch.arange(1, n_rings + 1, dtype=torch.float32)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=generator)
    radius = radii[ring] + noise * torch.randn(n, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


def two_moons(noise: float = 0.1, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """Two interleaved half circles (about [-3, 3] × [-1.5, 1.5]), isotropic noise ``noise``."""
    noise = check_positive_float("noise", noise, allow_zero=True)
    return _toy("moons", _moons, n_test, seed, noise=noise)


def swiss_roll(noise: float = 0.1, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """The 2-D Swiss roll ``t (cos t, sin t) / 5``, ``t ~ U[1.5π, 4.5π]``, plus noise."""
    noise = check_positive_float("noise", noise, allow_zero=True)
    return _toy("swiss_roll", _swiss_roll, n_test, seed, noise=noise)


def checkerboard(cells: int = 4, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """Uniform on the dark squares (``i + j`` even) of a ``cells × cells`` board of unit squares."""
    cells = check_positive_int("cells", cells, minimum=2)
    # every draw enumerates the cells² squares of the board (int64 pairs)
    _check_fits("cells", cells, 48 * cells**2, math.isqrt(int(0.5 * available_memory() / 48)))
    return _toy("checkerboard", _checkerboard, n_test, seed, cells=cells)


def rings(n_rings: int = 3, noise: float = 0.05, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """Concentric circles of radii 1..n_rings, uniform along their length, radial noise."""
    n_rings = check_positive_int("n_rings", n_rings)
    _check_fits("n_rings", n_rings, 64 * n_rings, int(0.5 * available_memory() / 64))
    noise = check_positive_float("noise", noise, allow_zero=True)
    return _toy("rings", _rings, n_test, seed, n_rings=n_rings, noise=noise)


# ----------------------------------------------------------------------------- images


def _check_model_range(model_range: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in model_range)
    except (TypeError, ValueError):
        raise ValueError(f"model_range must be a pair (low, high), got {model_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"model_range must be finite with low < high, got {model_range!r}")
    return low, high


def _resize(images: Tensor, size: int | None) -> Tensor:
    """``[N, C, H, W]`` in [0, 1] -> ``[N, C, size, size]`` (bilinear, antialiased when shrinking)."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    size = check_positive_int("size", size)
    per_pixel = 12 * math.prod(images.shape[:2])  # the result and the interpolation's buffers
    most = math.isqrt(int(0.5 * available_memory() / per_pixel))
    _check_fits("size", size, per_pixel * size**2, most)
    shrink = size < max(images.shape[-2:])
    out = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )
    return out.clamp(0, 1)


def _image_dataset(
    name: str,
    train: Tensor,
    test: Tensor | None,
    model_range: Sequence[float],
    info: dict[str, Any],
    labels: tuple[Tensor | None, Tensor | None] = (None, None),
) -> Dataset:
    """Pixels in [0, 1] -> model space ``(pixel - shift) / scale`` with ``model_range`` ends;
    ``labels`` are the (train, test) class labels, if any."""
    low, high = _check_model_range(model_range)
    # pixel = x * scale + shift maps [low, high] onto [0, 1]
    scale, shift = 1.0 / (high - low), -low / (high - low)
    to_model = lambda pixels: ((pixels.float() - shift) / scale).contiguous()  # noqa: E731
    return Dataset(
        name=name,
        shape=tuple(train.shape[1:]),
        train=to_model(train),
        test=None if test is None else to_model(test),
        normalization={"scale": scale, "shift": shift},
        value_range=(0.0, 1.0),
        info={"kind": "image", **info},
        train_labels=None if labels[0] is None else labels[0].long(),
        test_labels=None if labels[1] is None else labels[1].long(),
    )


def _subset(images: Tensor, n: int | None, seed: int, what: str) -> Tensor:
    """``n`` images chosen at random (seeded) without replacement; all when ``n`` is None."""
    return images[_subset_index(images.shape[0], n, seed, what)]


def _subset_index(total: int, n: int | None, seed: int, what: str) -> Tensor:
    """The sorted indices :func:`_subset` keeps out of ``total`` examples."""
    if n is None or n == total:
        return torch.arange(total)
    if not isinstance(n, int) or not 0 < n <= total:
        raise ValueError(f"{what} must be an integer in [1, {total}], got {n!r}")
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    return keep.sort().values


def digits(
    size: int = 8, n_test: int = 297, seed: int = 0, model_range: Sequence[float] = (-1.0, 1.0)
) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, ``[N, 1, size, size]``.

    The 8×8 images hold values 0..16; pixels are ``value / 16`` in [0, 1], resized to
    ``size`` (bilinear) if it is not 8. The test split is ``n_test`` images chosen by a
    seeded permutation (:func:`split_indices`). The labels (0..9) are kept in
    ``train_labels`` / ``test_labels``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 16.0
    targets = torch.from_numpy(bunch.target).long()
    images = _resize(images, size)
    train_index, test_index = split_indices(images.shape[0], n_test, seed)
    return _image_dataset(
        "digits",
        images[train_index],
        images[test_index],
        model_range,
        {"source": "sklearn.datasets.load_digits", "size": images.shape[-1], "seed": seed},
        labels=(targets[train_index], targets[test_index]),
    )


# photographs shipped inside scikit-image (no download); the last n_test_photos are the test set
PHOTOS_GRAY = ("camera", "moon", "coins", "astronaut", "coffee", "rocket", "chelsea")
PHOTOS_COLOR = ("astronaut", "coffee", "rocket", "chelsea")


def _photo(name: str, grayscale: bool) -> Tensor:
    """One scikit-image photograph as ``[C, H, W]`` in [0, 1] (luminance when ``grayscale``)."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"photos: skimage.data has no image {name!r}")
    image = img_as_float(loader())
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha
    if grayscale:
        image = rgb2gray(image) if image.ndim == 3 else image
        return torch.from_numpy(image).float()[None]
    if image.ndim != 3:
        raise ValueError(f"photos: {name!r} is a grayscale photograph; use grayscale=True")
    return torch.from_numpy(image).float().permute(2, 0, 1)


def image_patches(
    patch_size: int = 8,
    grayscale: bool = True,
    stride: int | None = None,
    photos: Sequence[str] | None = None,
    n_test_photos: int = 1,
    max_per_photo: int | None = None,
    seed: int = 0,
    model_range: Sequence[float] = (-1.0, 1.0),
) -> Dataset:
    """Natural-image patches ``[N, C, p, p]`` cut from scikit-image's photographs.

    Each photograph (``photos``, default :data:`PHOTOS_GRAY` or :data:`PHOTOS_COLOR`) is cut
    on a regular grid with step ``stride`` (default ``patch_size``: non-overlapping);
    ``max_per_photo`` keeps a seeded random subset per photograph. The last
    ``n_test_photos`` photographs form the test set, so no test patch shares a photograph
    with a training patch.
    """
    patch_size = check_positive_int("patch_size", patch_size)
    stride = patch_size if stride is None else check_positive_int("stride", stride)
    photos = tuple(photos) if photos is not None else (PHOTOS_GRAY if grayscale else PHOTOS_COLOR)
    if not isinstance(n_test_photos, int) or not 0 < n_test_photos < len(photos):
        raise ValueError(
            f"n_test_photos must be an integer in [1, {len(photos) - 1}] for {len(photos)} "
            f"photos, got {n_test_photos!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    cut = []
    for name in photos:
        image = _photo(name, grayscale)
        if min(image.shape[-2:]) < patch_size:
            raise ValueError(f"patch_size={patch_size} is larger than photo {name!r}")
        # [C, H, W] -> [C, rows, cols, p, p] -> [rows * cols, C, p, p]
        grid = image.unfold(1, patch_size, stride).unfold(2, patch_size, stride)
        patches = grid.permute(1, 2, 0, 3, 4).reshape(-1, image.shape[0], patch_size, patch_size)
        if max_per_photo is not None and max_per_photo < patches.shape[0]:
            keep = torch.randperm(patches.shape[0], generator=generator)[:max_per_photo]
            patches = patches[keep.sort().values]
        cut.append(patches)
    n_train = len(photos) - n_test_photos
    return _image_dataset(
        "patches",
        torch.cat(cut[:n_train]),
        torch.cat(cut[n_train:]),
        model_range,
        {
            "source": "skimage.data",
            "patch_size": patch_size,
            "stride": stride,
            "grayscale": grayscale,
            "train_photos": list(photos[:n_train]),
            "test_photos": list(photos[n_train:]),
            "seed": seed,
        },
    )


def _data_root(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise ValueError(
            f"{name} needs data_dir (CLI: --data-dir): the folder holding its files, or where "
            "to put them with download=True (--download)"
        )
    return Path(data_dir).expanduser()


def _gunzip(archive: Path, target: Path) -> None:
    """Decompress ``archive`` to ``target`` through a temporary file (nothing half-written)."""
    import gzip
    import os
    import shutil
    import tempfile

    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with gzip.open(archive, "rb") as source, os.fdopen(handle, "wb") as sink:
            shutil.copyfileobj(source, sink)
        os.replace(temporary, target)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise ValueError(f"cannot extract {str(archive)!r}: {err}") from err


def _idx_dataset(
    name: str,
    folder: str,
    data_dir,
    download: bool,
    size: int | None,
    n_train: int | None,
    n_test: int | None,
    seed: int,
    model_range,
) -> Dataset:
    """MNIST-style idx files read by torchvision from ``data_dir/folder/raw``."""
    import torchvision.datasets as tv_datasets

    root = _data_root(data_dir, name)
    raw = root / folder / "raw"
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    files += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    # torchvision reads the decompressed files; its download step extracts the .gz archives.
    # Do that extraction here when only the archives are present.
    for file in files:
        archive = raw / f"{file}.gz"
        if not (raw / file).exists() and archive.exists():
            _gunzip(archive, raw / file)
    dataset_cls = getattr(tv_datasets, folder)
    try:
        train_set = dataset_cls(str(root), train=True, download=download)
        test_set = dataset_cls(str(root), train=False, download=False)
        train, train_labels = train_set.data, train_set.targets
        test, test_labels = test_set.data, test_set.targets
    except (RuntimeError, OSError) as err:
        if download:
            raise ValueError(f"{name}: downloading into {str(root)!r} failed: {err}") from err
        raise ValueError(
            f"{name}: files not found in {str(raw)!r} (expected {', '.join(files)}, "
            f"optionally .gz). Copy them there, or pass download=True (CLI: --download) "
            "to fetch them."
        ) from err
    except (AssertionError, TypeError, ValueError) as err:  # torchvision's idx parser checks
        raise ValueError(
            f"{name}: the files in {str(raw)!r} are not valid idx files: {err}"
        ) from err
    to_unit = lambda images: _resize(images[:, None].float() / 255.0, size)  # noqa: E731
    train_keep = _subset_index(train.shape[0], n_train, seed, "n_train")
    test_keep = _subset_index(test.shape[0], n_test, seed + 1, "n_test")
    train, test = to_unit(train[train_keep]), to_unit(test[test_keep])
    return _image_dataset(
        name,
        train,
        test,
        model_range,
        {"source": f"torchvision.datasets.{folder}", "size": train.shape[-1], "seed": seed},
        labels=(torch.as_tensor(train_labels)[train_keep], torch.as_tensor(test_labels)[test_keep]),
    )


def mnist(
    data_dir: str | Path | None = None,
    download: bool = False,
    size: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    model_range: Sequence[float] = (-1.0, 1.0),
) -> Dataset:
    """MNIST ``[N, 1, 28, 28]`` (or ``size``) from ``data_dir/MNIST/raw`` (torchvision layout).

    Nothing is downloaded unless ``download=True``. ``n_train`` / ``n_test`` keep seeded
    random subsets of the 60,000 / 10,000 images.
    """
    return _idx_dataset(
        "mnist", "MNIST", data_dir, download, size, n_train, n_test, seed, model_range
    )


def fashion_mnist(
    data_dir: str | Path | None = None,
    download: bool = False,
    size: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    model_range: Sequence[float] = (-1.0, 1.0),
) -> Dataset:
    """Fashion-MNIST from ``data_dir/FashionMNIST/raw`` (torchvision layout); as :func:`mnist`."""
    return _idx_dataset(
        "fashion_mnist",
        "FashionMNIST",
        data_dir,
        download,
        size,
        n_train,
        n_test,
        seed,
        model_range,
    )


# The only globals a CIFAR-10 batch file may name: numpy's array reconstruction helpers and
# the codec Python 3 uses to pickle bytes. Anything else is refused before it runs.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> Tensor:
    """One CIFAR-10 python batch file -> ``[N, 3, 32, 32]`` uint8."""
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"cifar10: cannot read batch file {str(path)!r}: {err}") from err
    data = entry.get("data", entry.get(b"data")) if isinstance(entry, dict) else None
    if data is None:
        raise ValueError(f"cifar10: batch file {str(path)!r} has no 'data' entry")
    data = torch.as_tensor(data)
    if data.dtype != torch.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"cifar10: 'data' in {str(path)!r} must be uint8 [N, 3072], got "
            f"{data.dtype} {tuple(data.shape)}"
        )
    return data.reshape(-1, 3, 32, 32)  # rows hold the R plane, then G, then B


def cifar10(
    data_dir: str | Path | None = None,
    download: bool = False,
    grayscale: bool = False,
    size: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    model_range: Sequence[float] = (-1.0, 1.0),
) -> Dataset:
    """CIFAR-10 ``[N, 3, 32, 32]`` from ``data_dir/cifar-10-batches-py`` (torchvision layout).

    The python-version batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``) are
    pickles. torchvision's own ``CIFAR10`` class reads them with plain ``pickle.load`` (which
    can run code hidden in a crafted file) and insists on the official checksums; this
    loader reads the same files with an unpickler that admits only numpy arrays. With
    ``download=True`` torchvision fetches and verifies the archive first. ``grayscale``
    takes the luminance ``0.299 R + 0.587 G + 0.114 B``.
    """
    root = _data_root(data_dir, "cifar10")
    folder = root / "cifar-10-batches-py"
    if download:
        import torchvision.datasets as tv_datasets

        try:
            tv_datasets.CIFAR10(str(root), train=True, download=True)
        except (RuntimeError, OSError) as err:
            raise ValueError(f"cifar10: downloading into {str(root)!r} failed: {err}") from err
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [f for f in (*train_files, "test_batch") if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"cifar10: files not found in {str(folder)!r}: {', '.join(missing)}. Copy the "
            "python-version batches there, or pass download=True (CLI: --download) to fetch them."
        )
    train = torch.cat([_read_cifar_batch(folder / f) for f in train_files])
    test = _read_cifar_batch(folder / "test_batch")

    def to_unit(images: Tensor) -> Tensor:
        images = images.float() / 255.0
        if grayscale:
            weights = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        return _resize(images, size)

    train = to_unit(_subset(train, n_train, seed, "n_train"))
    test = to_unit(_subset(test, n_test, seed + 1, "n_test"))
    return _image_dataset(
        "cifar10",
        train,
        test,
        model_range,
        {
            "source": "cifar-10-batches-py",
            "size": train.shape[-1],
            "grayscale": grayscale,
            "seed": seed,
        },
    )


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_folder(
    data_dir: str | Path | None = None,
    size: int = 32,
    grayscale: bool = False,
    n_test: int | None = None,
    seed: int = 0,
    model_range: Sequence[float] = (-1.0, 1.0),
) -> Dataset:
    """Every image under ``data_dir`` (recursively, sorted by path) as ``[N, C, size, size]``.

    Each image is converted to grayscale (``L``) or RGB, centre-cropped to a square and
    resized to ``size`` (bicubic). ``n_test`` images (default: a tenth, at least one) chosen
    by a seeded permutation form the test set.
    """
    from PIL import Image, UnidentifiedImageError

    root = _data_root(data_dir, "image_folder")
    size = check_positive_int("size", size)
    if not root.is_dir():
        raise ValueError(f"image_folder: data_dir {str(root)!r} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if len(paths) < 2:
        raise ValueError(
            f"image_folder: need at least 2 images ({', '.join(IMAGE_EXTENSIONS)}) under "
            f"{str(root)!r}, found {len(paths)}"
        )
    per_pixel = 12 * 3 * len(paths)  # float32 RGB, the stack and its copies
    most = math.isqrt(int(0.5 * available_memory() / per_pixel))
    _check_fits("size", size, per_pixel * size**2, most)
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if grayscale else "RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image_folder: cannot read image {str(path)!r}: {err}") from err
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        images.append(pixels.reshape(size, size, -1).permute(2, 0, 1))
    images = torch.stack(images).float() / 255.0
    if n_test is None:
        n_test = max(1, len(paths) // 10)
    train_index, test_index = split_indices(len(paths), n_test, seed)
    return _image_dataset(
        "image_folder",
        images[train_index],
        images[test_index],
        model_range,
        {
            "source": str(root),
            "size": size,
            "grayscale": grayscale,
            "n_images": len(paths),
            "seed": seed,
        },
    )


def noise2noise_pairs(dataset: Dataset, sigma: float, seed: int = 0) -> Dataset:
    """Two independent noisy observations ``x + σ z₁``, ``x + σ z₂`` of every training image.

    For Noise2Noise training without clean targets: ``E[x + σ z₂ | x + σ z₁]`` is the same
    posterior mean as with the clean target, so the MSE minimiser is unchanged. ``σ`` is in
    model space. The clean training images are dropped (``train`` is None); the clean test
    set is kept for evaluation. ``info["pair_sigma"]`` records σ.
    """
    sigma = check_positive_float("sigma", sigma)
    if dataset.train is None:
        raise ValueError(
            f"noise2noise_pairs needs a dataset with a finite train set; {dataset.name!r} has none"
        )
    generator = torch.Generator().manual_seed(seed)
    clean = dataset.train
    noise = torch.randn((clean.shape[0], 2, *clean.shape[1:]), generator=generator)
    return Dataset(
        name=dataset.name,
        shape=dataset.shape,
        pairs=clean[:, None] + sigma * noise.to(clean.dtype),
        test=dataset.test,
        normalization=dict(dataset.normalization),
        value_range=dataset.value_range,
        info={**dataset.info, "pair_sigma": sigma, "pair_seed": seed},
        test_labels=dataset.test_labels,
    )


# name -> loader(**options) -> Dataset. Loaders take keyword options only (seed, sizes, paths).
DATASETS: dict[str, Callable[..., Dataset]] = {
    **{name: functools.partial(mixture_dataset, name) for name in PRESETS},
    "moons": two_moons,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "rings": rings,
    "digits": digits,
    "patches": image_patches,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "image_folder": image_folder,
}


def dataset_options(name: str) -> list[str]:
    """The options :func:`load_dataset` accepts for the dataset ``name`` (its loader's
    keyword parameters)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return [
        p.name
        for p in inspect.signature(DATASETS[name]).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def load_dataset(name: str, **options: Any) -> Dataset:
    """A dataset by name (one of :data:`DATASETS`), built offline; unknown options are an error."""
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown options {unknown} for dataset {name!r}; allowed: {allowed}")
    return DATASETS[name](**options)
