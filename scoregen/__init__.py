"""scoregen: denoisers as MMSE estimators, Tweedie scores and Langevin samplers, checked on exact mixtures."""

from scoregen.gmm import GaussianMixture
from scoregen.score import FixedSigmaDenoiser, score_denoiser, tweedie_score

# isort: split
# training and checkpoints
from scoregen.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from scoregen.losses import dae_loss

# --- samplers (scoregen/samplers/) ---
from scoregen.samplers import (
    GaussianLikelihood,
    MALAStats,
    SamplerDivergence,
    TrajectoryRecorder,
    annealed_langevin,
    annealed_posterior_langevin,
    diffpir,
    dps,
    geometric_sigmas,
    init_from_data,
    init_noise,
    init_uniform,
    karras_sigmas,
    langevin,
    linear_sigmas,
    mala,
    mixture_posterior,
    posterior_score,
    predictor_corrector,
    probability_flow,
)

# isort: split
# posterior sampling with a loaded model (the observation and its physics in data space)
from scoregen.posterior_sampling import PosteriorSamples, posterior_sample
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
    "GaussianLikelihood",
    "annealed_posterior_langevin",
    "diffpir",
    "dps",
    "mixture_posterior",
    "posterior_sample",
    "PosteriorSamples",
    "SamplerDivergence",
    "TrajectoryRecorder",
]
