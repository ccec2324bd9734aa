"""scoregen models inside deepinv: :class:`DeepinvDenoiser` makes a loaded model a
``deepinv.models.Denoiser`` in pixel space, so deepinv's ``DiffPIR``, ``DPS``, ``ULA`` and the
rest of its plug-and-play solvers run on it. (The other way, deepinv's denoisers inside scoregen,
needs nothing: a deepinv denoiser already is a ``D(x, sigma)``; see scoregen.models.)"""

from __future__ import annotations

import math

import deepinv
import torch
from torch import Tensor

__all__ = ["DeepinvDenoiser"]


class DeepinvDenoiser(deepinv.models.Denoiser):
    """A scoregen model as a deepinv denoiser: ``forward(x, sigma)`` with ``x`` in pixel (data)
    space and ``sigma`` in pixel units, as deepinv's solvers call it.

    The model works on ``x_model = (x − shift) / scale`` (its data record's normalisation);
    so ``D_pixel(x, σ) = scale · D_model((x − shift)/scale, σ/scale) + shift``. The model's
    denoiser is used, i.e. Tweedie's ``x + σ² s(x, σ)`` for a score model.

    Args:
        model: a loaded model (``scoregen.builtins.load_score_model``) or anything with a
            ``denoiser(x, sigma)`` and a ``data`` record holding its ``normalization``.
        clamp_sigma: deepinv's diffusion solvers start far above the noise levels a small
            model was trained on (DiffPIR's ladder reaches σ ≈ 80 pixels). ``True`` clamps σ
            into the model's trained range (``model.sigma_range``), which keeps the input
            scaled as training saw it only if the caller adds no more noise than that;
            ``False`` (default) passes σ through and lets the network extrapolate.

    ``sigma`` may be a float, a 0-d or ``[1]`` tensor, or one value per example (``[B]`` or
    ``[B, 1, …]``). At σ = 0 the denoiser is the identity.
    """

    def __init__(self, model, *, clamp_sigma: bool = False):
        super().__init__()
        norm = dict(getattr(model, "data", {}) or {}).get("normalization") or {}
        self.scale = float(norm.get("scale", 1.0))
        self.shift = float(norm.get("shift", 0.0))
        if not (self.scale > 0 and math.isfinite(self.scale) and math.isfinite(self.shift)):
            raise ValueError(f"the model's normalization is unusable: {norm}")
        denoiser = getattr(model, "denoiser", None)
        if not callable(denoiser):
            raise TypeError(f"model must have a denoiser(x, sigma), got {type(model).__name__}")
        self.model = model
        # registered when it is a module, so .to(device) and .eval() reach its weights
        self.net = denoiser if isinstance(denoiser, torch.nn.Module) else None
        self.__dict__["_denoiser"] = denoiser  # the same callable, not registered twice
        self.sigma_range = getattr(model, "sigma_range", None) if clamp_sigma else None

    def _model_sigma(self, sigma, x: Tensor):
        """σ in model units: a float or a ``[B]`` tensor."""
        if isinstance(sigma, (int, float)):
            value = float(sigma) / self.scale
        elif isinstance(sigma, Tensor):
            flat = sigma.detach().to(device=x.device, dtype=x.dtype).reshape(-1)
            if flat.numel() == 1:
                value = flat[0] / self.scale
            elif flat.numel() == x.shape[0]:
                value = flat / self.scale
            else:
                raise ValueError(
                    f"sigma must be a number or hold one value per example (batch "
                    f"{x.shape[0]}), got shape {tuple(sigma.shape)}"
                )
        else:
            raise TypeError(f"sigma must be a number or a tensor, got {type(sigma).__name__}")
        if self.sigma_range is not None:
            low, high = self.sigma_range
            value = (
                value.clamp(low, high) if isinstance(value, Tensor) else min(max(value, low), high)
            )
        return value

    def forward(self, x: Tensor, sigma, **kwargs) -> Tensor:
        sigma_model = self._model_sigma(sigma, x)
        x_model = (x - self.shift) / self.scale
        if isinstance(sigma_model, Tensor):
            positive = sigma_model > 0
            safe = torch.where(positive, sigma_model, torch.ones_like(sigma_model))
            if safe.ndim == 0:
                safe = safe.expand(x.shape[0])
            out = self._denoiser(x_model, safe)
            keep = positive.reshape((-1,) + (1,) * (x.ndim - 1))
            out = torch.where(keep, out, x_model)
        elif sigma_model > 0:
            out = self._denoiser(x_model, sigma_model)
        else:
            return x
        return out * self.scale + self.shift
