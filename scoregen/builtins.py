"""``builtin:NAME``: exact oracle scores of the mixture presets, and small trained checkpoints
shipped inside the package (rebuilt by ``python -m experiments.build_builtins``).

:func:`load_model` opens either a checkpoint file or a builtin and returns one
:class:`~scoregen.checkpoint.ScoreModel`, so the command line treats both alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from scoregen.checkpoint import ScoreModel, oracle_for

__all__ = [
    "PREFIX",
    "BUILTIN_DIR",
    "TRAINED",
    "ScoreModel",
    "UnknownBuiltinError",
    "list_builtins",
    "load_builtin",
    "load_model",
    "load_score_model",
    "oracle_names",
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


def oracle_names() -> list[str]:
    """``builtin:NAME`` of the exact builtins (the mixture presets, with a log-density)."""
    return [PREFIX + name for name in _ORACLE_DESCRIPTIONS]


def list_builtins() -> dict[str, str]:
    """Every builtin name (without the ``builtin:`` prefix) and what it is."""
    return {**_ORACLE_DESCRIPTIONS, **TRAINED}


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
    variances = torch.diagonal(mixture.covariance())
    sigma_data = math.sqrt(variances.mean().item())
    stats = {
        "mean": mixture.mean().tolist(),
        "std": variances.sqrt().tolist(),
        "cov": mixture.covariance().tolist(),
    }
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
        "data": {**dataset.record(), "stats": stats},
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
    model = load_checkpoint(path, device)
    model.name, model.description = PREFIX + name, TRAINED[name]
    return model


def load_model(spec, device: str | torch.device = "cpu") -> ScoreModel:
    """The model behind ``spec``: ``"builtin:NAME"`` (see :func:`list_builtins`), the path of a
    checkpoint file, or an already loaded :class:`~scoregen.checkpoint.ScoreModel` (returned
    as it is)."""
    from scoregen.checkpoint import load_checkpoint

    if isinstance(spec, ScoreModel):
        return spec
    if isinstance(spec, str) and spec.startswith(PREFIX):
        return load_builtin(spec, device)
    if not isinstance(spec, (str, Path)):
        raise TypeError(
            f"model must be 'builtin:NAME', a checkpoint path or a ScoreModel, got "
            f"{type(spec).__name__}"
        )
    return load_checkpoint(spec, device)


# The earlier name of load_model.
load_score_model = load_model
