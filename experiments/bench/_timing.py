"""What the benchmarks share: timing one call (synchronised on CUDA) and interleaved trials."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch


def timed(call: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds ``call()`` takes, and what it returned; CUDA work is waited for on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def interleaved(
    names: Iterable[str], trial: Callable[[str], tuple[float, Any]], repeats: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``repeats`` rounds of one ``trial(name)`` per contender, in a fresh random order every
    round, so a burst of load from other processes hits all of them alike. Returns every
    contender's times and its output from the last round."""
    order = list(names)
    times: dict[str, list[float]] = {name: [] for name in order}
    outputs: dict[str, Any] = {}
    shuffler = random.Random(seed)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            seconds, outputs[name] = trial(name)
            times[name].append(seconds)
    return times, outputs
