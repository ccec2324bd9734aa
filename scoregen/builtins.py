"""``builtin:NAME``: exact oracle scores of the mixture presets, and small trained checkpoints
shipped inside the package (rebuilt by ``python -m experiments.build_builtins``).

:func:`load_score_model` opens either a checkpoint file or a builtin and returns one
:class:`ScoreModel`, so the command line treats both alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PREFIX",
    "BUILTIN_DIR",
    "TRAINED",
    "ScoreModel",
    "UnknownBuiltinError",
    "list_builtins",
    "load_builtin",
    "load_score_model",
    "oracle_for",
]

PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_data"

# name -> what it is; the file is BUILTIN_DIR / f"{name}.safetensors"
TRAINED: dict[str, str] = {
    "ncsn2d-dae": "σ-conditioned MLP denoiser trained on the ncsn2d mixture (σ in [0.05, 20])",
    "digits-dae": "σ-conditioned small U-Net denoiser trained on scikit-learn's 8×8 digits "
    "(σ in [0.02, 5], pixels mapped to [-1, 1])",
}
_ORACLE_DESCRIPTIONS: dict[str, str] = {
    "ncsn2d": "exact score of the NCSN two-mode mixture: weights 0.8/0.2 at ±(5, 5), unit variances",
    "ring8": "exact score of eight equal Gaussians on a circle of radius 5 (std 0.4)",
    "bimodal1d": "exact score of the 1-D mixture 0.7 N(-2, 0.5²) + 0.3 N(2, 0.5²)",
    "grid25": "exact score of a 5×5 grid of equal Gaussians (spacing 2, std 0.3)",
}


class UnknownBuiltinError(ValueError):
    """A ``builtin:NAME`` that does not exist (the message lists those that do)."""


@dataclass
class ScoreModel:
    """A score to sample from, with what is known about it.

    ``score(x, σ)`` is the score of ``p_σ``; ``denoiser(x, σ)`` the matching posterior mean;
    ``metadata`` a checkpoint record (``model``, ``data``, ``sigma``, ``training``);
    ``oracle`` the exact mixture of the data when the data is a mixture preset (for
    comparisons); ``log_prob(x, σ)`` the exact log-density of ``p_σ``, only for the oracle
    builtins (the only models whose density is known, which MALA needs).
    """

    name: str
    score: Callable
    denoiser: Callable
    metadata: dict[str, Any]
    oracle: Any = None
    log_prob: Callable | None = None
    path: Path | None = None
    description: str = ""

    @property
    def exact(self) -> bool:
        return self.log_prob is not None

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.metadata.get("data", {}))

    @property
    def sigma(self) -> dict[str, Any]:
        return dict(self.metadata.get("sigma", {}))

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
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.get("shape", ()))


def list_builtins() -> dict[str, str]:
    """Every builtin name (without the ``builtin:`` prefix) and what it is."""
    return {**_ORACLE_DESCRIPTIONS, **TRAINED}


def oracle_for(data_record: dict[str, Any]):
    """The exact mixture behind a data record, when its data is a mixture preset; else None."""
    from scoregen.gmm import PRESETS, preset

    name = data_record.get("name")
    if data_record.get("kind") == "mixture" and name in PRESETS:
        return preset(name)
    return None


def _oracle_sigma_range(mixture) -> tuple[float, float]:
    """Default σ range for annealing an exact mixture: from the largest distance between
    means plus three standard deviations (so ``p_σmax`` covers every mode, as NCSN's
    σ_max ≈ the largest distance between data points) down to 5 % of the smallest std."""
    stds = mixture.eigvals.sqrt()
    spread = torch.cdist(mixture.means, mixture.means).max().item()
    sigma_max = max(1.0, spread + 3.0 * stds.max().item())
    return 0.05 * stds.min().item(), sigma_max


def _load_oracle(name: str, device) -> ScoreModel:
    from scoregen.data import load_dataset

    dataset = load_dataset(name, n_test=1)
    mixture = dataset.oracle.to(device=device)
    sigma_min, sigma_max = _oracle_sigma_range(mixture)
    sigma_data = math.sqrt(torch.diagonal(mixture.covariance()).mean().item())
    metadata = {
        "format": "scoregen-builtin",
        "model": {
            "family": "oracle",
            "mixture": name,
            "n_components": mixture.n_components,
            "weights": mixture.weights.tolist(),
            "means": mixture.means.tolist(),
            "sigma_data": sigma_data,
        },
        "data": dataset.record(),
        "sigma": {"min": sigma_min, "max": sigma_max, "exact": True},
        "training": {},
    }
    return ScoreModel(
        name=PREFIX + name,
        score=mixture.score,
        denoiser=mixture.denoise,
        metadata=metadata,
        oracle=mixture,
        log_prob=mixture.log_prob,
        description=_ORACLE_DESCRIPTIONS[name],
    )


def _from_checkpoint(checkpoint, name: str, description: str = "") -> ScoreModel:
    oracle = oracle_for(checkpoint.data)
    if oracle is not None:
        oracle = oracle.to(device=next(checkpoint.denoiser.parameters()).device)
    return ScoreModel(
        name=name,
        score=checkpoint.score,
        denoiser=checkpoint.denoiser,
        metadata=checkpoint.metadata,
        oracle=oracle,
        path=checkpoint.path,
        description=description,
    )


def load_builtin(name: str, device: str | torch.device = "cpu") -> ScoreModel:
    """The builtin ``name`` (with or without the ``builtin:`` prefix) on ``device``.

    Raises :class:`UnknownBuiltinError` listing the builtins for an unknown name, and
    :class:`scoregen.CheckpointError` when a trained builtin's file is missing or damaged.
    """
    from scoregen.checkpoint import CheckpointError, load_checkpoint

    name = name.removeprefix(PREFIX)
    if name in _ORACLE_DESCRIPTIONS:
        return _load_oracle(name, device)
    if name not in TRAINED:
        choices = ", ".join(PREFIX + n for n in list_builtins())
        raise UnknownBuiltinError(f"unknown builtin {PREFIX + name!r}; the builtins are {choices}")
    path = BUILTIN_DIR / f"{name}.safetensors"
    if not path.exists():
        raise CheckpointError(
            f"{PREFIX + name}: its file {str(path)!r} is missing from this installation "
            "(rebuild it from a scoregen checkout: python -m experiments.build_builtins)"
        )
    return _from_checkpoint(load_checkpoint(path, device), PREFIX + name, TRAINED[name])


def load_score_model(spec: str | Path, device: str | torch.device = "cpu") -> ScoreModel:
    """``builtin:NAME`` (see :func:`list_builtins`) or the path of a checkpoint file."""
    from scoregen.checkpoint import load_checkpoint

    if isinstance(spec, str) and spec.startswith(PREFIX):
        return load_builtin(spec, device)
    return _from_checkpoint(load_checkpoint(spec, device), str(spec))
