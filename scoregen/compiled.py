"""An opt-in compiled score: ``torch.compile`` with σ as a tensor input, so one graph serves
every level of a σ ladder, an eager fallback, and ``channels_last`` where it pays."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scoregen._util import sigma_batch

__all__ = ["CHANNELS_LAST_MIN_BATCH", "CompiledScore", "compile_score"]

# Whether channels_last speeds up a convolutional model depends on the machine, the batch and
# the network (on 2 shared CPU cores the digits U-Net measured 1.34× faster at 64 chains and
# 0.91× at 512 in one run, the reverse in another): it is measured at the first call, with the
# batch at hand, from this many chains on.
CHANNELS_LAST_MIN_BATCH = 32
_LAYOUT_TRIALS = 3


def _has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class CompiledScore:
    """``score(x, σ)`` whose work runs through ``torch.compile``.

    σ (a float, a 0-d or a ``[B]`` tensor) is turned into a tensor *before* the
    compiled function sees it: compiled with a Python float, a graph bakes the value in and
    every new σ of a ladder recompiles it (and after 8 levels torch gives up and runs eagerly);
    as a tensor, one graph serves every level. The first call compiles (its wall time is
    :attr:`compile_seconds`); if compiling fails (no C++ compiler, an unsupported operation),
    one warning says why and the score runs eagerly from then on (:attr:`fallback`), with the
    same results.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], *, channels_last: bool | None = False,
                 module: nn.Module | None = None, single_sigma: bool = False,
                 backend="inductor", mode: str | None = None):  # fmt: skip
        self.eager = fn
        self.single_sigma = single_sigma
        self.module = module
        self.channels_last = channels_last  # None: measured at the first call
        self.layout_times: dict[str, float] | None = None
        self.compiled = torch.compile(fn, backend=backend, mode=mode)
        self.compile_seconds: float | None = None
        self.fallback: str | None = None

    def _choose_layout(self, x: Tensor, sigma: Tensor) -> None:
        """Time the eager score in both memory layouts on this batch; keep the faster."""
        import time as clock

        def best(inputs: Tensor) -> float:
            self.eager(inputs, sigma)  # warm-up: allocator, kernels' first call
            times = []
            for _ in range(_LAYOUT_TRIALS):
                start = clock.perf_counter()
                self.eager(inputs, sigma)
                times.append(clock.perf_counter() - start)
            return min(times)

        with torch.no_grad():
            contiguous = best(x.contiguous())
            self.module.to(memory_format=torch.channels_last)
            last = best(x.contiguous(memory_format=torch.channels_last))
        self.layout_times = {"contiguous": contiguous, "channels_last": last}
        self.channels_last = last < contiguous
        if not self.channels_last:
            self.module.to(memory_format=torch.contiguous_format)

    def __call__(self, x: Tensor, sigma) -> Tensor:
        # a scoregen denoiser takes one σ as [1] (and embeds it once); other scores want [B]
        sigma = sigma_batch(sigma, x, keep_single=self.single_sigma)
        if self.channels_last is None:
            if x.ndim == 4 and x.shape[0] >= CHANNELS_LAST_MIN_BATCH and self.module is not None:
                self._choose_layout(x, sigma)
            else:
                self.channels_last = False
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fallback is not None:
            return self.eager(x, sigma)
        if self.compile_seconds is not None:
            return self.compiled(x, sigma)
        start = time.perf_counter()
        try:
            out = self.compiled(x, sigma)
        except Exception as e:  # torch._dynamo / inductor errors have no common base class
            self.fallback = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            warnings.warn(
                f"scoregen: torch.compile failed, running the score eagerly ({self.fallback})",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.eager(x, sigma)
        self.compile_seconds = time.perf_counter() - start
        return out


def compile_score(
    score_or_model,
    *,
    batch_size: int | None = None,
    channels_last: bool | None = None,
    backend="inductor",
    mode: str | None = None,
) -> CompiledScore:
    """A compiled version of a score for the samplers (see :class:`CompiledScore`).

    ``score_or_model`` is a :class:`~scoregen.checkpoint.ScoreModel` (its Tweedie score
    ``(D(x, σ) − x)/σ²`` is compiled around the denoiser module), a denoiser ``nn.Module``
    taking ``(x, sigma)``, or any score ``score(x, sigma)`` that accepts σ as a ``[B]`` tensor
    (``GaussianMixture.score`` does). ``channels_last`` switches the network and its inputs
    to that memory layout; by default (None) a network with convolutions times its eager score
    in both layouts on the first batch of :data:`CHANNELS_LAST_MIN_BATCH` chains or more and
    keeps the faster (:attr:`CompiledScore.layout_times`). ``batch_size`` is accepted for
    callers that know it (unused by the choice, which sees the batch itself). ``backend`` and
    ``mode`` go to ``torch.compile``.
    """
    from scoregen.checkpoint import ScoreModel

    denoiser = None
    if isinstance(score_or_model, ScoreModel):
        if isinstance(score_or_model.denoiser, nn.Module):
            denoiser = score_or_model.denoiser
        else:  # an exact builtin: its score takes tensor σ
            score_or_model = score_or_model.score
    elif isinstance(score_or_model, nn.Module):
        denoiser = score_or_model
    if denoiser is not None:
        if channels_last is None and not _has_convolutions(denoiser):
            channels_last = False
        if channels_last:
            denoiser = denoiser.to(memory_format=torch.channels_last)

        def tweedie(x: Tensor, sigma: Tensor) -> Tensor:
            s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
            return (denoiser(x, sigma) - x) / s**2

        return CompiledScore(tweedie, channels_last=channels_last, module=denoiser,
                             single_sigma=True, backend=backend, mode=mode)  # fmt: skip
    if not callable(score_or_model):
        raise TypeError(
            "compile_score needs a ScoreModel, a denoiser module or a score(x, sigma), got "
            f"{type(score_or_model).__name__}"
        )
    return CompiledScore(score_or_model, channels_last=bool(channels_last), backend=backend, mode=mode)  # fmt: skip
