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
    curvature_step,
    denoised,
    langevin_step,
    sigma_list,
    split_final_zero,
    tweedie_step,
)
from scoregen.samplers.likelihood import divergence_hint

__all__ = ["langevin", "annealed_langevin"]


def _run_levels(
    name: str,
    score,
    x: Tensor,
    levels: list[tuple[float, object, int]],
    *,
    temperature: float,
    final_denoise_sigma,
    generator,
    callback,
    progress,
    check_every: int,
    hint,
    step_scale: float | None = None,
) -> Tensor:
    """Run ``n`` ULA steps at each ``(σ, ε, n)`` of ``levels``, then optionally one Tweedie step.

    The one loop behind :func:`langevin` (a single level) and :func:`annealed_langevin`. With
    ``step_scale`` the ε of each level is None and set at the level's start by
    :func:`~scoregen.samplers._common.curvature_step`.
    """
    total = sum(n for _, _, n in levels) + (final_denoise_sigma is not None)
    with SamplerLoop(
        name, total, callback=callback, progress=progress, check_every=check_every, hint=hint
    ) as loop:
        for level, (sigma, step_size, n_steps) in enumerate(levels):
            grad = None
            if step_scale is not None:
                step_size, grad = curvature_step(score, x, sigma, step_scale, generator)
            for _ in range(n_steps):
                x_in = x
                x, grad = langevin_step(score, x, sigma, step_size, temperature, generator, grad)
                extra = {"denoised": denoised(x_in, grad, sigma)} if loop.wants_info else {}
                loop.step(x, level=level, sigma=sigma, step_size=step_size, **extra)
                grad = None
        if final_denoise_sigma is not None:
            # Tweedie: E[x0 | x] = x + σ_L² s(x, σ_L), removing the last level's noise.
            x = tweedie_step(score, x, final_denoise_sigma)
            loop.step(
                x,
                level=len(levels) - 1,
                sigma=final_denoise_sigma,
                step_size=final_denoise_sigma**2,
                phase="denoise",
                **({"denoised": x} if loop.wants_info else {}),
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
    at ``T`` it targets ``p_σ^(1/T)`` normalised. ``temperature=0.5`` is a loop whose noise
    term is ``sqrt(ε) z`` (a common slip for ``sqrt(2ε) z``): it samples ``p_σ²`` normalised,
    which is sharper than ``p_σ``. ``temperature=0`` is gradient ascent on ``log p_σ``.

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
            "step_size", "x", "sampler", "denoised"}`` (see :class:`TrajectoryRecorder`);
            ``denoised`` is Tweedie's estimate ``x + σ² s(x, σ)`` at the step's input.
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
    step_lr: float | None = None,
    step_scale: float | None = None,
    adaptive: bool = False,
    temperature: float = 1.0,
    final_denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level ``σ_i`` of the descending ladder ``sigmas`` (σ_1 > … > σ_L), run
    ``n_steps_each`` ULA steps at the level's step size ``α_i``::

        x ← x + α_i s(x, σ_i) + sqrt(2 α_i T) z

    The step, from one of three rules:

    * NCSN's, ``α_i = step_lr · σ_i² / σ_L²`` (``step_lr`` given; NCSN used ``step_lr = 2e-5``
      with ``σ_L = 0.01``, i.e. ``α_i = 0.2 σ_i²``). The "signal-to-noise" ``α_i ‖s‖ /
      sqrt(α_i)`` is the same at every level.
    * The same rule written relative to the ladder (the default), ``α_i = step_scale · σ_i²``
      with ``step_scale = 0.1``: ``−log p_σ`` has curvature at most ``1/σ²`` whatever the data
      (Tweedie: its Hessian is ``I/σ² − Cov[x | x + σz]/σ⁴``), so this step is stable for any
      score of a σ-blurred density. Below the data's own spread the chains barely move, so the
      bottom levels act as a gentle quench: right for a learned score, which is least
      reliable at small σ.
    * ``adaptive=True``: ``α_i = step_scale / κ_i`` with κ_i the mean curvature of
      ``−log p_σi`` at the chains when the level starts
      (:func:`~scoregen.samplers._common.curvature_step`, one extra score evaluation per
      level): ``step_scale σ_i²`` while σ_i dwarfs the data's spread, about
      ``step_scale (v + σ_i²)`` once σ_i is below the data's local variance ``v``, so the chains
      keep relaxing at every level. For exact scores, which can be trusted at every σ.

    With ``final_denoise`` one last Tweedie step ``x ← x + σ_L² s(x, σ_L)`` (= the MMSE denoiser
    ``D(x, σ_L)``) removes the noise of the last level; it is reported to the callback as a
    step with ``phase="denoise"`` and step size ``σ_L²``. A ladder ending in 0 (k-diffusion's
    convention) asks for that step too.

    ``sigmas`` is a 1-D tensor or sequence of positive, descending levels, e.g.
    :func:`geometric_sigmas`. The shared options are those of :func:`langevin`; the callback
    sees the global step, the level index ``i``, ``σ_i``, the step ``α_i`` and ``denoised``.
    """
    check_callable("score", score)
    x = check_batch(x)
    levels, final_denoise = split_final_zero(
        sigma_list(sigmas, allow_final_zero=True), final_denoise
    )
    n_steps_each = check_positive_int("n_steps_each", n_steps_each)
    temperature = check_positive_float("temperature", temperature, allow_zero=True)
    sigma_last = levels[-1]
    if step_lr is not None:
        if step_scale is not None or adaptive:
            raise ValueError(
                "step_lr (NCSN's α_i = step_lr σ_i²/σ_L²) cannot be combined with step_scale or "
                "adaptive=True; give one rule"
            )
        step_lr = check_positive_float("step_lr", step_lr)
        plan = [(s, step_lr * s**2 / sigma_last**2, n_steps_each) for s in levels]
        hint_text = f"try a smaller step_lr (e.g. step_lr={step_lr / 10:.3g})"
    else:
        scale = check_positive_float("step_scale", 0.1 if step_scale is None else step_scale)
        plan = [(s, None if adaptive else scale * s**2, n_steps_each) for s in levels]
        hint_text = f"try a smaller step_scale (e.g. step_scale={scale / 10:.3g})"
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
        hint=lambda s, eps: divergence_hint(score, s, eps, hint_text),
        step_scale=scale if step_lr is None and adaptive else None,
    )
