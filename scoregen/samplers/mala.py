"""Metropolis-adjusted Langevin (MALA): exact sampling of ``p_σ`` when its log-density is known."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from scoregen._util import check_positive_float, check_positive_int
from scoregen.samplers._common import (
    Callback,
    SamplerLoop,
    check_batch,
    check_callable,
    check_sigma_arg,
    langevin_update,
    randn_like,
)

__all__ = ["mala", "MALAStats"]


class MALAStats(NamedTuple):
    """What :func:`mala` returns next to the batch when ``return_stats=True``.

    ``acceptance_rate``: the fraction of all proposals (chains × steps) accepted.
    ``accepted``: ``[B]`` number of accepted proposals per chain (on ``x``'s device).
    ``n_steps``: proposals per chain.
    """

    acceptance_rate: float
    accepted: Tensor
    n_steps: int


def _value_and_grad(log_prob, x: Tensor, sigma) -> tuple[Tensor, Tensor]:
    """``log p(x)`` ``[B]`` and its gradient by autograd (chains are independent, so the
    gradient of the batch sum is the per-chain gradient)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = log_prob(x, sigma)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _sq_norm(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).square().sum(1)


@torch.no_grad()
def mala(
    log_prob,
    x: Tensor,
    *,
    step_size: float,
    n_steps: int,
    sigma=0.0,
    score=None,
    return_stats: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool | None = None,
    check_every: int = 50,
):
    """Metropolis-adjusted Langevin algorithm targeting ``p_σ`` (Roberts & Tweedie 1996).

    Each chain proposes a Langevin move and accepts it with the Metropolis–Hastings rule::

        x' = x + ε s(x) + sqrt(2ε) z,          q(x' | x) = N(x'; x + ε s(x), 2ε I)
        log α = log p(x') − log p(x) + log q(x | x') − log q(x' | x)
        accept if log u < log α,  u ~ U(0, 1)

    with ``log q(x' | x) = −‖x' − x − ε s(x)‖² / (4ε) + const``. Unlike ULA the chain's
    stationary law is exactly ``p_σ`` whatever ε; ε only sets the acceptance rate (around
    0.57 is optimal in high dimension). Proposals whose log-density is NaN are rejected.

    Args:
        log_prob: ``log_prob(x, sigma) -> [B]``, the (unnormalised) log-density of ``p_σ``,
            e.g. ``GaussianMixture.log_prob``.
        x: starting batch ``[B, ...]``.
        step_size: ε > 0.
        n_steps: number of proposals per chain.
        sigma: handed to ``log_prob`` and ``score``.
        score: ``score(x, sigma)``, the gradient of ``log_prob``; by autograd when omitted.
        return_stats: also return a :class:`MALAStats` (acceptance rate, per-chain counts).
        generator, callback, progress, check_every: as in :func:`langevin`. The callback
            info also holds ``"accepted"`` (``[B]`` bool, this step) and
            ``"acceptance_rate"`` (running overall rate, a 0-d tensor: no sync).

    Returns:
        The final batch, or ``(batch, MALAStats)`` with ``return_stats=True``.
    """
    check_callable("log_prob", log_prob)
    if score is not None:
        check_callable("score", score)
    x = check_batch(x)
    sigma = check_sigma_arg(sigma, x)
    step_size = check_positive_float("step_size", step_size)
    n_steps = check_positive_int("n_steps", n_steps)

    def evaluate(v: Tensor) -> tuple[Tensor, Tensor]:
        if score is None:
            return _value_and_grad(log_prob, v, sigma)
        return log_prob(v, sigma), score(v, sigma)

    batch = x.shape[0]
    logp, grad = evaluate(x)
    if logp.shape != (batch,):
        raise ValueError(f"log_prob must return shape [B] = [{batch}], got {tuple(logp.shape)}")
    accepted = torch.zeros(batch, dtype=torch.long, device=x.device)
    with SamplerLoop(
        "mala",
        n_steps,
        callback=callback,
        progress=progress,
        check_every=check_every,
        hint=lambda *_: (
            f"check log_prob and score, or try a smaller step_size "
            f"(e.g. step_size={step_size / 10:.3g})"
        ),
    ) as loop:
        for i in range(n_steps):
            noise = randn_like(x, generator)
            proposal = langevin_update(x, grad, step_size, 1.0, noise)
            logp_new, grad_new = evaluate(proposal)
            # x' − x − ε s(x) = sqrt(2ε) z, so the forward log-density is −‖z‖²/2.
            log_q_forward = -0.5 * _sq_norm(noise)
            log_q_backward = -_sq_norm(x - proposal - step_size * grad_new) / (4.0 * step_size)
            log_alpha = logp_new - logp + log_q_backward - log_q_forward
            u = torch.rand(batch, generator=generator, device=x.device, dtype=log_alpha.dtype)
            accept = u.log() < log_alpha  # False when log_alpha is NaN
            keep = accept.reshape((batch,) + (1,) * (x.ndim - 1))
            x = torch.where(keep, proposal, x)
            grad = torch.where(keep, grad_new, grad)
            logp = torch.where(accept, logp_new, logp)
            accepted += accept
            extra = {}
            if loop.wants_info:
                extra = {
                    "accepted": accept,
                    "acceptance_rate": accepted.sum() / (batch * (i + 1)),
                }
            loop.step(x, level=0, sigma=sigma, step_size=step_size, **extra)
        loop.finish()
    if not return_stats:
        return x
    rate = accepted.sum().item() / (batch * n_steps)
    return x, MALAStats(acceptance_rate=rate, accepted=accepted, n_steps=n_steps)
