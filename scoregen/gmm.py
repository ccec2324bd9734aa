"""Exact Gaussian mixtures: the ground truth every denoiser, score and sampler is checked against.

A mixture ``p = Σ_k w_k N(μ_k, Σ_k)`` blurred by Gaussian noise of level σ stays a mixture,
``p_σ = Σ_k w_k N(μ_k, Σ_k + σ²I)``, and the posterior of one noisy observation
``y = x + σz`` is again a mixture (DESIGN.md):

    S_k  = (Σ_k⁻¹ + σ⁻² I)⁻¹
    m_k  = S_k (Σ_k⁻¹ μ_k + y / σ²)  =  μ_k + Σ_k (Σ_k + σ²I)⁻¹ (y − μ_k)
    w'_k ∝ w_k N(y; μ_k, Σ_k + σ²I)

Every covariance is held through its eigendecomposition ``Σ_k = U_k diag(λ_k) U_kᵀ``
(``U_k = I`` for scalar and diagonal covariances), computed once. All the matrices above
share the eigenvectors of ``Σ_k``, so for any σ they are diagonal in that basis:
``Σ_k + σ²I`` has eigenvalues ``λ + σ²`` and ``S_k`` has ``λσ²/(λ + σ²)``. That makes
every σ cost the same as σ = 0, needs no inverse, and has no cancellation at either end
of σ ∈ [1e-4, 1e3].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GaussianMixture", "PRESETS", "preset"]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture:
    """A mixture ``Σ_k w_k N(μ_k, Σ_k)`` in ``d >= 1`` dimensions with ``K >= 1`` components.

    Args:
        weights: ``[K]`` non-negative, summing to 1.
        means: ``[K, d]``.
        covs: per-component scalar variances ``[K]``, diagonals ``[K, d]`` or full
            symmetric positive-definite matrices ``[K, d, d]``.
        dtype: float64 by default; every computation runs in this dtype and results are
            returned in the dtype of the input batch.
        device: where the parameters live; inputs are moved there.

    Every method takes a batch ``[B, d]`` (or ``[B, ...]`` whose trailing dims hold ``d``
    numbers, e.g. images) and σ as a float or a ``[B]`` tensor.
    """

    def __init__(
        self,
        weights,
        means,
        covs,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ):
        weights = torch.as_tensor(weights, dtype=dtype, device=device)
        means = torch.as_tensor(means, dtype=dtype, device=device)
        covs = torch.as_tensor(covs, dtype=dtype, device=device)
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(f"weights must have shape [K] with K >= 1, got {tuple(weights.shape)}")
        n_components = weights.shape[0]
        if means.ndim != 2 or means.shape[0] != n_components or means.shape[1] == 0:
            raise ValueError(
                f"means must have shape [K, d] = [{n_components}, d] with d >= 1, "
                f"got {tuple(means.shape)}"
            )
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"weights must be finite and non-negative, got {weights.tolist()}")
        total = float(weights.sum())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1 (within 1e-6), got sum {total:.8g}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite")
        dim = means.shape[1]
        if covs.shape == (n_components,):
            cov_type, eigvals, eigvecs = "scalar", covs[:, None].expand(n_components, dim), None
        elif covs.shape == (n_components, dim):
            cov_type, eigvals, eigvecs = "diag", covs, None
        elif covs.shape == (n_components, dim, dim):
            if not torch.isfinite(covs).all():
                raise ValueError("covs must be finite")
            asym = (covs - covs.transpose(-1, -2)).abs().max()
            if asym > 1e-8 * covs.abs().max().clamp_min(1.0):
                raise ValueError(f"covs must be symmetric, largest asymmetry {float(asym):.3g}")
            cov_type = "full"
            eigvals, eigvecs = torch.linalg.eigh(0.5 * (covs + covs.transpose(-1, -2)))
        else:
            raise ValueError(
                f"covs must have shape [K]={[n_components]}, [K, d]={[n_components, dim]} or "
                f"[K, d, d]={[n_components, dim, dim]}, got {list(covs.shape)}"
            )
        if not torch.isfinite(eigvals).all() or (eigvals <= 0).any():
            raise ValueError(
                f"covs must be positive definite; smallest variance {float(eigvals.min()):.3g}"
            )
        self._init(weights, means, eigvals.contiguous(), eigvecs, cov_type)

    def _init(self, weights, means, eigvals, eigvecs, cov_type):
        self.weights = weights
        self.means = means
        self.eigvals = eigvals  # [K, d]
        self.eigvecs = eigvecs  # [K, d, d] or None (identity)
        self.cov_type = cov_type
        self.log_weights = torch.log(weights)

    @classmethod
    def _from_eig(cls, weights, means, eigvals, eigvecs, cov_type) -> GaussianMixture:
        gm = cls.__new__(cls)
        gm._init(weights, means, eigvals, eigvecs, cov_type)
        return gm

    # ------------------------------------------------------------------ basic properties
    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(K={self.n_components}, d={self.dim}, covs={self.cov_type}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(self, device=None, dtype=None) -> GaussianMixture:
        """The same mixture on another device and/or dtype."""

        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return self._from_eig(
            move(self.weights),
            move(self.means),
            move(self.eigvals),
            move(self.eigvecs),
            self.cov_type,
        )

    @property
    def covs(self) -> Tensor:
        """Full covariance matrices ``[K, d, d]``."""
        if self.eigvecs is None:
            return torch.diag_embed(self.eigvals)
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(-1, -2)

    def mean(self) -> Tensor:
        """Mixture mean ``Σ w_k μ_k``, ``[d]``."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Mixture covariance ``Σ w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ``, ``[d, d]``."""
        m = self.mean()
        centred = self.means - m
        second = self.covs + centred[:, :, None] * centred[:, None, :]
        return torch.einsum("k,kij->ij", self.weights, second)

    def blurred(self, sigma: float) -> GaussianMixture:
        """The mixture ``p_σ = Σ w_k N(μ_k, Σ_k + σ²I)`` of ``x + σz``."""
        sigma = _check_sigma_float(sigma)
        cov_type = "diag" if self.cov_type == "scalar" and sigma > 0 else self.cov_type
        return self._from_eig(
            self.weights, self.means, self.eigvals + sigma**2, self.eigvecs, cov_type
        )

    # ------------------------------------------------------------------ internals
    def _flatten(self, x: Tensor, name: str = "x") -> tuple[Tensor, torch.Size, torch.dtype]:
        """``[B, ...]`` -> ``[B, d]`` in the mixture's dtype and device."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.dim:
            raise ValueError(
                f"{name} must be a batch [B, {self.dim}] (or [B, ...] holding {self.dim} "
                f"numbers per item), got shape {tuple(x.shape)}"
            )
        out_dtype = x.dtype if x.is_floating_point() else self.dtype
        return x.reshape(x.shape[0], self.dim).to(self.device, self.dtype), x.shape, out_dtype

    def _sigma(self, sigma, batch: int) -> Tensor:
        """σ as a ``[B, 1, 1]`` tensor (broadcast against ``[B, K, d]``)."""
        if isinstance(sigma, Tensor):
            sigma = sigma.to(self.device, self.dtype)
            if sigma.ndim == 0:
                sigma = sigma.expand(batch)
            if sigma.shape != (batch,):
                raise ValueError(
                    f"sigma must be a float or a [B] = [{batch}] tensor, "
                    f"got shape {tuple(sigma.shape)}"
                )
            if (sigma < 0).any() or not torch.isfinite(sigma).all():
                raise ValueError("sigma must be finite and >= 0")
            return sigma[:, None, None]
        sigma = _check_sigma_float(sigma)
        return torch.full((1, 1, 1), sigma, dtype=self.dtype, device=self.device)

    def _rotate(self, x: Tensor) -> Tensor:
        """``z_k = U_kᵀ (x − μ_k)``, ``[B, K, d]``."""
        diff = x[:, None, :] - self.means[None]
        if self.eigvecs is None:
            return diff
        return torch.einsum("kji,bkj->bki", self.eigvecs, diff)

    def _unrotate(self, z: Tensor) -> Tensor:
        """``U_k z_k``, ``[B, K, d]``."""
        if self.eigvecs is None:
            return z
        return torch.einsum("kij,bkj->bki", self.eigvecs, z)

    def _component_log_probs(self, z: Tensor, var: Tensor) -> Tensor:
        """``log w_k + log N(x; μ_k, Σ_k + σ²I)`` from rotated ``z`` and variances ``var``."""
        quad = (z**2 / var).sum(-1)
        logdet = torch.log(var).sum(-1)
        return self.log_weights - 0.5 * (quad + logdet + self.dim * _LOG_2PI)

    def _blur_terms(self, x: Tensor, sigma):
        """Rotated residuals, blurred variances and responsibilities at ``(x, σ)``."""
        z = self._rotate(x)
        sigma2 = self._sigma(sigma, x.shape[0]) ** 2  # [B or 1, 1, 1]
        var = self.eigvals[None] + sigma2  # [B or 1, K, d]
        joint = self._component_log_probs(z, var)  # [B, K]
        return z, var, joint, sigma2

    # ------------------------------------------------------------------ densities and scores
    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """``log p_σ(x)``, ``[B]``, with ``p_σ = Σ w_k N(μ_k, Σ_k + σ²I)``."""
        x, _, out_dtype = self._flatten(x)
        joint = self._blur_terms(x, sigma)[2]
        return torch.logsumexp(joint, dim=-1).to(out_dtype)

    def responsibilities(self, x: Tensor, sigma=0.0) -> Tensor:
        """``P(component k | x)`` under ``p_σ``, ``[B, K]``: the posterior mixture weights."""
        x, _, out_dtype = self._flatten(x)
        joint = self._blur_terms(x, sigma)[2]
        return torch.softmax(joint, dim=-1).to(out_dtype)

    def score(self, x: Tensor, sigma=0.0) -> Tensor:
        """``∇_x log p_σ(x) = −Σ_k r_k(x) (Σ_k + σ²I)⁻¹ (x − μ_k)``, shaped like ``x``."""
        flat, shape, out_dtype = self._flatten(x)
        z, var, joint, _ = self._blur_terms(flat, sigma)
        resp = torch.softmax(joint, dim=-1)
        grad = -(resp[..., None] * self._unrotate(z / var)).sum(1)
        return grad.reshape(shape).to(out_dtype)

    def denoise(self, y: Tensor, sigma) -> Tensor:
        """The exact MMSE denoiser ``E[x | y = x + σz] = Σ_k w'_k m_k``, shaped like ``y``.

        ``m_k = μ_k + Σ_k (Σ_k + σ²I)⁻¹ (y − μ_k)``; equals ``y + σ² score(y, σ)`` (Tweedie).
        """
        flat, shape, out_dtype = self._flatten(y, "y")
        z, var, joint, _ = self._blur_terms(flat, sigma)
        resp = torch.softmax(joint, dim=-1)
        means = self.means + self._unrotate(self.eigvals * z / var)  # m_k, [B, K, d]
        return (resp[..., None] * means).sum(1).reshape(shape).to(out_dtype)

    def _posterior_terms(self, y: Tensor, sigma):
        """Posterior log-weights ``[B, K]``, means ``[B, K, d]`` and eigenvalues of ``S_k``."""
        z, var, joint, sigma2 = self._blur_terms(y, sigma)
        log_w = torch.log_softmax(joint, dim=-1)
        means = self.means + self._unrotate(self.eigvals * z / var)
        post_vals = self.eigvals * sigma2 / var  # λσ²/(λ+σ²), [B or 1, K, d]
        return log_w, means, post_vals

    def posterior(self, y: Tensor, sigma: float) -> GaussianMixture:
        """The exact posterior ``p(x | y)`` of one observation ``y`` (``[d]`` or ``[1, d]``).

        It is the mixture ``Σ w'_k N(m_k, S_k)`` with the formulas in the module docstring.
        """
        sigma = _check_sigma_float(sigma, positive=True)
        if isinstance(y, Tensor) and y.ndim == 1:
            y = y[None]
        flat, _, _ = self._flatten(y, "y")
        if flat.shape[0] != 1:
            raise ValueError(
                f"y must be one observation ([d] or [1, d]), got a batch of {flat.shape[0]}"
            )
        log_w, means, post_vals = self._posterior_terms(flat, sigma)
        post_vals = post_vals[0]
        cov_type = "full" if self.eigvecs is not None else "diag"
        return self._from_eig(log_w[0].exp(), means[0], post_vals, self.eigvecs, cov_type)

    # ------------------------------------------------------------------ modes
    def map(self, y: Tensor, sigma, *, max_iter: int = 500, tol: float = 1e-12) -> Tensor:
        """The posterior mode ``argmax_x p(x | y)`` for each ``y`` in the batch.

        Multi-start: one ascent from each component's posterior mean ``m_k``; the best of
        the K local maxima is returned. See :func:`mixture_modes` for the iteration.
        """
        flat, shape, out_dtype = self._flatten(y, "y")
        sigma_t = self._sigma(sigma, flat.shape[0])
        if (sigma_t <= 0).any():
            raise ValueError("sigma must be > 0 for the posterior mode (at σ = 0 it is y)")
        log_w, means, post_vals = self._posterior_terms(flat, sigma)
        post_vals = post_vals.expand(flat.shape[0], self.n_components, self.dim)
        modes, _ = mixture_modes(log_w, means, post_vals, self.eigvecs, max_iter, tol)
        return modes.reshape(shape).to(out_dtype)

    def mode(self, *, max_iter: int = 500, tol: float = 1e-12) -> Tensor:
        """The global mode of the mixture itself, ``[d]``."""
        modes, _ = mixture_modes(
            self.log_weights[None],
            self.means[None],
            self.eigvals[None],
            self.eigvecs,
            max_iter,
            tol,
        )
        return modes[0]

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws, ``[n, d]``, in the mixture's dtype and device."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        comp = (
            torch.multinomial(self.weights, n, replacement=True, generator=generator)
            if n > 0
            else torch.zeros(0, dtype=torch.long, device=self.device)
        )
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        z = eps * self.eigvals[comp].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nij,nj->ni", self.eigvecs[comp], z)
        return self.means[comp] + z


def _check_sigma_float(sigma, positive: bool = False) -> float:
    if isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a single number here, got shape {tuple(sigma.shape)}")
        sigma = sigma.item()
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a number, got {type(sigma).__name__}") from None
    if not math.isfinite(sigma) or sigma < 0 or (positive and sigma == 0):
        allowed = "> 0" if positive else ">= 0"
        raise ValueError(f"sigma must be finite and {allowed}, got {sigma}")
    return sigma


def mixture_modes(
    log_weights: Tensor,
    means: Tensor,
    eigvals: Tensor,
    eigvecs: Tensor | None,
    max_iter: int = 500,
    tol: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Global modes of a batch of mixtures sharing eigenvectors per component.

    Mixture b is ``Σ_k exp(log_weights[b, k]) N(means[b, k], U_k diag(eigvals[b, k]) U_kᵀ)``.
    One ascent starts at every component mean (B·K chains at once). Each iteration takes
    a Newton step on ``log p`` where the Hessian is negative definite and the step raises
    ``log p`` (d <= 64), and the monotone fixed-point step otherwise,
    ``x ← (Σ r_k P_k)⁻¹ Σ r_k P_k m_k`` with ``P_k`` the component precisions (every
    stationary point of the mixture solves it, and ``log p`` never decreases along it).
    Returns the best mode per mixture ``[B, d]`` and its log-density ``[B]``.
    """
    batch, n_comp, dim = means.shape
    # chains: [B, K (start), d]; evaluated against mixture b's K components
    x = means.clone()
    prec = 1.0 / eigvals  # [B, K, d] eigenvalues of P_k
    use_newton = dim <= 64

    def rotate(v):  # v [B, S, d] -> U_kᵀ(v − μ_k) [B, S, K, d]
        diff = v[:, :, None, :] - means[:, None]
        return diff if eigvecs is None else torch.einsum("kji,bskj->bski", eigvecs, diff)

    def unrotate(z):  # [B, S, K, d] -> U_k z
        return z if eigvecs is None else torch.einsum("kij,bskj->bski", eigvecs, z)

    def evaluate(v):
        z = rotate(v)
        comp = log_weights[:, None] - 0.5 * (
            (z**2 * prec[:, None]).sum(-1) + torch.log(eigvals).sum(-1)[:, None] + dim * _LOG_2PI
        )
        logp = torch.logsumexp(comp, dim=-1)
        resp = torch.softmax(comp, dim=-1)
        return z, logp, resp

    def precision_matrix(resp):  # Σ_k r_k P_k as dense [B, S, d, d]
        if eigvecs is None:
            return torch.diag_embed(torch.einsum("bsk,bkd->bsd", resp, prec))
        mats = eigvecs @ torch.diag_embed(prec) @ eigvecs.transpose(-1, -2)  # [B, K, d, d]
        return torch.einsum("bsk,bkij->bsij", resp, mats)

    def fixed_point(resp):
        if eigvecs is None:  # diagonal precisions: elementwise
            num = torch.einsum("bsk,bkd,bkd->bsd", resp, prec, means)
            return num / torch.einsum("bsk,bkd->bsd", resp, prec)
        mats = eigvecs @ torch.diag_embed(prec) @ eigvecs.transpose(-1, -2)
        rhs = torch.einsum("bsk,bkij,bkj->bsi", resp, mats, means)
        return torch.linalg.solve(precision_matrix(resp), rhs)

    z, logp, resp = evaluate(x)
    for _ in range(max_iter):
        fp = fixed_point(resp)
        candidate = fp
        if use_newton:
            g_k = -unrotate(z * prec[:, None])  # per-component gradients [B, S, K, d]
            grad = (resp[..., None] * g_k).sum(2)
            hess = (
                torch.einsum("bsk,bski,bskj->bsij", resp, g_k, g_k)
                - precision_matrix(resp)
                - grad[..., :, None] * grad[..., None, :]
            )
            newton = x - torch.linalg.solve(hess, grad[..., None])[..., 0]
            neg_def = torch.linalg.eigvalsh(hess).amax(-1) < 0
            _, logp_newton, _ = evaluate(newton)
            _, logp_fp, _ = evaluate(fp)
            better = neg_def & torch.isfinite(logp_newton) & (logp_newton >= logp_fp)
            candidate = torch.where(better[..., None], newton, fp)
        step = (candidate - x).abs().amax()
        scale = x.abs().amax().clamp_min(1.0)
        x = candidate
        z, logp, resp = evaluate(x)
        if step <= tol * scale:
            break
    best = logp.argmax(dim=1)
    index = best[:, None, None].expand(batch, 1, dim)
    return x.gather(1, index)[:, 0], logp.gather(1, best[:, None])[:, 0]


# ---------------------------------------------------------------------- presets
def ncsn_two_mode(**kwargs) -> GaussianMixture:
    """The toy of the NCSN paper: weights 0.8/0.2 at (5, 5) and (−5, −5), identity covariances."""
    return GaussianMixture([0.8, 0.2], [[5.0, 5.0], [-5.0, -5.0]], [1.0, 1.0], **kwargs)


def bimodal_1d(**kwargs) -> GaussianMixture:
    """1-D prior 0.7 N(−2, 0.5²) + 0.3 N(2, 0.5²): at σ ≈ 1 the posterior mean falls
    between the modes while the MAP sits on one of them and jumps as y crosses over."""
    return GaussianMixture([0.7, 0.3], [[-2.0], [2.0]], [0.25, 0.25], **kwargs)


def ring8(radius: float = 5.0, std: float = 0.4, **kwargs) -> GaussianMixture:
    """Eight equal Gaussians evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    # float64: torch.full's default float32 would round 0.4² to 0.1599999964
    weights = torch.full((8,), 1 / 8, dtype=torch.float64)
    variances = torch.full((8,), std**2, dtype=torch.float64)
    return GaussianMixture(weights, means, variances, **kwargs)


def grid25(spacing: float = 2.0, std: float = 0.3, **kwargs) -> GaussianMixture:
    """A 5×5 grid of equal Gaussians centred on the origin."""
    ticks = (torch.arange(5, dtype=torch.float64) - 2) * spacing
    means = torch.cartesian_prod(ticks, ticks)
    weights = torch.full((25,), 1 / 25, dtype=torch.float64)  # float64: 1/25 is inexact in float32
    variances = torch.full((25,), std**2, dtype=torch.float64)
    return GaussianMixture(weights, means, variances, **kwargs)


PRESETS: dict[str, Callable[..., GaussianMixture]] = {
    "ncsn2d": ncsn_two_mode,
    "bimodal1d": bimodal_1d,
    "ring8": ring8,
    "grid25": grid25,
}


def preset(name: str, **kwargs) -> GaussianMixture:
    """A named toy mixture: one of :data:`PRESETS`."""
    if name not in PRESETS:
        raise ValueError(f"unknown mixture preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**kwargs)
