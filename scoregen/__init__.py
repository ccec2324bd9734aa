"""scoregen: denoisers as MMSE estimators, Tweedie scores and Langevin samplers, checked on exact mixtures."""

from scoregen.gmm import GaussianMixture
from scoregen.score import FixedSigmaDenoiser, score_denoiser, tweedie_score

# isort: split
# training and checkpoints
from scoregen.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from scoregen.losses import dae_loss
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
]
