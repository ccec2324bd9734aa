"""Posterior sampling for linear inverse problems ``y = A x + σ_n n`` with Langevin dynamics: the
posterior score, annealed posterior Langevin with stable steps, and the exact posterior of a
Gaussian-mixture prior (the ground truth the posterior samplers are tested against)."""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int
from scoregen.samplers._common import Callback, check_callable
from scoregen.samplers.langevin import _run_levels
from scoregen.samplers.likelihood import (
    GaussianLikelihood,
    check_posterior_inputs,
    divergence_hint,
)

__all__ = ["posterior_score", "annealed_posterior_langevin", "mixture_posterior"]


def _likelihood(y, physics, noise_sigma) -> GaussianLikelihood:
    if isinstance(y, GaussianLikelihood):
        if physics is not None or noise_sigma is not None:
            raise ValueError("pass either a GaussianLikelihood or (y, physics, noise_sigma)")
        return y
    return GaussianLikelihood(y, physics, noise_sigma)


def posterior_score(
    prior_score, y, physics=None, noise_sigma: float | None = None, *, gamma: float = 0.0
):
    """The score of the posterior of a linear-Gaussian inverse problem ``y = A x + σ_n n``::

        s_post(x, σ) = s_prior(x, σ) + Aᵀ (y − A x) / (σ_n² + γ² σ²)

    Args:
        prior_score: ``score(x, sigma)`` of the prior ``p_σ`` (a Tweedie score, the oracle's).
        y: the observation, shaped like ``A x`` for one example (with a leading batch dim
            of 1, broadcast over the chains) or for each chain (``[B, ...]``). For a matrix
            physics, ``[m]``, ``[1, m]`` or ``[B, m]``. Or a :class:`GaussianLikelihood`
            (then ``physics`` and ``noise_sigma`` stay None).
        physics: a float matrix ``[m, d]`` acting on flattened examples, or a deepinv
            ``LinearPhysics`` (anything with ``A(x)`` and ``A_adjoint(y)``).
        noise_sigma: σ_n > 0; defaults to ``physics.noise_model.sigma`` when present.
        gamma: γ >= 0 widens the likelihood's variance to ``σ_n² + γ²σ²`` at level σ (annealed
            posterior sampling, Jalal et al. 2021). 0 (default) keeps the exact likelihood.

    Returns:
        ``score(x, sigma)``, usable by every sampler; it carries ``.likelihood``,
        ``.prior_score``, ``.noise_sigma`` and ``.gamma``, and a Langevin run that diverges
        on it says which term's step was too large.

    At ``σ = 0`` this is exactly ``∇ log p(x | y)``, so ULA or MALA at σ = 0 sample the
    posterior. At ``σ > 0`` it adds a likelihood gradient to the *blurred* prior's score,
    which is not the score of the blurred posterior ``p(x_σ | y)``: with γ = 0 the
    likelihood's curvature ``‖A‖²/σ_n²`` stays fixed while the prior's shrinks as ``1/σ²``,
    so a step sized for the prior at large σ is unstable for the likelihood (use
    :func:`annealed_posterior_langevin`, which bounds both); with γ = 1 the likelihood is
    that of ``y`` given ``x_σ`` were ``x_σ − x`` independent of ``x``, exact as σ → 0.
    """
    check_callable("prior_score", prior_score)
    likelihood = _likelihood(y, physics, noise_sigma)
    gamma = check_positive_float("gamma", gamma, allow_zero=True)

    def score(x: Tensor, sigma) -> Tensor:
        extra = 0.0
        if gamma > 0:
            extra = gamma**2 * (sigma**2 if not isinstance(sigma, Tensor) else sigma.square())
        # the likelihood first: a shape mismatch with the operator is named as such
        data_term = likelihood.grad(x, extra)
        return prior_score(x, sigma) + data_term

    score.prior_score = prior_score
    score.likelihood = likelihood
    score.noise_sigma = likelihood.noise_sigma
    score.gamma = gamma
    return score


def posterior_steps(
    likelihood: GaussianLikelihood, sigmas: list[float], step_scale: float, gamma: float, like
) -> list[float]:
    """Each level's Langevin step ``ε / L_i``, with ``L_i = 1/σ_i² + ‖AᵀA‖/(σ_n² + γ²σ_i²)``
    the bound on the curvature of the posterior score at level ``σ_i`` (prior plus likelihood).
    """
    sqnorm = likelihood.sqnorm(like)
    noise_var = likelihood.noise_sigma**2
    return [step_scale / (1.0 / s**2 + sqnorm / (noise_var + gamma**2 * s**2)) for s in sigmas]


@torch.no_grad()
def annealed_posterior_langevin(
    score,
    x: Tensor,
    sigmas,
    *,
    likelihood: GaussianLikelihood,
    n_steps_each: int = 20,
    n_steps_last: int | None = None,
    step_scale: float = 0.5,
    gamma: float = 1.0,
    temperature: float = 1.0,
    final_denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
) -> Tensor:
    """Annealed Langevin dynamics on the posterior of ``y = A x + σ_n n``, stable at every level.

    ``score`` is the *prior* score ``s(x, σ)``. At each level ``σ_i`` of the descending ladder
    ``sigmas``, ``n_steps_each`` ULA steps follow the annealed posterior score (Jalal et al.
    2021, "Robust compressed sensing MRI with deep generative priors")::

        g_i(x) = s(x, σ_i) + Aᵀ(y − A x) / (σ_n² + γ² σ_i²)
        x ← x + α_i g_i(x) + sqrt(2 α_i T) z,    α_i = ε / L_i,
        L_i = 1/σ_i² + ‖AᵀA‖ / (σ_n² + γ² σ_i²)

    ``L_i`` bounds the curvature of ``−log`` of the level's target (the prior's is at most
    ``1/σ²``, the likelihood's is ``‖A‖²/(σ_n² + γ²σ²)``; ``‖AᵀA‖`` comes from
    :meth:`GaussianLikelihood.sqnorm`), so every step satisfies ``α_i L_i = ε`` and ULA is
    stable for ε < 2 whatever σ_n, ‖A‖ and σ_i. Where the likelihood is weak
    (``‖A‖²σ² ≪ σ_n² + γ²σ²``) the step is NCSN's ``ε σ_i²``.

    With ``final_denoise``, one last Tweedie step with the same posterior score,
    ``x ← x + σ_L² g_L(x)``, estimates ``E[x | x_σL, y]``.

    What is exact: at γ = 0 the last level's target is ``p_σL(x) N(y; A x, σ_n²)``, and for
    any γ it is ``p_σL(x) N(y; A x, σ_n² + γ²σ_L²)`` — for a Gaussian-mixture prior the
    posterior of the blurred mixture (:func:`mixture_posterior`), which the chains sample up to
    ULA's O(ε) bias. That target tends to ``p(x | y)`` as σ_L → 0; the mode weights reached
    depend on how slowly the ladder anneals (the intermediate targets are approximations).

    Args:
        score: the prior score ``score(x, sigma)``.
        x: the starting batch ``[B, ...]``, e.g. ``σ_1 z``.
        sigmas: descending levels (:func:`geometric_sigmas`).
        likelihood: a :class:`GaussianLikelihood` in the coordinates of ``score``.
        n_steps_each: ULA steps per level.
        n_steps_last: ULA steps at the last level (default ``n_steps_each``): a longer last
            level is where a caller averages the chain for posterior statistics.
        step_scale: ε in (0, 2): each step times the level's curvature bound.
        gamma: γ >= 0, the widening of the likelihood's variance (0: the exact likelihood
            at every level, whose stable steps are then tiny at large σ).
        Other options as in :func:`annealed_langevin`.
    """
    x, levels = check_posterior_inputs(score, x, sigmas, likelihood)
    n_steps_each = check_positive_int("n_steps_each", n_steps_each)
    n_steps_last = (
        n_steps_each if n_steps_last is None else check_positive_int("n_steps_last", n_steps_last)
    )
    step_scale = check_positive_float("step_scale", step_scale)
    if step_scale >= 2:
        raise ValueError(
            f"step_scale must be in (0, 2) (ULA is unstable above 2), got {step_scale}"
        )
    gamma = check_positive_float("gamma", gamma, allow_zero=True)
    temperature = check_positive_float("temperature", temperature, allow_zero=True)
    posterior = posterior_score(score, likelihood, gamma=gamma)
    steps = posterior_steps(likelihood, levels, step_scale, gamma, x)
    plan = [(s, step, n_steps_each) for s, step in zip(levels, steps)]
    plan[-1] = (plan[-1][0], plan[-1][1], n_steps_last)
    return _run_levels(
        "annealed_posterior_langevin",
        posterior,
        x,
        plan,
        temperature=temperature,
        final_denoise_sigma=levels[-1] if final_denoise else None,
        generator=generator,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda s, eps: divergence_hint(
            posterior, s, eps, f"try a smaller step_scale (e.g. {step_scale / 4:.3g})"
        ),
    )


def mixture_posterior(prior, matrix: Tensor, y: Tensor, noise_sigma: float):
    """The exact posterior ``p(x | y)`` of a Gaussian-mixture prior under ``y = A x + σ_n n``.

    For ``x ~ Σ_k w_k N(μ_k, Σ_k)`` and a matrix ``A`` ``[m, d]`` it is the mixture
    ``Σ_k w'_k N(m_k, S_k)`` with::

        S_k  = (Σ_k⁻¹ + AᵀA / σ_n²)⁻¹
        m_k  = S_k (Σ_k⁻¹ μ_k + Aᵀ y / σ_n²)
        w'_k ∝ w_k N(y; A μ_k, A Σ_k Aᵀ + σ_n² I)

    Args:
        prior: a :class:`scoregen.GaussianMixture` (read through ``weights``, ``means``,
            ``covs``).
        matrix: ``A``, ``[m, d]``.
        y: one observation, ``[m]`` or ``[1, m]``.
        noise_sigma: σ_n > 0.

    Returns:
        The posterior as a ``GaussianMixture`` with full covariances, in float64.
    """
    from scoregen.gmm import GaussianMixture

    noise_sigma = check_positive_float("noise_sigma", noise_sigma)
    dtype = torch.float64
    weights = prior.weights.to(dtype)
    means = prior.means.to(dtype)
    covs = prior.covs.to(dtype)
    device = means.device
    matrix = torch.as_tensor(matrix, dtype=dtype, device=device)
    y = torch.as_tensor(y, dtype=dtype, device=device).reshape(-1)
    d = means.shape[1]
    if matrix.ndim != 2 or matrix.shape[1] != d:
        raise ValueError(f"matrix must be [m, d] with d = {d}, got shape {tuple(matrix.shape)}")
    if y.shape[0] != matrix.shape[0]:
        raise ValueError(f"y must hold m = {matrix.shape[0]} numbers, got {y.shape[0]}")
    noise_var = noise_sigma**2
    # S_k through Σ_k − Σ_k Aᵀ (A Σ_k Aᵀ + σ_n² I)⁻¹ A Σ_k (Woodbury: no Σ_k⁻¹, so singular
    # or near-singular prior covariances are fine).
    predictive = matrix @ covs @ matrix.T + noise_var * torch.eye(
        matrix.shape[0], dtype=dtype, device=device
    )  # [K, m, m]
    gain = covs @ matrix.T @ torch.linalg.inv(predictive)  # [K, d, m]
    post_covs = covs - gain @ matrix @ covs
    post_covs = 0.5 * (post_covs + post_covs.transpose(-1, -2))
    innovation = y - means @ matrix.T  # [K, m]
    post_means = means + (gain @ innovation[..., None])[..., 0]
    log_evidence = torch.distributions.MultivariateNormal(
        means @ matrix.T, covariance_matrix=predictive
    ).log_prob(y)
    post_weights = torch.softmax(torch.log(weights) + log_evidence, dim=0)
    return GaussianMixture(post_weights, post_means, post_covs, dtype=dtype, device=device)
