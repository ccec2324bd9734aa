"""Hypothesis settings shared by the property tests (CLI options, edited checkpoints)."""

import os

from hypothesis import HealthCheck, settings

# SCOREGEN_PROPERTY_EXAMPLES=500 explores further, with fresh random draws (CI: derandomized)
EXPLORE = int(os.environ.get("SCOREGEN_PROPERTY_EXAMPLES", "0"))


def property_settings(examples: int) -> settings:
    """``examples`` derandomized examples (the same ones every run), or ``EXPLORE`` fresh ones
    when the environment asks for exploration; no deadline (a case may train a model)."""
    return settings(
        max_examples=EXPLORE or examples,
        deadline=None,
        derandomize=not EXPLORE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
