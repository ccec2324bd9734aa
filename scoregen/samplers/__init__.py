"""Samplers driven by a score ``s(x, σ)``: Langevin (ULA), annealed Langevin, MALA,
predictor–corrector, the probability-flow ODE, σ ladders, starting batches, and posterior
sampling for linear inverse problems (posterior scores, annealed posterior Langevin, DiffPIR, DPS).

Every sampler is a plain function ``sampler(score, x, [sigmas,] *, ..., callback=None,
progress=None)`` returning the final batch shaped like ``x``; the stochastic ones take a
``generator``. See :func:`langevin` for the options they share.
"""

from scoregen.samplers._common import SamplerDivergence, TrajectoryRecorder, langevin_update
from scoregen.samplers.diffusion_posterior import diffpir, dps
from scoregen.samplers.init import init_from_data, init_noise, init_uniform
from scoregen.samplers.langevin import annealed_langevin, langevin
from scoregen.samplers.likelihood import GaussianLikelihood
from scoregen.samplers.mala import MALAStats, mala
from scoregen.samplers.ode import probability_flow
from scoregen.samplers.pc import predictor_corrector
from scoregen.samplers.posterior import (
    annealed_posterior_langevin,
    mixture_posterior,
    posterior_score,
)
from scoregen.samplers.schedules import geometric_sigmas, karras_sigmas, linear_sigmas

__all__ = [
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
    "SamplerDivergence",
    "TrajectoryRecorder",
    "langevin_update",
]
