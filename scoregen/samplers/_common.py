"""What every sampler shares: the Langevin update, noise, σ-ladder checks, and the loop's
bookkeeping (callback, progress bar, divergence guard, trajectory recording)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from scoregen._util import check_positive_int, sigma_like

__all__ = [
    "SamplerDivergence",
    "TrajectoryRecorder",
    "curvature_step",
    "denoised",
    "langevin_update",
    "randn_like",
]

StepInfo = dict[str, Any]
Callback = Callable[[StepInfo], Any]


class SamplerDivergence(RuntimeError):
    """A chain became non-finite (NaN or ±inf) during sampling.

    Attributes:
        sampler: the sampler's name.
        step: the global index (0-based) of the first step whose output was non-finite.
        level: the σ level of that step.
        sigma: σ at that step (a float, or a CPU tensor when it was per-chain).
        step_size: the step size at that step (a float, or a CPU tensor when per-chain).
    """

    def __init__(self, sampler: str, step: int, level: int, sigma, step_size, hint: str):
        self.sampler = sampler
        self.step = step
        self.level = level
        self.sigma = _to_host(sigma)
        self.step_size = _to_host(step_size)
        super().__init__(
            f"{sampler} diverged: the batch became non-finite at step {step} (level {level}, "
            f"sigma={_fmt(self.sigma)}, step_size={_fmt(self.step_size)}); {hint}"
        )


def _to_host(value):
    if isinstance(value, Tensor):
        value = value.detach().to("cpu")
        return value.item() if value.numel() == 1 else value.flatten()
    return value


def _fmt(value) -> str:
    if isinstance(value, Tensor):
        return f"per-chain in [{value.min().item():.4g}, {value.max().item():.4g}]"
    return f"{value:.4g}" if isinstance(value, numbers.Real) else repr(value)


# ---------------------------------------------------------------------------- the Langevin step
def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x`` (same device and dtype), drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def langevin_update(
    x: Tensor, grad: Tensor, step_size, temperature: float, noise: Tensor | None
) -> Tensor:
    """One Langevin update from a given gradient and noise: ``x + ε g + sqrt(2 ε T) z``.

    ``step_size`` (ε) is a float or a tensor broadcastable against ``x`` (per-chain steps);
    ``noise`` (z) may be None when ``temperature`` is 0. Every sampler's Langevin-type move
    (ULA, the annealed levels, the predictor–corrector's predictor and corrector, MALA's
    proposal) goes through this one function.
    """
    if grad.shape != x.shape:
        raise ValueError(
            f"the score returned shape {tuple(grad.shape)} for x of shape {tuple(x.shape)}; "
            f"a score must return a tensor shaped like x"
        )
    if isinstance(step_size, Tensor):
        out = x + step_size * grad
        if temperature > 0:
            out = out + (2.0 * temperature * step_size).sqrt() * noise
        return out
    out = torch.add(x, grad, alpha=step_size)
    if temperature > 0:
        out.add_(noise, alpha=math.sqrt(2.0 * step_size * temperature))
    return out


def langevin_step(
    score, x: Tensor, sigma, step_size, temperature: float, generator, grad: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``x + ε s(x, σ) + sqrt(2 ε T) z`` with fresh noise ``z`` from ``generator``; returns the
    new batch and the score at the old one (``grad``, when the caller already has it, is used
    instead of a new evaluation)."""
    if grad is None:
        grad = score(x, sigma)
    noise = randn_like(x, generator) if temperature > 0 else None
    return langevin_update(x, grad, step_size, temperature, noise), grad


def tweedie_step(score, x: Tensor, sigma) -> Tensor:
    """The Tweedie denoising step ``x + σ² s(x, σ)`` = E[x₀ | x] for a score of ``p_σ``."""
    grad = score(x, sigma)
    if grad.shape != x.shape:
        raise ValueError(
            f"the score returned shape {tuple(grad.shape)} for x of shape {tuple(x.shape)}"
        )
    return x + sigma_like(sigma, x) ** 2 * grad


def denoised(x: Tensor, grad: Tensor, sigma) -> Tensor:
    """Tweedie's estimate of the clean data behind ``x`` at level σ, ``x + σ² s(x, σ)``, from a
    score already computed (what samplers hand their callback as ``"denoised"``)."""
    return x + sigma_like(sigma, x) ** 2 * grad


def curvature_step(
    score, x: Tensor, sigma: float, step_scale: float, generator
) -> tuple[float, Tensor]:
    """A Langevin step size for level σ that adapts to the data: ``step_scale / κ``, where κ
    is the mean curvature of ``−log p_σ`` at the chains ``x``, estimated with one Hutchinson
    probe per chain and a finite difference over the length σ::

        κ = −mean_b z_bᵀ (s(x_b + σ z_b, σ) − s(x_b, σ)) / (σ d),    z_b ~ N(0, I)

    (``E[zᵀ∇s z] = tr ∇s = −tr ∇²(−log p_σ)``). For a Gaussian of variance ``v`` per
    coordinate, κ = 1/(v + σ²), so the step is ``step_scale (v + σ²)``: NCSN's
    ``step_scale σ²`` while σ dwarfs the data's spread, and ``step_scale v`` once σ is below
    it, where σ² would stall the chains. The result is clamped to
    ``[step_scale σ², step_scale (σ² + the chains' variance per coordinate)]`` (``κ <= 1/σ²``
    always; a flat region or a single chain falls back to NCSN's step). Returns the step and
    ``s(x, σ)`` (the first Langevin step reuses it): one extra score evaluation in all.
    """
    grad = score(x, sigma)
    probe = randn_like(x, generator)
    shifted = score(x + sigma * probe, sigma)
    n, d = x.shape[0], x[0].numel()
    kappa = -float((probe * (shifted - grad)).sum()) / (sigma * d * n)
    spread = float(x.reshape(n, -1).var(dim=0).mean()) if n > 1 else 0.0
    low, high = sigma**2, sigma**2 + spread
    inverse = 1.0 / kappa if kappa > 0 and math.isfinite(kappa) else low
    return step_scale * min(max(inverse, low), high), grad


# ---------------------------------------------------------------------------- argument checks
def check_batch(x, name: str = "x") -> Tensor:
    """``x`` must be a floating-point tensor batch ``[B, ...]``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor batch [B, ...], got {type(x).__name__}")
    if x.ndim < 1 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point batch [B, ...], got shape {tuple(x.shape)} "
            f"and dtype {x.dtype}"
        )
    return x


def check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable {name}(x, sigma), got {type(fn).__name__}")


def check_sigma_arg(sigma, x: Tensor):
    """σ for a fixed-level sampler: a float >= 0 or a ``[B]`` tensor (passed on untouched)."""
    if isinstance(sigma, Tensor):
        sigma_like(sigma, x)  # validates the shape
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"sigma must be a float or a [B] tensor, got {type(sigma).__name__}")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    return sigma


def sigma_list(
    sigmas, *, min_length: int = 1, name: str = "sigmas", allow_final_zero: bool = False
) -> list[float]:
    """A descending ladder of positive noise levels as Python floats (one host copy up front).

    With ``allow_final_zero`` the ladder may end in 0, k-diffusion's convention for "finish
    by denoising"; the 0 stays in the returned list (the caller turns it into a Tweedie step).
    """
    if isinstance(sigmas, Tensor):
        values = sigmas.detach().to("cpu", torch.float64)
    elif isinstance(sigmas, Sequence):
        values = torch.as_tensor(list(sigmas), dtype=torch.float64)
    else:
        raise TypeError(f"{name} must be a 1-D tensor or a sequence, got {type(sigmas).__name__}")
    zero_end = allow_final_zero and values.ndim == 1 and values.numel() > 1 and values[-1] == 0
    positive = values[:-1] if zero_end else values
    if values.ndim != 1 or positive.numel() < min_length:
        raise ValueError(
            f"{name} must be 1-D with at least {min_length} positive entries, got shape "
            f"{tuple(values.shape)}"
        )
    if not torch.isfinite(positive).all() or (positive <= 0).any():
        allowed = "> 0 (a final 0 is allowed)" if allow_final_zero else "> 0"
        raise ValueError(f"{name} must be finite and {allowed}, got {values.tolist()}")
    if (values[1:] > values[:-1]).any():
        raise ValueError(f"{name} must be descending (largest first), got {values.tolist()}")
    return values.tolist()


def split_final_zero(levels: list[float], final_denoise: bool) -> tuple[list[float], bool]:
    """``(positive levels, denoise at the end)`` from a ladder that may end in 0: a trailing 0
    asks for the final Tweedie step, and contradicts ``final_denoise=False``."""
    if levels and levels[-1] == 0:
        if not final_denoise:
            raise ValueError(
                "sigmas ends in 0, which asks for the final denoising step, but "
                "final_denoise=False; drop the trailing 0 or the final_denoise=False"
            )
        return levels[:-1], True
    return levels, final_denoise


def check_progress(progress) -> None:
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (auto), True or False, got {progress!r}")


# ---------------------------------------------------------------------------- the loop's bookkeeping
class SamplerLoop:
    """Bookkeeping of one sampler run: step counter, callback, progress bar, divergence guard.

    Samplers call :meth:`step` after every update with the new ``x``. The guard records
    ``(x * 0).sum()``, a 0-d tensor that is NaN exactly when some entry of ``x`` is NaN or
    ±inf, without reading it; every ``check_every`` steps (and at :meth:`finish`) the
    recorded values are stacked and read once, so a CUDA run syncs once per window rather than
    once per step. The first non-finite step of the window is then reported exactly.
    """

    def __init__(
        self,
        name: str,
        total: int,
        *,
        callback: Callback | None,
        progress: bool | None,
        check_every: int,
        hint: Callable[[Any, Any], str],
    ):
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable callback(info), got {type(callback)}")
        check_progress(progress)
        self.name = name
        self.callback = callback
        self.check_every = check_positive_int("check_every", check_every)
        self.hint = hint
        self.n_done = 0
        self._window: list[tuple[Tensor, int, int, Any, Any]] = []
        self._bar = _progress_bar(name, total, progress)

    @property
    def wants_info(self) -> bool:
        """Whether a callback will read the info (samplers skip computing extras otherwise)."""
        return self.callback is not None

    def step(self, x: Tensor, *, level: int, sigma, step_size, **extra) -> None:
        """Account for one finished step whose output is ``x``."""
        index = self.n_done
        self._window.append(((x * 0).sum(), index, level, sigma, step_size))
        if self.callback is not None:
            info = {
                "step": index,
                "level": level,
                "sigma": sigma,
                "step_size": step_size,
                "x": x,
                "sampler": self.name,
            }
            info.update(extra)
            self.callback(info)
        if self._bar is not None:
            self._bar.update(1)
        self.n_done = index + 1
        if len(self._window) >= self.check_every:
            self.check()

    def check(self) -> None:
        """Read the recorded finiteness flags (one sync) and raise at the first bad step."""
        if not self._window:
            return
        flags = torch.isfinite(torch.stack([entry[0] for entry in self._window]))
        if not bool(flags.all()):
            first = int((~flags).nonzero()[0, 0])
            _, index, level, sigma, step_size = self._window[first]
            self.close()
            raise SamplerDivergence(
                self.name, index, level, sigma, step_size, self.hint(sigma, step_size)
            )
        self._window.clear()

    def finish(self) -> None:
        self.check()
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> SamplerLoop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Auto mode shows a bar only on a terminal and only once a run has lasted this long.
_AUTO_PROGRESS_DELAY_S = 2.0


def _progress_bar(name: str, total: int, progress: bool | None):
    if progress is False:
        return None
    from tqdm.auto import tqdm

    if progress is None:
        bar = tqdm(total=total, desc=name, disable=None, delay=_AUTO_PROGRESS_DELAY_S, leave=False)
        # Not a terminal: tqdm disabled itself; drop it so the loop skips the per-step call.
        return None if bar.disable else bar
    return tqdm(total=total, desc=name, disable=False)


# ---------------------------------------------------------------------------- trajectories
class TrajectoryRecorder:
    """A callback that keeps CPU copies of the batch every ``every`` steps, and nothing else.

    Pass it as ``callback=``; after the run, :meth:`stack` gives ``[T, B', ...]`` and
    ``steps``, ``levels``, ``sigmas`` give the step index, level and σ of each snapshot.
    It records after steps ``every − 1, 2·every − 1, …`` (0-based), i.e. once ``every``
    steps have been taken. ``max_chains`` keeps only the first chains (for plots of a few
    trajectories out of a large batch); ``x0`` optionally stores the starting batch first
    (with step −1).

    Example::

        rec = TrajectoryRecorder(every=10, max_chains=64)
        x = langevin(score, x0, step_size=1e-2, n_steps=1000, callback=rec)
        path = rec.stack()  # [100, 64, d]
    """

    def __init__(self, every: int = 1, *, max_chains: int | None = None, x0: Tensor | None = None):
        self.every = check_positive_int("every", every)
        if max_chains is not None:
            max_chains = check_positive_int("max_chains", max_chains)
        self.max_chains = max_chains
        self.xs: list[Tensor] = []
        self.steps: list[int] = []
        self.levels: list[int] = []
        self.sigmas: list[Any] = []
        if x0 is not None:
            self._keep(x0, step=-1, level=0, sigma=None)

    def _keep(self, x: Tensor, *, step: int, level: int, sigma) -> None:
        if self.max_chains is not None:
            x = x[: self.max_chains]
        self.xs.append(x.detach().to("cpu", copy=True))
        self.steps.append(step)
        self.levels.append(level)
        self.sigmas.append(_to_host(sigma))

    def __call__(self, info: StepInfo) -> None:
        if (info["step"] + 1) % self.every == 0:
            self._keep(info["x"], step=info["step"], level=info["level"], sigma=info["sigma"])

    def __len__(self) -> int:
        return len(self.xs)

    def stack(self) -> Tensor:
        """The recorded snapshots as one tensor ``[T, B', ...]``."""
        if not self.xs:
            raise ValueError("no snapshots recorded yet (did the run take >= `every` steps?)")
        return torch.stack(self.xs)
