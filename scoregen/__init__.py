"""scoregen: denoisers as MMSE estimators, Tweedie scores and Langevin samplers, checked on exact mixtures."""

from scoregen.gmm import GaussianMixture
from scoregen.score import FixedSigmaDenoiser, score_denoiser, tweedie_score

# isort: split
# training and checkpoints
from scoregen.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from scoregen.losses import dae_loss

# --- samplers (scoregen/samplers/) ---
from scoregen.samplers import (
    MALAStats,
    SamplerDivergence,
    TrajectoryRecorder,
    annealed_langevin,
    geometric_sigmas,
    init_from_data,
    init_noise,
    init_uniform,
    karras_sigmas,
    langevin,
    linear_sigmas,
    mala,
    posterior_score,
    predictor_corrector,
    probability_flow,
)
from scoregen.train import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "FixedSigmaDenoiser",
    "score_denoiser",
    "tweedie_score",
    "__version__",
    # training and checkpoints
    "Checkpoint",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "dae_loss",
    "load_checkpoint",
    "save_checkpoint",
    "train",
    # --- samplers ---
    "langevin",
    "annealed_langevin",
    "mala",
    "MALAStats",
    "predictor_corrector",
    "probability_flow",
    "geometric_sigmas",
    "linear_sigmas",
    "karras_sigmas",
    "init_noise",
    "init_uniform",
    "init_from_data",
    "posterior_score",
    "SamplerDivergence",
    "TrajectoryRecorder",
]
