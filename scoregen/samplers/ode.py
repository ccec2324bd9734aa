"""The probability-flow ODE of the variance-exploding diffusion, integrated by Euler or Heun."""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.samplers._common import (
    Callback,
    SamplerLoop,
    check_batch,
    check_callable,
    sigma_list,
    split_final_zero,
    tweedie_step,
)

__all__ = ["probability_flow", "SOLVERS"]

SOLVERS = ("euler", "heun")


@torch.no_grad()
def probability_flow(
    score,
    x: Tensor,
    sigmas,
    *,
    solver: str = "heun",
    final_denoise: bool = True,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Deterministic sampling along the probability-flow ODE ``dx/dσ = −σ s(x, σ)``.

    If ``x`` is distributed as ``p_{σ_0}``, following the ODE down the ladder keeps it
    distributed as ``p_σ`` at every σ (the probability-flow ODE of Song et al. 2021 for the
    VE SDE, ``f = 0``, ``g² = dσ²/dt``; Karras et al. 2022 with ``σ(t) = t``). With
    ``d(x, σ) = −σ s(x, σ)`` and
    ``h = σ_{i+1} − σ_i < 0``:

    * ``"euler"``: ``x ← x + h d(x, σ_i)``;
    * ``"heun"`` (Karras et al. 2022, Algorithm 1): ``x̃ = x + h d(x, σ_i)``, then
      ``x ← x + h (d(x, σ_i) + d(x̃, σ_{i+1})) / 2`` (second order, two score calls per step).

    ``sigmas`` is a descending ladder of positive levels (e.g. :func:`karras_sigmas`) and
    ``x`` a batch drawn from ``p_{σ_0}``, e.g. ``σ_0 z`` (:func:`init_noise`) when σ_0 dwarfs
    the data's spread. The score is never evaluated at σ = 0; with ``final_denoise`` the last
    step goes from σ_L to 0 by one Euler step, ``x + σ_L² s(x, σ_L)``, which is exactly the
    Tweedie denoiser (k-diffusion likewise ends its Heun sampler with an Euler step to 0).
    A ladder ending in 0 (k-diffusion's convention) asks for that final step too.
    The callback sees one step per ODE step, with ``step_size = σ_i − σ_{i+1}`` and
    ``denoised``, Tweedie's estimate ``x + σ_i² s(x, σ_i)`` at the step's input. There is no
    ``generator``: all the randomness is in the starting batch. Other options as in
    :func:`langevin`.
    """
    check_callable("score", score)
    x = check_batch(x)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    levels, final_denoise = split_final_zero(
        sigma_list(sigmas, allow_final_zero=True), final_denoise
    )
    if len(levels) < (1 if final_denoise else 2):
        raise ValueError(
            f"sigmas must hold at least {1 if final_denoise else 2} positive levels, got {levels}"
        )
    total = len(levels) - 1 + bool(final_denoise)

    def drift(v: Tensor, sigma: float) -> Tensor:
        grad = score(v, sigma)
        if grad.shape != v.shape:
            raise ValueError(
                f"the score returned shape {tuple(grad.shape)} for x of shape {tuple(v.shape)}"
            )
        return -sigma * grad

    with SamplerLoop(
        "probability_flow",
        total,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda *_: "try more sigmas (smaller ODE steps), or solver='heun'",
    ) as loop:
        for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
            h = sigma_next - sigma
            d = drift(x, sigma)
            extra = {"denoised": x - sigma * d} if loop.wants_info else {}  # x + σ² s
            x_euler = x + h * d
            if solver == "euler":
                x = x_euler
            else:
                # Heun's trapezoid: average the slopes at both ends of the step.
                x = x + (0.5 * h) * (d + drift(x_euler, sigma_next))
            loop.step(x, level=i, sigma=sigma, step_size=-h, sigma_next=sigma_next, **extra)
        if final_denoise:
            # Euler from σ_L to 0: x + (0 − σ_L)(−σ_L s) = x + σ_L² s (Tweedie).
            x = tweedie_step(score, x, levels[-1])
            loop.step(
                x,
                level=len(levels) - 1,
                sigma=levels[-1],
                step_size=levels[-1],
                sigma_next=0.0,
                phase="denoise",
            )
        loop.finish()
    return x
