"""Datasets, all offline: toys (with their exact oracle where one exists) and image sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scoregen.gmm import PRESETS, GaussianMixture, preset

__all__ = ["Dataset", "DATASETS", "load_dataset", "mixture_dataset"]


@dataclass
class Dataset:
    """Training data in model space, with what is needed to map samples back.

    Either ``train`` holds a finite set ``[N, *shape]`` (minibatches are drawn from it with
    replacement, from the caller's generator), or ``sampler(n, generator)`` draws fresh
    examples without end (the toys), or ``pairs`` holds ``[N, 2, *shape]`` independent noisy
    observations of the same images at level ``info["pair_sigma"]`` and no clean data
    (Noise2Noise training). ``normalization`` maps model space back to data
    space, ``data = x * scale + shift``; it is stored in checkpoints. ``oracle`` is the
    exact mixture for the mixture toys.
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

    def __post_init__(self):
        if (self.train is None) == (self.sampler is None):
            raise ValueError(
                "a Dataset needs exactly one of train (a tensor) or sampler (a function)"
            )
        if self.train is not None and tuple(self.train.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"train has examples of shape {tuple(self.train.shape[1:])}, expected {self.shape}"
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

    def to_data_space(self, x: Tensor) -> Tensor:
        """Undo the normalisation: model space -> data (pixel) space."""
        return x * self.normalization.get("scale", 1.0) + self.normalization.get("shift", 0.0)

    def from_data_space(self, x: Tensor) -> Tensor:
        return (x - self.normalization.get("shift", 0.0)) / self.normalization.get("scale", 1.0)

    def record(self) -> dict[str, Any]:
        """What a checkpoint stores about its data."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "normalization": dict(self.normalization),
            **self.info,
        }


def mixture_dataset(name: str, n_test: int = 10_000, seed: int = 0) -> Dataset:
    """A mixture preset (:data:`scoregen.gmm.PRESETS`) as an endless toy with its oracle."""
    if name not in PRESETS:
        raise ValueError(f"unknown mixture {name!r}; choose one of {sorted(PRESETS)}")
    mix = preset(name)

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


# name -> loader(**options) -> Dataset. Loaders take keyword options only (seed, sizes, paths).
DATASETS: dict[str, Callable[..., Dataset]] = {
    name: (lambda name=name, **options: mixture_dataset(name, **options)) for name in PRESETS
}


def load_dataset(name: str, **options: Any) -> Dataset:
    """A dataset by name (one of :data:`DATASETS`), built offline."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](**options)
