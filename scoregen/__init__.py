"""scoregen: denoisers as MMSE estimators, Tweedie scores and Langevin samplers, checked on exact mixtures.

The public names below are imported on first use (``from scoregen import annealed_langevin``
loads the samplers, not the training loop), so ``import scoregen`` and the command line's
``--help`` start without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scoregen")
except PackageNotFoundError:  # a checkout on sys.path without an install
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # the exact oracle and Tweedie
    "GaussianMixture": "scoregen.gmm",
    "FixedSigmaDenoiser": "scoregen.score",
    "score_denoiser": "scoregen.score",
    "tweedie_score": "scoregen.score",
    # loaded models, checkpoints, training
    "ScoreModel": "scoregen.checkpoint",
    "Checkpoint": "scoregen.checkpoint",
    "CheckpointError": "scoregen.checkpoint",
    "load_checkpoint": "scoregen.checkpoint",
    "save_checkpoint": "scoregen.checkpoint",
    "load_model": "scoregen.builtins",
    "TrainConfig": "scoregen.config",
    "TrainResult": "scoregen.train",
    "train": "scoregen.train",
    "dae_loss": "scoregen.losses",
    # samplers
    "langevin": "scoregen.samplers",
    "annealed_langevin": "scoregen.samplers",
    "mala": "scoregen.samplers",
    "MALAStats": "scoregen.samplers",
    "predictor_corrector": "scoregen.samplers",
    "probability_flow": "scoregen.samplers",
    "geometric_sigmas": "scoregen.samplers",
    "linear_sigmas": "scoregen.samplers",
    "karras_sigmas": "scoregen.samplers",
    "init_noise": "scoregen.samplers",
    "init_uniform": "scoregen.samplers",
    "init_from_data": "scoregen.samplers",
    "posterior_score": "scoregen.samplers",
    "GaussianLikelihood": "scoregen.samplers",
    "annealed_posterior_langevin": "scoregen.samplers",
    "diffpir": "scoregen.samplers",
    "dps": "scoregen.samplers",
    "mixture_posterior": "scoregen.samplers",
    "SamplerDivergence": "scoregen.samplers",
    "TrajectoryRecorder": "scoregen.samplers",
    # the sampling layer: what `scoregen sample` draws, from a script
    "sample": "scoregen.sampling",
    "plan_sampling": "scoregen.sampling",
    "SamplingPlan": "scoregen.sampling",
    # posterior sampling for inverse problems: the same layer with a likelihood added
    "posterior_sample": "scoregen.sampling",
    "PosteriorSamples": "scoregen.sampling",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scoregen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """The package module. Importing the submodule ``scoregen.train`` would bind the name
    ``train`` to that module; the public ``scoregen.train`` is the function, so submodules
    whose name is also a public function are not bound (``from scoregen.train import ...`` and
    ``sys.modules`` still reach the module)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, "").endswith("." + name):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
