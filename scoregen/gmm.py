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

Layout. The batch is the last dimension: per-component quantities are ``[K, n]`` for ``n``
rows, so the softmax over K runs across contiguous rows (on one CPU thread, rows come in
chunks sized to stay in cache). For scalar and diagonal covariances at one σ, the quadratic forms come from
one matrix product: with ``x_c = x − c`` and ``μ_c = μ − c`` centred on the mixture mean,

    Σ_j (x_cj − μ_ckj)² / v_kj  =  Σ_j x_cj² / v_kj − 2 Σ_j x_cj μ_ckj / v_kj + Σ_j μ_ckj² / v_kj

is ``[K, 2d] @ [2d, n]`` (scalar covariances at per-example σ likewise, ``|x_c − μ_ck|²`` by
one product). The score and the posterior mean are a second product of the responsibilities
with ``[1/v, μ_c/v]`` or ``[λ/v, σ²μ_c/v]``. The expansion rounds relative to
``(|x_c| + |μ_c|)² / v`` instead of ``(x − μ)² / v``: it cancels when a point sits near a
tight component far from the centre. A guard bounds that loss per row and redoes the rows
where it could exceed 2¹⁰ times the direct form's rounding by the direct form (rotated
residuals ``z_k = U_kᵀ(x − μ_k)`` as ``[K, d, n]``), which full covariances and diagonal ones
at per-example σ always use. In float64 the results match the direct form to 1e-12 of each
quantity's size; a float32 mixture (``dtype=torch.float32`` or ``.to(dtype=torch.float32)``)
computes in float32, within about 3e-5 (relative) of float64 on the presets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GaussianMixture", "PRESETS", "preset"]

_LOG_2PI = math.log(2.0 * math.pi)
# Rows per chunk are chosen so that each [K, n] (or [K, d, n]) intermediate holds about this
# many numbers. On one thread, 2^20 (8 MB in float64) keeps the chain of elementwise passes in
# cache. With several threads every op is a parallel region whose threads wait for each other,
# and on a machine shared with other processes each wait can cost a scheduler time slice: then
# few large ops win (experiments/bench/cpu.py --chunk compares the settings).
_CHUNK_ELEMENTS = 1 << 20
_THREADED_CHUNK_ELEMENTS = 1 << 25
# The expanded quadratic form may lose this factor of accuracy against the direct form before
# a row is redone directly (10 bits: 1e-16 relative rounding stays below 1e-12).
_EXPANSION_LOSS = 1024.0
# log of the smallest normal number, plus a margin: exp() below it would be subnormal.
_EXP_FLOOR = {
    dtype: math.log(torch.finfo(dtype).tiny) + 8.0
    for dtype in (torch.float64, torch.float32, torch.bfloat16)
}


class GaussianMixture:
    """A mixture ``Σ_k w_k N(μ_k, Σ_k)`` in ``d >= 1`` dimensions with ``K >= 1`` components.

    Args:
        weights: ``[K]`` non-negative, summing to 1.
        means: ``[K, d]``.
        covs: per-component scalar variances ``[K]``, diagonals ``[K, d]`` or full
            symmetric positive-definite matrices ``[K, d, d]``.
        dtype: float64 by default; every computation runs in this dtype and results are
            returned in the dtype of the input batch. float32 is several times faster on
            large batches and accurate to about 1e-4 relative.
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
        # equal variances along every axis (scalar covariances, or diagonal ones that are)
        self._isotropic = eigvecs is None and bool((eigvals == eigvals[:, :1]).all())

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

    def _sigma2(self, sigma, batch: int) -> float | Tensor:
        """σ² as a float when one σ serves the whole batch, else as a ``[B]`` tensor."""
        if not isinstance(sigma, Tensor):
            return _check_sigma_float(sigma) ** 2
        sigma = self._sigma(sigma, batch)[:, 0, 0]
        # A [B] tensor holding one value (samplers pass torch.full) takes the one-σ path;
        # a σ that carries gradients stays a tensor so that they flow.
        if not sigma.requires_grad and (batch == 0 or bool((sigma == sigma[0]).all())):
            return float(sigma[0]) ** 2 if batch else 0.0
        return sigma**2

    def _needs_grad(self, x: Tensor, sigma2) -> bool:
        """Whether autograd records this call (then no intermediate is overwritten in place)."""
        if not torch.is_grad_enabled():
            return False
        tensors = (x, self.weights, self.means, self.eigvals, self.eigvecs, sigma2)
        return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)

    def _evaluate(self, x: Tensor, sigma, kind: str) -> Tensor:
        """``kind`` (log_prob ``[B]``, responsibilities ``[B, K]``, score or denoise ``[B, d]``)
        of a flat batch ``[B, d]`` in the mixture's dtype.

        On one CPU thread the batch is taken in row chunks small enough for every
        intermediate to stay in cache; with several threads, or on a GPU, in large pieces
        (few parallel regions, few kernel launches). Scalar and diagonal covariances at one σ (and scalar ones at per-example σ)
        use the expanded quadratic form; rows where its rounding could exceed the direct
        form's by more than ``_EXPANSION_LOSS`` are redone by the direct form, which full
        covariances and diagonal ones at per-example σ always use.
        """
        batch, dim, n_comp = x.shape[0], self.dim, self.n_components
        if torch.compiler.is_compiling():
            # One traceable graph for torch.compile (scoregen.compiled): the direct formula in
            # one piece, without chunks, the rounding guard or value checks, all of which
            # read tensors on the host; inductor fuses it into a few kernels.
            if isinstance(sigma, Tensor):
                sigma2 = sigma.to(self.device, self.dtype).reshape(-1).expand(batch) ** 2
            else:
                sigma2 = float(sigma) ** 2
            return self._direct_chunk(x, sigma2, kind, inplace=False)
        sigma2 = self._sigma2(sigma, batch)
        per_example = isinstance(sigma2, Tensor)
        expanded = self.eigvecs is None and (not per_example or self._isotropic)
        inplace = not self._needs_grad(x, sigma2)
        terms = self._expansion_terms(sigma2) if expanded else None
        width = {"log_prob": (), "responsibilities": (n_comp,)}.get(kind, (dim,))
        out = x.new_empty(batch, *width)
        per_row = max(n_comp, 2 * dim) if expanded else n_comp * dim
        if x.device.type == "cpu":
            threaded = torch.get_num_threads() > 1
            budget = _THREADED_CHUNK_ELEMENTS if threaded else _CHUNK_ELEMENTS
            step = max(1, budget // per_row)
        else:  # a GPU takes the batch whole
            step = max(batch, 1)
        if self.eigvecs is not None:
            # each chunk reads every U_k ([K, d, d]) twice: enough rows to pay for it
            step = max(step, 256)
        for start in range(0, batch, step):
            rows = slice(start, start + step)
            s2 = sigma2[rows] if per_example else sigma2
            if expanded:
                value, redo = self._expanded_chunk(x[rows], s2, terms, kind, inplace)
                if redo is not None and bool(redo.any()):
                    index = redo.nonzero()[:, 0]
                    exact = self._direct_chunk(
                        x[rows][index], s2[index] if per_example else s2, kind, inplace
                    )
                    value = value.index_put((index,), exact)
            else:
                value = self._direct_chunk(x[rows], s2, kind, inplace)
            if batch <= step:
                return value.contiguous()
            out[rows] = value
        return out

    def _expansion_terms(self, sigma2) -> dict[str, Tensor]:
        """What the expanded form needs at σ² (a float) or per example (a ``[B]`` tensor).

        Positions are centred on the mixture mean ``c``: ``x_c = x − c``, ``μ_c = μ − c``.
        """
        centre = self.weights @ self.means
        means_c = self.means - centre
        positive = self.weights > 0
        terms = {
            "centre": centre,
            "means_c": means_c,
            # |μ_c| per coordinate, the largest over components (for the rounding bound)
            "spread": means_c.abs().amax(0),
            "log_w_min": self.log_weights[positive].min(),
        }
        if isinstance(sigma2, Tensor):
            terms["sq_norm_means"] = (means_c**2).sum(1)
            return terms
        var = self.eigvals + sigma2  # [K, d]
        inv = 1.0 / var
        base = self.log_weights - 0.5 * (torch.log(var).sum(1) + self.dim * _LOG_2PI)
        terms.update(
            inv=inv,
            # joint_k = base_k − ½ Σ_j inv_kj (x_cj − μ_ckj)²
            #         = base_k − ½ Σ_j μ_ckj² inv_kj  +  [−½ inv_k, μ_ck inv_k] · [x_c², x_c]
            bias=base - 0.5 * (means_c**2 * inv).sum(1),
            weights=torch.cat([-0.5 * inv, means_c * inv], dim=1),  # [K, 2d]
            base_min=base[positive].min(),
            inv_max=inv.amax(0),  # [d]
        )
        return terms

    def _expanded_chunk(self, x: Tensor, sigma2, terms, kind: str, inplace: bool):
        """``kind`` for rows ``x`` ``[n, d]`` from the expanded quadratic form, and the rows
        whose rounding bound fails the guard.

        Layout ``[K, n]``: the joint log-densities come out of one matrix product
        ``[K, 2d] @ [2d, n]`` and the softmax over K reduces across rows of contiguous memory.
        """
        dim, n = self.dim, x.shape[0]
        means_c, spread, centre = terms["means_c"], terms["spread"], terms["centre"]
        if inplace:  # [x_c², x_c] written straight into the [2d, n] operand of the product
            stacked = x.new_empty(2 * dim, n)
            sq, xc = stacked[:dim], stacked[dim:]
            torch.sub(x.T, centre[:, None], out=xc)
            torch.mul(xc, xc, out=sq)
        else:  # out= arguments do not record gradients
            xc = (x - centre).T
            sq = xc * xc
            stacked = torch.cat([sq, xc])
        if isinstance(sigma2, Tensor):
            # isotropic components: joint_k = log w_k − ½ (d log v_k + d log 2π + |x_c − μ_ck|² / v_k)
            lam = self.eigvals[:, 0]
            var = lam[:, None] + sigma2  # [K, n]
            inv = 1.0 / var
            dist2 = torch.addmm(terms["sq_norm_means"][:, None], means_c, xc, alpha=-2.0)
            dist2 = dist2 + sq.sum(0)
            joint = self.log_weights[:, None] - 0.5 * (
                dist2 * inv + dim * torch.log(var) + dim * _LOG_2PI
            )
            base_min = terms["log_w_min"] - 0.5 * dim * (torch.log(lam.amax() + sigma2) + _LOG_2PI)
            inv_max = (1.0 / (lam.amin() + sigma2))[None]  # [1, n]
        else:
            joint = torch.addmm(terms["bias"][:, None], terms["weights"], stacked)
            base_min = terms["base_min"]
            inv_max = terms["inv_max"][:, None]  # [d, 1]
        expo, total, peak = _shifted_exp(joint, inplace)
        redo = _rounding_guard(xc, spread, inv_max, base_min - peak)
        if kind == "log_prob":
            return peak + torch.log(total), redo
        if kind == "responsibilities":
            return (expo / total).T, redo
        if isinstance(sigma2, Tensor):
            # per-example variances: weights r_k / v_k (score), r_k λ_k / v_k and r_k σ² / v_k
            if kind == "score":
                scaled = expo * inv
                out = means_c.T @ scaled - xc * scaled.sum(0)
            else:
                shrink = (expo * (lam[:, None] * inv)).sum(0)
                out = xc * shrink + means_c.T @ (expo * (sigma2 * inv))
        else:
            inv = terms["inv"]
            if kind == "score":
                # −Σ_k r_k (x_c − μ_ck) / v_k
                mixed = torch.cat([inv, means_c * inv], dim=1).T @ expo  # [2d, n]
                out = torch.addcmul(mixed[dim:], xc, mixed[:dim], value=-1.0)
            else:
                # m_k = μ_k + λ_k/v_k (x − μ_k) = c + (λ_k/v_k) x_c + (σ²/v_k) μ_ck
                shrink = self.eigvals * inv
                mixed = torch.cat([shrink, (sigma2 * inv) * means_c], dim=1).T @ expo
                out = torch.addcmul(mixed[dim:], xc, mixed[:dim])
        out = (out / total).T
        return (out + terms["centre"] if kind == "denoise" else out), redo

    def _direct_chunk(self, x: Tensor, sigma2, kind: str, inplace: bool) -> Tensor:
        """``kind`` for rows ``x`` ``[n, d]`` from the rotated residuals ``z_k = U_kᵀ(x − μ_k)``,
        laid out ``[K, d, n]`` (the module docstring's formulas, term by term)."""
        diff = x.T[None] - self.means[:, :, None]  # [K, d, n]
        if self.eigvecs is not None:
            diff = torch.bmm(self.eigvecs.transpose(1, 2), diff)
        var = self.eigvals[:, :, None] + sigma2  # [K, d, 1] or, per example, [K, d, n]
        scaled = diff / var  # (Σ_k + σ²I)⁻¹ (x − μ_k) in the eigenbasis
        quad = (diff * scaled).sum(1)
        logdet = torch.log(var).sum(1)
        joint = self.log_weights[:, None] - 0.5 * (quad + logdet + self.dim * _LOG_2PI)
        expo, total, peak = _shifted_exp(joint, inplace)
        if kind == "log_prob":
            return peak + torch.log(total)
        if kind == "responsibilities":
            return (expo / total).T
        if kind == "score":
            weighted = -expo[:, None] * scaled
        else:
            weighted = expo[:, None] * (self.eigvals[:, :, None] * scaled)
        if self.eigvecs is None:
            out = weighted.sum(0)
        else:  # Σ_k U_k w_k as one product [d, K d] @ [K d, n]
            unrotate = self.eigvecs.permute(1, 0, 2).reshape(self.dim, -1)
            out = unrotate @ weighted.reshape(-1, weighted.shape[-1])
        if kind == "denoise":
            out = out + self.means.T @ expo
        return (out / total).T

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

    # ------------------------------------------------------------------ densities and scores
    def log_prob(self, x: Tensor, sigma=0.0) -> Tensor:
        """``log p_σ(x)``, ``[B]``, with ``p_σ = Σ w_k N(μ_k, Σ_k + σ²I)``."""
        x, _, out_dtype = self._flatten(x)
        return self._evaluate(x, sigma, "log_prob").to(out_dtype)

    def responsibilities(self, x: Tensor, sigma=0.0) -> Tensor:
        """``P(component k | x)`` under ``p_σ``, ``[B, K]``: the posterior mixture weights."""
        x, _, out_dtype = self._flatten(x)
        return self._evaluate(x, sigma, "responsibilities").to(out_dtype)

    def score(self, x: Tensor, sigma=0.0) -> Tensor:
        """``∇_x log p_σ(x) = −Σ_k r_k(x) (Σ_k + σ²I)⁻¹ (x − μ_k)``, shaped like ``x``."""
        flat, shape, out_dtype = self._flatten(x)
        return self._evaluate(flat, sigma, "score").reshape(shape).to(out_dtype)

    def denoise(self, y: Tensor, sigma) -> Tensor:
        """The exact MMSE denoiser ``E[x | y = x + σz] = Σ_k w'_k m_k``, shaped like ``y``.

        ``m_k = μ_k + Σ_k (Σ_k + σ²I)⁻¹ (y − μ_k)``; equals ``y + σ² score(y, σ)`` (Tweedie).
        """
        flat, shape, out_dtype = self._flatten(y, "y")
        return self._evaluate(flat, sigma, "denoise").reshape(shape).to(out_dtype)

    def _posterior_terms(self, y: Tensor, sigma):
        """Posterior log-weights ``[B, K]``, means ``[B, K, d]`` and eigenvalues of ``S_k``."""
        z = self._rotate(y)
        sigma2 = self._sigma(sigma, y.shape[0]) ** 2  # [B or 1, 1, 1]
        var = self.eigvals[None] + sigma2  # [B or 1, K, d]
        quad = (z**2 / var).sum(-1)
        joint = self.log_weights - 0.5 * (quad + torch.log(var).sum(-1) + self.dim * _LOG_2PI)
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


def _rounding_guard(xc: Tensor, spread: Tensor, inv_max: Tensor, half_quad: Tensor):
    """Rows ``[n]`` (bool, or None for none) where the expanded quadratic form may round worse
    than ``_EXPANSION_LOSS`` times the direct form.

    The direct form rounds relative to its terms, ``½ (x − μ_k)ᵀ(Σ_k + σ²I)⁻¹(x − μ_k)`` of the
    dominant component (at least ``half_quad``, read off the largest joint log-density) plus
    the ``d`` constants; the expanded form relative to ``½ Σ_j (|x_cj| + |μ_cj|)² / v_j``
    (``xc`` ``[d, n]``, ``spread`` the largest ``|μ_cj|`` ``[d]``, ``inv_max`` the largest
    ``1/v_j`` ``[d, 1]`` or, per example, ``[1, n]``). That bound grows with ``|x_c|``: taken
    at the chunk's largest ``|x_cj|`` it usually clears every row at once.
    """
    dim = xc.shape[0]
    low, high = torch.aminmax(xc, dim=1)
    reach = torch.maximum(high, -low)[:, None]
    limit = _EXPANSION_LOSS * dim
    if bool((0.5 * ((reach + spread[:, None]) ** 2 * inv_max).sum(0) <= limit).all()):
        return None
    bound = 0.5 * (((xc.abs() + spread[:, None]) ** 2) * inv_max).sum(0)
    return bound > _EXPANSION_LOSS * (half_quad.clamp_min(0.0) + dim)


def _shifted_exp(joint: Tensor, inplace: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``exp(joint − max_k joint)`` ``[K, n]``, its sum over K and the max (both ``[n]``).

    Exponents below ``_EXP_FLOOR`` are raised to it: their terms are below the rounding of
    the dominant term's 1 either way, and ``exp`` of a number whose result is subnormal
    runs an order of magnitude slower on CPUs.
    """
    peak = joint.amax(0)
    floor = _EXP_FLOOR[joint.dtype] if joint.dtype in _EXP_FLOOR else -math.inf
    if inplace:
        expo = joint.sub_(peak).clamp_(min=floor).exp_()
    else:
        expo = (joint - peak).clamp(min=floor).exp()
    return expo, expo.sum(0), peak


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
