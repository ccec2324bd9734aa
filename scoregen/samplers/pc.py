"""Predictor–corrector sampling of the variance-exploding SDE (Song et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int
from scoregen.samplers._common import (
    Callback,
    SamplerLoop,
    check_batch,
    check_callable,
    denoised,
    langevin_step,
    langevin_update,
    randn_like,
    sigma_list,
    split_final_zero,
    tweedie_step,
)

__all__ = ["predictor_corrector", "STEP_NORMS"]

STEP_NORMS = ("batch", "example")


def _per_example_norm(t: Tensor) -> Tensor:
    """``‖t_b‖₂`` for each example, shaped ``[B, 1, …, 1]`` to broadcast against ``t``."""
    norms = t.reshape(t.shape[0], -1).norm(dim=1)
    return norms.reshape((t.shape[0],) + (1,) * (t.ndim - 1))


@torch.no_grad()
def predictor_corrector(
    score,
    x: Tensor,
    sigmas,
    *,
    snr: float = 0.16,
    n_corrector: int = 1,
    step_norm: str = "batch",
    final_denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Reverse-diffusion predictor + Langevin corrector for the VE SDE.

    Song et al. 2021, "Score-Based Generative Modeling through SDEs", Algorithm 2 (PC
    sampling, VE SDE) with the corrector of Algorithm 4. For each pair of consecutive levels
    ``σ_i > σ_{i+1}`` of the descending ladder ``sigmas``:

    * predictor (reverse-diffusion discretisation of the VE SDE), from ``σ_i`` to ``σ_{i+1}``::

          x ← x + (σ_i² − σ_{i+1}²) s(x, σ_i) + sqrt(σ_i² − σ_{i+1}²) z

      which is a Langevin update with step ``σ_i² − σ_{i+1}²`` at temperature ½;
    * ``n_corrector`` Langevin corrector steps at the new level ``σ_{i+1}`` (as in the
      paper's Algorithm 2, where the corrector follows the predictor and uses the score at
      the level just reached)::

          g = s(x, σ_{i+1}),  z ~ N(0, I),  ε = 2 (snr · ‖z‖ / ‖g‖)²
          x ← x + ε g + sqrt(2ε) z

      ``step_norm="batch"`` (default, as the reference code) averages ``‖z‖`` and ``‖g‖``
      (per-example L2 norms) over the batch, so all chains share one ε per step and the
      corrector is a plain Langevin move targeting ``p_{σ_{i+1}}``. ``step_norm="example"``
      gives each chain its own ε (Algorithm 4 read per sample): in high dimension the norms
      concentrate and the two agree, but in low dimension a chain near a mode has a tiny
      ``‖g‖`` and gets a huge step: a step size that depends on the chain's own state and
      noise breaks the Langevin move's invariance, and on a 2-D mixture the samples then
      fail a two-sample test against exact draws (tests/test_samplers_mcmc.py).

    ``x`` should start near ``p_{σ_0}``: the data's mean plus noise of variance σ_0² + the
    data's variance (``σ_0 z`` alone only when σ_0 dwarfs the data's spread and mean). With
    ``final_denoise`` a last Tweedie step ``x + σ_L² s(x, σ_L)`` removes the noise of the last
    level; a ladder ending in 0 (k-diffusion's convention) asks for it too. The callback's
    dict holds ``denoised``, Tweedie's estimate ``x + σ² s(x, σ)`` at each move's input. The callback sees one step per
    predictor and per corrector move (``phase`` ``"predictor"`` / ``"corrector"`` /
    ``"denoise"``); the corrector's ``step_size`` is a 0-d tensor (``"batch"``) or the
    per-chain ``[B, 1, …]`` tensor (``"example"``), left on the device (no sync).
    Other options as in :func:`langevin`.
    """
    check_callable("score", score)
    x = check_batch(x)
    levels, final_denoise = split_final_zero(
        sigma_list(sigmas, min_length=2, allow_final_zero=True), final_denoise
    )
    if len(levels) < 2:
        raise ValueError(f"sigmas must hold at least 2 positive levels, got {levels}")
    snr = check_positive_float("snr", snr)
    n_corrector = check_positive_int("n_corrector", n_corrector, minimum=0)
    if step_norm not in STEP_NORMS:
        raise ValueError(f"step_norm must be one of {STEP_NORMS}, got {step_norm!r}")
    total = (len(levels) - 1) * (1 + n_corrector) + bool(final_denoise)
    tiny = torch.finfo(x.dtype).tiny
    with SamplerLoop(
        "predictor_corrector",
        total,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda *_: f"try a smaller snr (e.g. snr={snr / 2:.3g}) or more sigmas",
    ) as loop:
        for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
            variance = sigma**2 - sigma_next**2
            x_in = x
            x, grad = langevin_step(score, x, sigma, variance, 0.5, generator)
            extra = {"denoised": denoised(x_in, grad, sigma)} if loop.wants_info else {}
            loop.step(x, level=i, sigma=sigma, step_size=variance, phase="predictor", **extra)
            for _ in range(n_corrector):
                grad = score(x, sigma_next)
                noise = randn_like(x, generator)
                noise_norm, grad_norm = _per_example_norm(noise), _per_example_norm(grad)
                if step_norm == "batch":
                    noise_norm, grad_norm = noise_norm.mean(), grad_norm.mean()
                ratio = snr * noise_norm / grad_norm.clamp_min(tiny)
                step_size = 2.0 * ratio.square()
                x_in = x
                x = langevin_update(x, grad, step_size, 1.0, noise)
                extra = {"denoised": denoised(x_in, grad, sigma_next)} if loop.wants_info else {}
                loop.step(x, level=i + 1, sigma=sigma_next, step_size=step_size,
                          phase="corrector", **extra)  # fmt: skip
        if final_denoise:
            x = tweedie_step(score, x, levels[-1])
            loop.step(
                x,
                level=len(levels) - 1,
                sigma=levels[-1],
                step_size=levels[-1] ** 2,
                phase="denoise",
            )
        loop.finish()
    return x
