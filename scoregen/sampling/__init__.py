"""The sampling layer: the policy behind ``scoregen sample`` as library calls.

:func:`plan_sampling` turns a loaded model and options into a :class:`SamplingPlan` (every
default, with its reason, in :data:`DEFAULTS`); :func:`run_plan` runs it;
:func:`sample` does both and returns samples in data space; :func:`report_samples` compares
them with what they target, each number with its reference band.
:func:`posterior_sample` is the same layer with a likelihood added (inverse problems).
"""

from scoregen.sampling.plan import DEFAULTS, SamplingPlan, defaults_table, plan_sampling
from scoregen.sampling.posterior import (
    POSTERIOR_SAMPLERS,
    PosteriorPlan,
    PosteriorSamples,
    plan_posterior,
    posterior_sample,
)
from scoregen.sampling.report import Banded, SampleReport, report_samples
from scoregen.sampling.run import SampleRun, held_out_examples, run_plan, sample

__all__ = [
    "DEFAULTS",
    "POSTERIOR_SAMPLERS",
    "PosteriorPlan",
    "PosteriorSamples",
    "plan_posterior",
    "posterior_sample",
    "Banded",
    "SampleReport",
    "SampleRun",
    "SamplingPlan",
    "defaults_table",
    "held_out_examples",
    "plan_sampling",
    "report_samples",
    "run_plan",
    "sample",
]
