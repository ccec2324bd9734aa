"""Training objectives, per example: the MMSE denoising loss, Noise2Noise, and score matching for toys.

The denoising loss ``E‖D(x + σz, σ) − x‖²`` is minimised, at every σ and for any weighting
λ(σ) > 0, by the posterior mean ``D*(y, σ) = E[x | y]``; Tweedie turns ``D*`` into the score
of the blurred density, ``∇log p_σ(y) = (D*(y, σ) − y) / σ²``. Every loss here returns one
value per example (shape ``[B]``), averaged over the example's ``d`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scoregen._util import append_dims, sigma_batch
from scoregen.config import PROJECTIONS, WEIGHTINGS

__all__ = [
    "WEIGHTINGS",
    "PROJECTIONS",
    "dae_loss",
    "esm_loss",
    "loss_weight",
    "noise2noise_loss",
    "noisy_pair",
    "ssm_loss",
]


def loss_weight(sigma: Tensor, weighting: str = "none", sigma_data: float = 0.5) -> Tensor:
    """λ(σ), the factor on the per-example denoising MSE ``‖D − x‖²/d``.

    - ``"none"``: λ = 1, the plain MMSE objective of a DAE.
    - ``"ncsn"``: λ = 1/σ². NCSN weights its score loss by σ²; since ``σ²(s − ∇log q) =
      D − x`` for ``q = N(x, σ²I)``, ``σ²‖s − ∇log q‖² = ‖D − x‖²/σ²``: the same objective.
    - ``"edm"``: λ = (σ² + σ_d²) / (σ σ_d)², EDM's eq. 8, which with its preconditioning gives
      the raw network a unit-variance target at every σ.

    Any λ > 0 keeps the posterior mean as the minimiser at every σ; it only moves effort
    between noise levels.
    """
    if weighting == "none":
        return torch.ones_like(sigma)
    if weighting == "ncsn":
        return sigma.pow(-2)
    if weighting == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _weighted_mse(prediction: Tensor, target: Tensor, sigma: Tensor, weighting, sigma_data):
    # Per-example mean over the d numbers of one example, in the target's dtype (float32
    # under bf16 autocast, as EDM computes its loss).
    error = (prediction.to(target.dtype) - target).square().flatten(1).mean(1)
    return loss_weight(sigma, weighting, sigma_data) * error


def dae_loss(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigma,
    *,
    weighting: str = "none",
    sigma_data: float = 0.5,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-example denoising loss ``λ(σ) ‖D(x + σz, σ) − x‖² / d`` with ``z ~ N(0, I)``, ``[B]``.

    ``x`` is a clean batch ``[B, ...]``; ``sigma`` a float or a ``[B]`` tensor; ``noise``
    fixes ``z`` (else drawn from ``generator``); λ is :func:`loss_weight`.
    """
    sigma = sigma_batch(sigma, x)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noisy = x + append_dims(sigma, x.ndim) * noise  # y = x + σz
    denoised = denoiser(noisy, sigma)  # D(y, σ), an estimate of E[x | y]
    return _weighted_mse(denoised, x, sigma, weighting, sigma_data)  # λ(σ)‖D(y, σ) − x‖²/d


def noisy_pair(
    x: Tensor, sigma, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Two independent noisy copies of a clean batch: ``(x + σz₁, x + σz₂)``."""
    s = append_dims(sigma_batch(sigma, x), x.ndim)
    first = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    second = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + s * first, x + s * second


def noise2noise_loss(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    noisy: Tensor,
    target: Tensor,
    sigma,
    *,
    weighting: str = "none",
    sigma_data: float = 0.5,
) -> Tensor:
    """Noise2Noise: ``λ(σ) ‖D(y₁, σ) − y₂‖² / d`` for two noisy observations of one image, ``[B]``.

    When ``y₂ = x + n₂`` with ``n₂`` zero-mean and independent of ``y₁``,
    ``E‖D(y₁) − y₂‖² = E‖D(y₁) − x‖² + E‖n₂‖²``: the same minimiser as clean-target
    training (the posterior mean ``E[x | y₁]``), with the loss floor raised by the target's
    noise variance (σ₂² per number for Gaussian noise). ``sigma`` is the input's level σ₁.
    """
    sigma = sigma_batch(sigma, noisy)
    denoised = denoiser(noisy, sigma)  # D(y₁, σ)
    return _weighted_mse(denoised, target, sigma, weighting, sigma_data)  # λ‖D(y₁) − y₂‖²/d


def _score_input(x: Tensor) -> tuple[Tensor, bool]:
    # The objectives differentiate the score with respect to its input. create_graph keeps
    # that derivative differentiable for the parameter gradient; not needed under no_grad.
    return x.detach().requires_grad_(True), torch.is_grad_enabled()


def esm_loss(score: Callable[[Tensor, object], Tensor], x: Tensor, sigma=0.0) -> Tensor:
    """Explicit (Hyvärinen 2005) score matching, per example: ``½‖s(x)‖² + tr ∇ₓs(x)``, ``[B]``.

    ``x`` are samples of the density whose score ``score(x, sigma)`` models (``p_σ`` at the
    given σ; pass ``sigma=0.0`` with a network that models the clean data's score). Its
    expectation equals ``½ E‖s − ∇log p‖²`` minus a constant, without knowing ``p``. The
    Jacobian trace is exact: one backward pass per dimension, so this is for toys (d ≲ 100).
    Not divided by d.
    """
    x, create_graph = _score_input(x)
    with torch.enable_grad():
        s = score(x, sigma)
        flat = s.flatten(1)
        trace = torch.zeros(x.shape[0], device=x.device, dtype=flat.dtype)
        for i in range(flat.shape[1]):
            # ∂s_i/∂x_i for every example at once: the examples do not interact
            (grad,) = torch.autograd.grad(
                flat[:, i].sum(), x, create_graph=create_graph, retain_graph=True
            )
            trace = trace + grad.flatten(1)[:, i]
        per = 0.5 * flat.square().sum(1) + trace
    return per if create_graph else per.detach()


def ssm_loss(
    score: Callable[[Tensor, object], Tensor],
    x: Tensor,
    sigma=0.0,
    *,
    n_projections: int = 1,
    projection: str = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced score matching (Song et al. 2019), per example: ``½(vᵀs)² + vᵀ∇ₓ(vᵀs)``, ``[B]``.

    ``v`` has ``E[vvᵀ] = I`` (Rademacher ±1 or standard Gaussian), so the expectation over
    ``v`` is :func:`esm_loss` exactly; one backward pass instead of d. Averaged over
    ``n_projections`` independent ``v`` per example. Not divided by d.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    batch = x.shape[0]
    repeated = x.detach().repeat(n_projections, *([1] * (x.ndim - 1)))
    if isinstance(sigma, Tensor) and sigma.ndim == 1 and sigma.shape[0] == batch:
        sigma = sigma.repeat(n_projections)
    v = torch.randn(repeated.shape, generator=generator, device=x.device, dtype=x.dtype)
    if projection == "rademacher":
        v = v.sign()  # P(v = 0) is zero for a Gaussian draw
    repeated, create_graph = _score_input(repeated)
    with torch.enable_grad():
        s = score(repeated, sigma)
        projected = (v * s).flatten(1).sum(1)  # vᵀ s(x)
        (grad,) = torch.autograd.grad(projected.sum(), repeated, create_graph=create_graph)
        curvature = (v * grad).flatten(1).sum(1)  # vᵀ ∇ₓ(vᵀ s) = vᵀ J v
        per = 0.5 * projected.square() + curvature
    per = per.reshape(n_projections, batch).mean(0)
    return per if create_graph else per.detach()
