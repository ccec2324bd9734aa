"""Unadjusted Langevin (ULA) at one noise level, and NCSN's annealed Langevin over a σ ladder."""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int
from scoregen.samplers._common import (
    Callback,
    SamplerLoop,
    check_batch,
    check_callable,
    check_sigma_arg,
    langevin_step,
    sigma_list,
    tweedie_step,
)
from scoregen.samplers.likelihood import divergence_hint

__all__ = ["langevin", "annealed_langevin"]


def _run_levels(
    name: str,
    score,
    x: Tensor,
    levels: list[tuple[object, object, int]],
    *,
    temperature: float,
    final_denoise_sigma,
    generator,
    callback,
    progress,
    check_every: int,
    hint,
) -> Tensor:
    """Run ``n`` ULA steps at each ``(σ, ε, n)`` of ``levels``, then optionally one Tweedie step.

    The one loop behind :func:`langevin` (a single level) and :func:`annealed_langevin`.
    """
    total = sum(n for _, _, n in levels) + (final_denoise_sigma is not None)
    with SamplerLoop(
        name, total, callback=callback, progress=progress, check_every=check_every, hint=hint
    ) as loop:
        for level, (sigma, step_size, n_steps) in enumerate(levels):
            for _ in range(n_steps):
                x = langevin_step(score, x, sigma, step_size, temperature, generator)
                loop.step(x, level=level, sigma=sigma, step_size=step_size)
        if final_denoise_sigma is not None:
            # Tweedie: E[x0 | x] = x + σ_L² s(x, σ_L), removing the last level's noise.
            x = tweedie_step(score, x, final_denoise_sigma)
            loop.step(
                x,
                level=len(levels) - 1,
                sigma=final_denoise_sigma,
                step_size=final_denoise_sigma**2,
                phase="denoise",
            )
        loop.finish()
    return x


@torch.no_grad()
def langevin(
    score,
    x: Tensor,
    *,
    sigma=0.0,
    step_size: float,
    n_steps: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Unadjusted Langevin algorithm at one noise level σ::

        x ← x + ε s(x, σ) + sqrt(2 ε T) z,    z ~ N(0, I)

    At temperature ``T = 1`` the chain targets ``p_σ`` (up to an O(ε) discretisation bias);
    at ``T`` it targets ``p_σ^(1/T)`` normalised. ``temperature=0.5`` is exactly the loop of
    seeds/001, whose noise term is ``sqrt(ε) z``: it samples ``p_σ²`` normalised, which is
    sharper than ``p_σ``. ``temperature=0`` is gradient ascent on ``log p_σ``.

    Args:
        score: ``score(x, sigma) -> Tensor`` shaped like ``x``, the score of ``p_σ``
            (evaluated under ``torch.no_grad()``).
        x: the starting batch ``[B, ...]``, any float dtype, any device (not modified).
        sigma: the noise level handed to the score: a float >= 0 or a ``[B]`` tensor.
        step_size: ε > 0.
        n_steps: number of updates.
        temperature: T >= 0.
        generator: a ``torch.Generator`` on ``x``'s device; with it a run is bit-reproducible.
        callback: called after every step with a dict ``{"step", "level", "sigma",
            "step_size", "x", "sampler"}`` (see :class:`TrajectoryRecorder`).
        progress: ``None`` (auto: a tqdm bar on a terminal once a run lasts > 2 s),
            ``True`` or ``False``.
        check_every: the finiteness flags are read every this many steps (one device sync
            per window); a non-finite batch raises :class:`SamplerDivergence` naming the
            first bad step.

    Returns:
        The final batch, shaped like ``x``.
    """
    check_callable("score", score)
    x = check_batch(x)
    sigma = check_sigma_arg(sigma, x)
    step_size = check_positive_float("step_size", step_size)
    n_steps = check_positive_int("n_steps", n_steps)
    temperature = check_positive_float("temperature", temperature, allow_zero=True)
    return _run_levels(
        "langevin",
        score,
        x,
        [(sigma, step_size, n_steps)],
        temperature=temperature,
        final_denoise_sigma=None,
        generator=generator,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda s, eps: divergence_hint(
            score, s, eps, f"try a smaller step_size (e.g. step_size={eps / 10:.3g})"
        ),
    )


@torch.no_grad()
def annealed_langevin(
    score,
    x: Tensor,
    sigmas,
    *,
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    temperature: float = 1.0,
    final_denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level ``σ_i`` of the descending ladder ``sigmas`` (σ_1 > … > σ_L), run
    ``n_steps_each`` ULA steps at the level's step size::

        α_i = step_lr · σ_i² / σ_L²
        x ← x + α_i s(x, σ_i) + sqrt(2 α_i T) z

    so the "signal-to-noise" ``α_i ‖s‖ / sqrt(α_i)`` is the same at every level. With
    ``final_denoise`` one last Tweedie step ``x ← x + σ_L² s(x, σ_L)`` (= the MMSE denoiser
    ``D(x, σ_L)``) removes the noise of the last level; it is reported to the callback as a
    step with ``phase="denoise"`` and step size ``σ_L²``.

    ``sigmas`` is a 1-D tensor or sequence of positive, descending levels, e.g.
    :func:`geometric_sigmas`. The shared options are those of :func:`langevin`; the callback
    sees the global step, the level index ``i`` and ``σ_i``.
    """
    check_callable("score", score)
    x = check_batch(x)
    levels = sigma_list(sigmas)
    n_steps_each = check_positive_int("n_steps_each", n_steps_each)
    step_lr = check_positive_float("step_lr", step_lr)
    temperature = check_positive_float("temperature", temperature, allow_zero=True)
    sigma_last = levels[-1]
    plan = [(s, step_lr * s**2 / sigma_last**2, n_steps_each) for s in levels]
    return _run_levels(
        "annealed_langevin",
        score,
        x,
        plan,
        temperature=temperature,
        final_denoise_sigma=sigma_last if final_denoise else None,
        generator=generator,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda s, eps: divergence_hint(
            score, s, eps, f"try a smaller step_lr (e.g. step_lr={step_lr / 10:.3g})"
        ),
    )
