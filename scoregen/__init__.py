"""scoregen: denoisers as MMSE estimators, Tweedie scores and Langevin samplers, checked on exact mixtures."""

from scoregen.gmm import GaussianMixture
from scoregen.score import FixedSigmaDenoiser, score_denoiser, tweedie_score

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "FixedSigmaDenoiser",
    "score_denoiser",
    "tweedie_score",
    "__version__",
]
