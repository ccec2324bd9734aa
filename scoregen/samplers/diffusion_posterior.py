"""Diffusion posterior solvers for ``y = A x + σ_n n``: DiffPIR and DPS, one ancestral
(DDPM/DDIM-type) loop over a σ ladder around two estimates of ``E[x | x_σ, y]``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scoregen._util import check_positive_float
from scoregen.samplers._common import (
    Callback,
    SamplerLoop,
    randn_like,
)
from scoregen.samplers.likelihood import GaussianLikelihood, check_posterior_inputs

__all__ = ["diffpir", "dps", "denoiser_error_variance", "DPS_GUIDANCE", "ERROR_VARIANCES"]

DPS_GUIDANCE = ("pigdm", "gaussian", "norm")
ERROR_VARIANCES = ("probe", "isotropic")


def denoiser_error_variance(sigma: float, sigma_data: float) -> float:
    """``σ² σ_d² / (σ² + σ_d²)``: the per-pixel error variance of the MMSE denoiser at level σ
    for data distributed as ``N(μ, σ_d² I)`` — the spread of ``x`` around ``D(x_σ, σ)``.

    Both solvers use it as the variance of ``x`` given ``x_σ``; it is exact for an isotropic
    Gaussian prior and a good first-order guess elsewhere (≈ σ² at small σ, σ_d² at large σ).
    """
    return sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)


def _check_common(score, x, sigmas, likelihood, sigma_data, zeta, clip):
    x, levels = check_posterior_inputs(score, x, sigmas, likelihood)
    sigma_data = check_positive_float("sigma_data", sigma_data)
    if zeta is not None:
        zeta = check_positive_float("zeta", zeta, allow_zero=True)
        if zeta > 1:
            raise ValueError(f"zeta must be in [0, 1] or None (ancestral), got {zeta}")
    if clip is not None:
        try:
            low, high = (float(v) for v in clip)
        except (TypeError, ValueError):
            raise ValueError(f"clip must be None or a pair (low, high), got {clip!r}") from None
        if not low < high:
            raise ValueError(f"clip must have low < high, got {clip!r}")
        clip = (low, high)
    return x, levels, sigma_data, zeta, clip


def _ancestral_loop(
    name: str,
    x: Tensor,
    levels: list[float],
    clean_estimate: Callable[[Tensor, float, float], Tensor],
    *,
    zeta: float | None,
    generator,
    callback,
    progress,
    check_every: int,
    hint: str,
) -> Tensor:
    """From ``x`` at level σ_1, for each level σ_i with next level σ_{i+1} (0 after the last)::

        x̂₀ = clean_estimate(x, σ_i, σ_{i+1})                  an estimate of E[x₀ | x_σi, y]
        ε̂  = (x − x̂₀) / σ_i                                   the noise it implies
        x  ← x̂₀ + σ_{i+1} (sqrt(1 − ζ_i) ε̂ + sqrt(ζ_i) z),   z ~ N(0, I)

    ``ζ_i = 1 − σ_{i+1}²/σ_i²`` when ``zeta`` is None: the ancestral (DDPM) step, which
    samples ``p(x_σ_{i+1} | y)`` exactly given ``x̂₀`` exact as the steps shrink. ``ζ = 0`` is
    the deterministic DDIM step; a fixed ζ is DiffPIR's (Zhu et al. 2023, eq. 13).
    The last level returns ``x̂₀``.
    """
    with SamplerLoop(
        name,
        len(levels),
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda *_: hint,
    ) as loop:
        for i, sigma in enumerate(levels):
            sigma_next = levels[i + 1] if i + 1 < len(levels) else 0.0
            x0 = clean_estimate(x, sigma, sigma_next)
            if sigma_next == 0.0:
                x = x0
            else:
                z_frac = 1.0 - sigma_next**2 / sigma**2 if zeta is None else zeta
                eps = (x - x0) / sigma
                x = x0 + (sigma_next * math.sqrt(1.0 - z_frac)) * eps
                if z_frac > 0:
                    x = x + (sigma_next * math.sqrt(z_frac)) * randn_like(x, generator)
            info = {"x0": x0} if loop.wants_info else {}
            loop.step(x, level=i, sigma=sigma, step_size=sigma**2 - sigma_next**2, **info)
        loop.finish()
    return x


def _clamp(x: Tensor, clip):
    return x if clip is None else x.clamp(clip[0], clip[1])


@torch.no_grad()
def diffpir(
    score,
    x: Tensor,
    sigmas,
    *,
    likelihood: GaussianLikelihood,
    sigma_data: float,
    lambda_: float = 1.0,
    zeta: float | None = None,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """DiffPIR (Zhu et al. 2023, "Denoising diffusion models for plug-and-play image
    restoration") in the variance-exploding form of a score ``s(x, σ)``.

    At each level σ_i of the descending ladder ``sigmas``::

        x₀  = D(x, σ_i) = x + σ_i² s(x, σ_i)                    the prior's denoiser (Tweedie)
        x̂₀  = argmin_u ‖y − A u‖²/(2σ_n²) + λ ‖u − x₀‖²/(2 r_i²)  data consistency
        r_i² = σ_i² σ_d² / (σ_i² + σ_d²)                         (denoiser_error_variance)

    then the ancestral step of :func:`_ancestral_loop` (``zeta``: None = DDPM's
    ``1 − σ_{i+1}²/σ_i²``, or DiffPIR's fixed ζ). The data step is
    :meth:`GaussianLikelihood.data_consistency` at variance ``r_i²/λ``: closed form for a
    matrix, a mask and other deepinv physics with a closed form; conjugate gradients otherwise.
    The paper's ``ρ_t = λ σ_n² / σ_t²`` is this step with ``r_i² = σ_i²``; bounding it by
    ``σ_d²`` keeps the data step from over-trusting y at large σ.

    What is exact: ``x̂₀`` is ``E[x | x_σ, y]`` when the prior is ``N(μ, σ_d² I)`` and
    λ = 1 (then ``x | x_σ ~ N(D(x_σ), r² I)`` exactly), so the ancestral chain samples the
    exact posterior as the ladder refines. For any other prior ``x | x_σ`` is not Gaussian
    and DiffPIR is an approximation, tuned by λ (larger: trust the prior more).

    Args:
        score: the prior score; x: the starting batch at σ_1 (e.g. ``σ_1 z``).
        sigmas: the descending ladder; the output is the last level's ``x̂₀``.
        likelihood: a :class:`GaussianLikelihood` in the coordinates of ``score``.
        sigma_data: σ_d, the data's standard deviation per pixel (``ScoreModel.sigma_data``).
        lambda_: λ > 0, the weight of the prior's estimate against the data.
        zeta: ζ in [0, 1] or None (ancestral).
        clip: if given, ``(low, high)`` clamps the denoiser's output ``x₀`` (as deepinv does for
            images in a known range).
        Other options as in :func:`langevin`; the callback's info also holds ``x0`` (x̂₀).
    """
    x, levels, sigma_data, zeta, clip = _check_common(
        score, x, sigmas, likelihood, sigma_data, zeta, clip
    )
    lambda_ = check_positive_float("lambda_", lambda_)

    def clean_estimate(x: Tensor, sigma: float, sigma_next: float) -> Tensor:
        x0 = _clamp(x + sigma**2 * score(x, sigma), clip)
        variance = denoiser_error_variance(sigma, sigma_data) / lambda_
        return likelihood.data_consistency(x0, variance)

    return _ancestral_loop(
        "diffpir",
        x,
        levels,
        clean_estimate,
        zeta=zeta,
        generator=generator,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint="try more levels, a larger sigma_min, or clip the denoiser's output",
    )


@torch.no_grad()
def dps(
    score,
    x: Tensor,
    sigmas,
    *,
    likelihood: GaussianLikelihood,
    weight: float = 1.0,
    guidance: str = "pigdm",
    error_variance: str = "probe",
    sigma_data: float | None = None,
    zeta: float | None = None,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Diffusion posterior sampling: the likelihood's gradient taken through the denoiser with
    autograd (Chung et al. 2023, "Diffusion posterior sampling for general noisy inverse
    problems"), in the variance-exploding form of a score ``s(x, σ)``.

    At each level σ_i, with ``D(x, σ) = x + σ² s(x, σ)`` and ``J_D`` its Jacobian in x, the
    solver treats ``x | x_σ`` as ``N(D(x_σ), r_i² I)``, so ``y | x_σ ≈ N(A D, r_i² A Aᵀ + σ_n² I)``,
    and takes the gradient of that log-likelihood:

    * ``guidance="pigdm"`` (default; the pseudoinverse-guided form of Song et al. 2023)::

          g  = J_Dᵀ Aᵀ (r_i² A Aᵀ + σ_n² I)⁻¹ (y − A D(x, σ_i))
             = J_Dᵀ (I + (r_i²/σ_n²) AᵀA)⁻¹ Aᵀ (y − A D) / σ_n²      (push-through identity)
          x̂₀ = D(x, σ_i) + weight · σ_i² g                          (Tweedie, posterior score)

      The solve is :meth:`GaussianLikelihood.solve` (closed form for matrices, masks and
      other deepinv physics with one; conjugate gradients otherwise);
    * ``guidance="gaussian"``: ``A Aᵀ`` replaced by ``I``,
      ``g = J_Dᵀ Aᵀ (y − A D) / (σ_n² + r_i²)`` (deepinv's ``"annealed"`` DPS);
    * ``guidance="norm"`` (the paper's Algorithm 1): the ancestral step from the prior's
      ``D(x, σ_i)``, then ``x ← x − weight · ∇ₓ ‖y − A D(x, σ_i)‖`` (their step
      ``ζ / ‖y − A D‖`` on the squared norm); ``weight`` then has the scale of the residual's
      norm and must be tuned per problem.

    followed by the ancestral step of :func:`_ancestral_loop`. The variance ``r_i²``:

    * ``error_variance="probe"`` (default): ``Cov[x | x_σ] = σ² J_D`` (Tweedie's second-order
      identity) read along the measured directions with one random probe per chain and level,
      ``r_i² = σ_i² wᵀ J_D w / wᵀw`` with ``w = Aᵀu``, ``u`` a Rademacher vector of the
      measurement's shape (one more backward pass per level);
    * ``error_variance="isotropic"``: ``σ_i² σ_d² / (σ_i² + σ_d²)``
      (:func:`denoiser_error_variance`; needs ``sigma_data``).

    What is exact: for a prior ``N(μ, s² I)``, ``x | x_σ`` is exactly ``N(D, r² I)`` with
    ``r² = σ²s²/(σ² + s²)``, which both estimates return (the probe's ratio is exact when
    ``J_D ∝ I``; the isotropic one needs σ_d = s); the Pigdm guidance with weight 1 then makes
    ``x̂₀ = E[x | x_σ, y]`` exactly, for any A, and the chain samples the exact posterior as the
    ladder refines. For any other prior ``x | x_σ`` is not Gaussian and DPS is an
    approximation, which can over- or under-fit y; ``"gaussian"`` is exact only when
    ``A Aᵀ = I`` (masks, subsampling), and ``"norm"`` never.

    Args:
        score: the prior score, differentiable in x (autograd runs through it).
        x: the starting batch at σ_1; sigmas: the descending ladder (the output is the last
            level's ``x̂₀``).
        likelihood: a :class:`GaussianLikelihood` in the coordinates of ``score``.
        weight: the guidance's weight (> 0).
        guidance: ``"pigdm"``, ``"gaussian"`` or ``"norm"``.
        error_variance: ``"probe"`` or ``"isotropic"``.
        sigma_data: σ_d (``ScoreModel.sigma_data``), for ``error_variance="isotropic"``.
        zeta: ζ in [0, 1] or None (ancestral).
        clip: if given, ``(low, high)`` clamps the ``x̂₀`` that the step uses.
        Other options as in :func:`langevin`; the callback's info also holds ``x0`` (x̂₀).
    """
    if guidance not in DPS_GUIDANCE:
        raise ValueError(f"guidance must be one of {DPS_GUIDANCE}, got {guidance!r}")
    if error_variance not in ERROR_VARIANCES:
        raise ValueError(f"error_variance must be one of {ERROR_VARIANCES}, got {error_variance!r}")
    if error_variance == "isotropic" and sigma_data is None:
        raise ValueError('sigma_data is required with error_variance="isotropic"')
    x, levels, sigma_data, zeta, clip = _check_common(
        score, x, sigmas, likelihood, 1.0 if sigma_data is None else sigma_data, zeta, clip
    )
    weight = check_positive_float("weight", weight)
    noise_var = likelihood.noise_sigma**2

    def probe_variance(x_in: Tensor, denoised: Tensor, sigma: float) -> Tensor:
        """``σ² wᵀ J_D w / wᵀw`` per chain, ``w = Aᵀu`` (a vector-Jacobian product)."""
        with torch.no_grad():
            shape = likelihood.forward(x_in.detach()).shape
            u = torch.randint(0, 2, shape, generator=generator, device=x_in.device)
            w = likelihood.adjoint(u.to(x_in.dtype) * 2 - 1, x_in)
        (jw,) = torch.autograd.grad((denoised * w).sum(), x_in, retain_graph=True)
        ratio = (w * jw).reshape(w.shape[0], -1).sum(1) / w.reshape(w.shape[0], -1).square().sum(1)
        # J_D of an MMSE denoiser is Cov/σ² >= 0; one probe can come out negative or large
        return (sigma**2 * ratio).clamp(1e-4 * sigma**2, 2 * sigma**2).detach()

    def clean_estimate(x: Tensor, sigma: float, sigma_next: float) -> Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            denoised = x_in + sigma**2 * score(x_in, sigma)
            if guidance == "norm":
                r2 = 0.0
            elif error_variance == "probe":
                r2 = probe_variance(x_in, denoised, sigma)
            else:
                r2 = denoiser_error_variance(sigma, sigma_data)
            if guidance == "pigdm":
                with torch.no_grad():
                    back = likelihood.adjoint(likelihood.residual(denoised), denoised)
                    v = likelihood.solve(back, r2 / noise_var) / noise_var
                objective = (denoised * v).sum()  # its gradient is J_Dᵀ v
            else:
                residual = likelihood.residual(denoised)
                squares = residual.reshape(residual.shape[0], -1).square().sum(1)
                if guidance == "gaussian":
                    objective = -0.5 * (squares / (noise_var + r2)).sum()
                else:
                    objective = -squares.sqrt().sum()
            (grad,) = torch.autograd.grad(objective, x_in)
        denoised = denoised.detach()
        if guidance != "norm":
            return _clamp(denoised + (weight * sigma**2) * grad, clip)
        # "norm": the step −weight·∇‖r‖ lands on x after the ancestral move, which scales a
        # change of x̂₀ by c = 1 − σ_{i+1} sqrt(1 − ζ)/σ_i; dividing by c puts it there exactly.
        z_frac = 1.0 - sigma_next**2 / sigma**2 if zeta is None else zeta
        carry = 1.0 - sigma_next * math.sqrt(1.0 - z_frac) / sigma
        return _clamp(denoised, clip) + (weight / carry) * grad

    return _ancestral_loop(
        "dps",
        x,
        levels,
        clean_estimate,
        zeta=zeta,
        generator=generator,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint="try a smaller weight or more levels",
    )
