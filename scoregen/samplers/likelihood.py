"""The Gaussian likelihood of a linear inverse problem ``y = A x + σ_n n``: its gradient, the
norm ``‖AᵀA‖``, the data-consistency (proximal) step, and the map into a model's coordinates."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from scoregen._util import check_positive_int
from scoregen.samplers._common import check_batch, check_callable, sigma_list

__all__ = ["GaussianLikelihood", "conjugate_gradient"]


def _noise_sigma(noise_sigma, physics) -> float:
    if noise_sigma is None:
        # deepinv physics carry their Gaussian noise level as physics.noise_model.sigma.
        noise_sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
        if noise_sigma is None:
            raise ValueError(
                "noise_sigma is required: the physics has no noise_model.sigma to read it from"
            )
    if isinstance(noise_sigma, Tensor):
        if noise_sigma.numel() != 1:
            raise ValueError(
                f"noise_sigma must be one number, got a tensor of shape {tuple(noise_sigma.shape)}"
            )
        noise_sigma = noise_sigma.item()
    if isinstance(noise_sigma, bool) or not isinstance(noise_sigma, numbers.Real):
        raise TypeError(f"noise_sigma must be a number, got {type(noise_sigma).__name__}")
    noise_sigma = float(noise_sigma)
    if not (math.isfinite(noise_sigma) and noise_sigma > 0):
        raise ValueError(f"noise_sigma must be finite and > 0, got {noise_sigma}")
    return noise_sigma


class _Converted:
    """A tensor and its copies on other devices/dtypes, made once (no host-to-device copy
    per sampler step)."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor
        self._copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def like(self, x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in self._copies:
            self._copies[key] = self.tensor.to(device=x.device, dtype=x.dtype)
        return self._copies[key]


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """``⟨a_b, b_b⟩`` per example, shaped ``[B, 1, …, 1]`` to broadcast against ``a``."""
    dots = (a * b).reshape(a.shape[0], -1).sum(1)
    return dots.reshape((a.shape[0],) + (1,) * (a.ndim - 1))


def conjugate_gradient(
    apply, b: Tensor, x0: Tensor | None = None, *, max_iter: int = 50, tol: float = 1e-5
) -> Tensor:
    """Solve ``M x = b`` for a symmetric positive-definite ``M`` given as ``apply(x)``, by
    conjugate gradients run on every example of the batch ``[B, ...]`` at once.

    Stops after ``max_iter`` iterations or once every example's residual satisfies
    ``‖b − M x‖ <= tol ‖b‖``; examples that have converged stop moving.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = _batch_dot(r, r)
    threshold = tol**2 * _batch_dot(b, b)
    for _ in range(max_iter):
        active = rs > threshold
        if not bool(active.any()):
            break
        mp = apply(p)
        curvature = _batch_dot(p, mp)
        # A converged example (or an exact zero direction) takes no step: alpha = 0.
        alpha = torch.where(active & (curvature > 0), rs / curvature.clamp_min(1e-300), 0.0)
        x = x + alpha * p
        r = r - alpha * mp
        rs_new = _batch_dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(1e-300), 0.0)
        p = r + beta * p
        rs = torch.where(active, rs_new, rs)
    return x


class _MatrixOperator:
    """``A`` as a float matrix ``[m, d]`` acting on flattened examples."""

    kind = "matrix"

    def __init__(self, matrix: Tensor):
        if matrix.ndim != 2 or not matrix.is_floating_point():
            raise ValueError(
                f"a matrix physics must be a float [m, d] tensor, got shape "
                f"{tuple(matrix.shape)} and dtype {matrix.dtype}"
            )
        self.matrix = _Converted(matrix)
        self._eig: _Converted | None = None

    def forward(self, x: Tensor) -> Tensor:
        a = self.matrix.like(x)
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != a.shape[1]:
            raise ValueError(
                f"the matrix is [m, d] = {list(a.shape)} but x holds {flat.shape[1]} "
                f"numbers per example"
            )
        return flat @ a.T

    def adjoint(self, r: Tensor, like: Tensor) -> Tensor:
        out = r @ self.matrix.like(r)
        return out.reshape((out.shape[0],) + tuple(like.shape[1:]))

    def example_shape(self, y: Tensor) -> tuple[int, ...]:
        return (self.matrix.tensor.shape[1],)

    def _eigh(self, like: Tensor) -> tuple[Tensor, Tensor]:
        if self._eig is None:
            a = self.matrix.tensor.double()
            values, vectors = torch.linalg.eigh(a.T @ a)
            self._eig = _Converted(torch.cat([values.clamp_min(0)[None], vectors]))
        both = self._eig.like(like)
        return both[0], both[1:]

    def sqnorm(self, like: Tensor) -> float:
        return float(self._eigh(like)[0].max())

    def solve(self, b: Tensor, c) -> Tensor:
        """``(I + c AᵀA)⁻¹ b`` exactly, from the eigendecomposition of ``AᵀA`` (made once)."""
        values, vectors = self._eigh(b)
        flat = b.reshape(b.shape[0], -1)
        if isinstance(c, Tensor):
            c = c.reshape(-1, 1)
        coords = flat @ vectors
        return ((coords / (1 + c * values)) @ vectors.T).reshape(b.shape)


class _PhysicsOperator:
    """A deepinv-style physics (duck-typed: ``A(x)`` and ``A_adjoint(y)``, no import needed).

    The data-consistency solve uses the physics' own closed form where deepinv has an exact
    one, the singular-value form of a ``DecomposablePhysics`` (``Inpainting``, ``BlurFFT``,
    ``Denoising``, …); anything else (``Blur``, ``Downsampling``, a user's ``LinearPhysics``)
    goes through :func:`conjugate_gradient`.
    """

    kind = "physics"

    def __init__(self, physics, cg_max_iter: int, cg_tol: float):
        self.physics = physics
        self.cg_max_iter = cg_max_iter
        self.cg_tol = cg_tol
        self._sqnorm: dict[tuple, float] = {}
        self.closed_form = _has_closed_form_prox(physics)

    def forward(self, x: Tensor) -> Tensor:
        return self.physics.A(x)

    def adjoint(self, r: Tensor, like: Tensor) -> Tensor:
        return self.physics.A_adjoint(r)

    def example_shape(self, y: Tensor) -> tuple[int, ...]:
        return tuple(self.physics.A_adjoint(y[:1]).shape[1:])

    def sqnorm(self, like: Tensor) -> float:
        key = (tuple(like.shape[1:]), like.device, like.dtype)
        if key not in self._sqnorm:
            self._sqnorm[key] = _power_iteration(
                lambda v: self.physics.A_adjoint(self.physics.A(v)), like
            )
        return self._sqnorm[key]

    def solve(self, b: Tensor, c) -> Tensor:
        if self.closed_form:
            # deepinv's prox_l2(z, y, γ) = argmin γ/2 ‖Ax − y‖² + ½‖x − z‖² = (I + γAᵀA)⁻¹(z + γAᵀy);
            # with y = 0 it is exactly (I + γAᵀA)⁻¹ z.
            zero = torch.zeros_like(self.physics.A(b[:1]))
            gamma = c.reshape((-1,) + (1,) * (b.ndim - 1)) if isinstance(c, Tensor) else c
            return self.physics.prox_l2(b, zero, gamma)
        if isinstance(c, Tensor):
            c = c.reshape((-1,) + (1,) * (b.ndim - 1))

        def apply(v: Tensor) -> Tensor:
            return v + c * self.physics.A_adjoint(self.physics.A(v))

        return conjugate_gradient(apply, b, b, max_iter=self.cg_max_iter, tol=self.cg_tol)


def _has_closed_form_prox(physics) -> bool:
    """Whether ``physics.prox_l2`` is an exact closed form we trust: the singular-value form
    of a deepinv ``DecomposablePhysics``. (deepinv 0.5's Fourier formula for a circular
    ``Downsampling`` is not used: against the dense matrix it is off by up to 20 % with the
    bicubic and bilinear filters, see tests/test_posterior_likelihood.py.)"""
    try:
        import deepinv
    except ImportError:  # pragma: no cover - deepinv is a dependency
        return False
    return isinstance(physics, deepinv.physics.DecomposablePhysics)


def _power_iteration(apply, like: Tensor, n_iter: int = 200, rtol: float = 1e-6) -> float:
    """The largest eigenvalue of the symmetric positive semi-definite ``apply`` on one example
    shaped like ``like[0]``, from a fixed random start (reproducible)."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn((1,) + tuple(like.shape[1:]), generator=generator, dtype=torch.float64)
    v = v.to(device=like.device, dtype=like.dtype)
    v = v / v.norm()
    value = 0.0
    for _ in range(n_iter):
        w = apply(v)
        new = float((w * v).sum())
        norm = w.norm()
        if float(norm) == 0.0:
            return 0.0
        v = w / norm
        if abs(new - value) <= rtol * abs(new):
            value = new
            break
        value = new
    # Power iteration approaches the top eigenvalue from below; the Rayleigh quotient of the
    # last iterate is within rtol of it once converged.
    return value


class GaussianLikelihood:
    """``p(y | x) = N(y; A x, σ_n² I)`` for a linear operator ``A``.

    Args:
        y: the observation, shaped like ``A x`` for one example (a leading batch dim of 1,
            broadcast over the chains) or for each chain (``[B, ...]``). For a matrix
            physics ``[m]``, ``[1, m]`` or ``[B, m]``.
        physics: a float matrix ``[m, d]`` acting on flattened examples, or a deepinv
            ``LinearPhysics`` (anything with ``A(x)`` and ``A_adjoint(y)``: ``Inpainting``,
            ``Blur``, ``Downsampling``, a ``LinearPhysics(A=..., A_adjoint=...)``).
        noise_sigma: σ_n > 0; defaults to ``physics.noise_model.sigma`` when present.
        cg_max_iter, cg_tol: the conjugate-gradient budget of :meth:`data_consistency` for
            physics without a closed-form solve.

    Everything a posterior sampler needs: the log-likelihood gradient :meth:`grad` (optionally
    with the variance widened by ``v``), the norm ``‖AᵀA‖`` (:meth:`sqnorm`, exact for a
    matrix, power iteration otherwise), the data-consistency step :meth:`data_consistency`,
    and :meth:`in_model_space` for a model that works on ``(x_data − shift) / scale``.
    """

    def __init__(
        self,
        y: Tensor,
        physics,
        noise_sigma: float | None = None,
        *,
        cg_max_iter: int = 50,
        cg_tol: float = 1e-5,
    ):
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a tensor, got {type(y).__name__}")
        if not y.is_floating_point():
            raise ValueError(f"y must be a floating-point tensor, got dtype {y.dtype}")
        self.noise_sigma = _noise_sigma(noise_sigma, physics)
        self.physics = physics
        if isinstance(physics, Tensor):
            self.operator = _MatrixOperator(physics)
            if y.ndim == 1:
                y = y[None]
        elif callable(getattr(physics, "A", None)) and callable(
            getattr(physics, "A_adjoint", None)
        ):
            self.operator = _PhysicsOperator(
                physics, check_positive_int("cg_max_iter", cg_max_iter), float(cg_tol)
            )
        else:
            raise TypeError(
                "physics must be a [m, d] matrix tensor or an object with A(x) and "
                f"A_adjoint(y) methods (a deepinv LinearPhysics), got {type(physics).__name__}"
            )
        self.y = y
        self._y = _Converted(y)

    def __repr__(self) -> str:
        return (
            f"GaussianLikelihood(y={tuple(self.y.shape)}, physics={type(self.physics).__name__}, "
            f"noise_sigma={self.noise_sigma:g})"
        )

    # ------------------------------------------------------------------ the operator
    def forward(self, x: Tensor) -> Tensor:
        """``A x`` for a batch ``x``."""
        return self.operator.forward(x)

    def adjoint(self, r: Tensor, like: Tensor) -> Tensor:
        """``Aᵀ r``, shaped like the batch ``like``."""
        return self.operator.adjoint(r, like)

    def observation(self, like: Tensor) -> Tensor:
        """``y`` on the device and in the dtype of ``like``."""
        return self._y.like(like)

    def example_shape(self) -> tuple[int, ...]:
        """The shape of one unknown ``x`` (without batch dim), read off ``Aᵀ y``."""
        return self.operator.example_shape(self.y)

    def sqnorm(self, like: Tensor) -> float:
        """``‖AᵀA‖₂ = ‖A‖₂²``: exact for a matrix, by power iteration (cached) otherwise."""
        return self.operator.sqnorm(like)

    def lipschitz(self, like: Tensor, extra_variance: float = 0.0) -> float:
        """The Lipschitz constant of :meth:`grad`: ``‖AᵀA‖ / (σ_n² + extra_variance)``."""
        return self.sqnorm(like) / (self.noise_sigma**2 + extra_variance)

    # ------------------------------------------------------------------ what samplers use
    def residual(self, x: Tensor) -> Tensor:
        """``y − A x``."""
        return self.observation(x) - self.forward(x)

    def grad(self, x: Tensor, extra_variance=0.0) -> Tensor:
        """``∇ₓ log N(y; A x, (σ_n² + v) I) = Aᵀ(y − A x) / (σ_n² + v)``, ``v = extra_variance``
        (a float, or a ``[B]`` tensor of one value per chain)."""
        variance = self.noise_sigma**2 + _per_chain(extra_variance, x)
        return self.adjoint(self.residual(x), x) / variance

    def data_consistency(self, x0: Tensor, prior_variance) -> Tensor:
        """The posterior mean of ``x`` given ``x ~ N(x0, v I)`` and ``y``::

            argminₓ ‖y − A x‖² / (2σ_n²) + ‖x − x0‖² / (2v) = (I + c AᵀA)⁻¹ (x0 + c Aᵀy),
            c = v / σ_n²

        (the proximal step of DiffPIR and half-quadratic splitting). ``v`` is a float or a
        ``[B]`` tensor. Exact for a matrix and for deepinv physics with a closed form,
        conjugate gradients otherwise.
        """
        c = _per_chain(prior_variance, x0) / self.noise_sigma**2
        return self.solve(x0 + c * self.adjoint(self.observation(x0), x0), c)

    def solve(self, b: Tensor, c) -> Tensor:
        """``(I + c AᵀA)⁻¹ b`` for a float ``c >= 0`` or a ``[B]`` tensor (one per example)."""
        c = _per_chain(c, b)
        if isinstance(c, Tensor) and c.ndim > 0:
            c = c.reshape(-1)
        elif not isinstance(c, Tensor) and c == 0:
            return b
        return self.operator.solve(b, c)

    # ------------------------------------------------------------------ coordinates
    def in_model_space(self, scale: float, shift: float) -> GaussianLikelihood:
        """The same likelihood for a model of ``x = (x_data − shift) / scale``.

        ``y = A x_data + σ_n n = scale · A x + A(shift · 1) + σ_n n``, so in the model's
        coordinates the observation is ``(y − A(shift · 1)) / scale`` with noise
        ``σ_n / scale`` and the same operator ``A``.
        """
        scale, shift = float(scale), float(shift)
        if not (math.isfinite(scale) and scale > 0 and math.isfinite(shift)):
            raise ValueError(f"scale must be > 0 and shift finite, got {scale}, {shift}")
        y = self.y
        if shift != 0.0:
            ones = torch.full((1,) + self.example_shape(), shift, dtype=y.dtype, device=y.device)
            y = y - self.forward(ones)
        out = GaussianLikelihood.__new__(GaussianLikelihood)
        out.noise_sigma = self.noise_sigma / scale
        out.physics = self.physics
        out.operator = self.operator
        out.y = y / scale
        out._y = _Converted(out.y)
        return out


def check_posterior_inputs(score, x, sigmas, likelihood) -> tuple[Tensor, list[float]]:
    """The checks every posterior sampler makes: a callable prior ``score``, a batch ``x``,
    a :class:`GaussianLikelihood`, and a descending ladder; returns ``(x, levels)``."""
    check_callable("score", score)
    x = check_batch(x)
    if not isinstance(likelihood, GaussianLikelihood):
        raise TypeError(f"likelihood must be a GaussianLikelihood, got {type(likelihood).__name__}")
    return x, sigma_list(sigmas)


def _per_chain(value, x: Tensor):
    """A float, or a ``[B]`` tensor reshaped to ``[B, 1, …]`` to broadcast against ``x``."""
    if isinstance(value, Tensor) and value.ndim > 0:
        return value.to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return value


def _largest(value) -> float:
    if isinstance(value, Tensor):
        return float(value.detach().max())
    return float(value)


def divergence_hint(score, sigma, step_size, default: str) -> str:
    """The divergence message of a Langevin run: which term's step was too large when
    ``score`` is a posterior score (it carries ``.likelihood``), else ``default``.

    ULA on a term of curvature ``L`` is unstable once ``ε L > 2``. The prior term of a score
    at level σ has curvature at most ``1/σ²`` (``−∇² log p_σ = (I − Cov[x₀|x]/σ²)/σ²``), the
    likelihood term ``‖AᵀA‖ / (σ_n² + γ²σ²)``.
    """
    likelihood = getattr(score, "likelihood", None)
    if likelihood is None:
        return default
    gamma = float(getattr(score, "gamma", 0.0))
    sigma, eps = _largest(sigma), _largest(step_size)
    like = torch.zeros((1,) + likelihood.example_shape(), dtype=likelihood.y.dtype)
    variance = likelihood.noise_sigma**2 + gamma**2 * sigma**2
    sqnorm = likelihood.sqnorm(like)
    likelihood_step = eps * sqnorm / variance
    prior_step = eps / sigma**2 if sigma > 0 else 0.0
    bound = 2 * variance / sqnorm if sqnorm > 0 else math.inf
    terms = (
        f"step_size·‖A‖²/(σ_n² + γ²σ²) = {likelihood_step:.3g} for the likelihood "
        f"(‖A‖² = {sqnorm:.3g}, σ_n = {likelihood.noise_sigma:.3g}, γ = {gamma:g})"
        + (f" and step_size/σ² = {prior_step:.3g} for the prior" if sigma > 0 else "")
    )
    if likelihood_step >= prior_step and likelihood_step > 1:
        return (
            f"the likelihood term's step is too large: {terms}; ULA needs each below 2, i.e. "
            f"step_size < {bound:.3g} here. Use a smaller step, or "
            "scoregen.samplers.annealed_posterior_langevin, which bounds every level's step by "
            "the likelihood's Lipschitz constant"
        )
    if prior_step > 1:
        return f"the prior term's step is too large: {terms}; ULA needs each below 2. {default}"
    return f"both terms' steps look stable ({terms}); the score itself may have returned non-finite values. {default}"
