"""Building blocks shared by the model families: the noise-level embedding and the σ-map input."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scoregen.models.mlp import embedding_levels, sinusoidal_embedding

__all__ = [
    "ACTIVATIONS",
    "NoiseEmbedding",
    "activation_gain",
    "append_sigma_map",
    "check_choice",
    "check_image_shape",
    "group_norm",
    "noise_inputs",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
}


def activation_gain(activation: nn.Module) -> float:
    """``1 / sqrt(E[act(z)²])`` for ``z ~ N(0, 1)``: the weight scale (times ``1/sqrt(fan_in)``)
    that keeps the second moment of pre-activations constant from layer to layer (He et al.
    2015; ``sqrt(2)`` for ReLU). The expectation is a quadrature on [-10, 10]."""
    z = torch.linspace(-10.0, 10.0, 20_001, dtype=torch.float64, device="cpu")  # not "meta"
    density = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    return float((density * activation(z) ** 2).sum().rsqrt())


def check_choice(name: str, value, allowed) -> None:
    """ValueError naming ``name`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def check_image_shape(shape) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)`` with positive entries, else a ValueError naming it."""
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"shape must be (channels, height, width) of positive ints, got {shape}")
    return shape


def check_widths(channels) -> list[int]:
    """``channels`` (one width per level) as a list, else a ValueError naming it."""
    widths = list(channels)
    if not widths or min(widths) < 1:
        raise ValueError(f"channels must list positive widths, got {channels}")
    return widths


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class NoiseEmbedding(nn.Module):
    """``c_noise`` ``[B]`` -> ``[B, dim]``: sinusoidal features, then ``SiLU(W₂ SiLU(W₁ e))``.

    Each block of a network adds its own linear projection of this vector (EDM/DDPM style
    noise conditioning), so one embedding serves the whole net.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: Tensor, dtype: torch.dtype) -> Tensor:
        return self.mlp(sinusoidal_embedding(c_noise, self.dim).to(dtype))


def append_sigma_map(x: Tensor, c_noise: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C + 1, H, W]`` with ``c_noise`` (``[B]`` or ``[1]``) as a
    constant extra channel."""
    plane = c_noise.to(x.dtype).reshape(-1, 1, *([1] * (x.ndim - 2)))
    return torch.cat([x, plane.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def noise_inputs(
    net: nn.Module, x: Tensor, c_noise: Tensor | None, *, exact_size: bool = False
) -> tuple[Tensor, Tensor | None]:
    """The input (with the σ map when configured) and the embedding (or None) of a family's net.

    The embedding is ``[B, dim]``, or ``[1, dim]`` when the batch has one noise level (it
    broadcasts wherever a block adds its projection).

    Shared by the image families: ``net.config`` has ``shape``, ``embed_dim`` and
    ``sigma_map``; ``net.embedding`` is a :class:`NoiseEmbedding` or None. ``x`` must be
    ``[B, C, H, W]`` with the configured ``C`` (and, with ``exact_size``, the configured H, W).
    """
    expected = tuple(net.config.shape)
    got = tuple(x.shape[1:])
    if x.ndim != 4 or got[0] != expected[0] or (exact_size and got != expected):
        wanted = (
            f"[B, {', '.join(map(str, expected))}]" if exact_size else f"[B, {expected[0]}, H, W]"
        )
        raise ValueError(f"{type(net).__name__} expects input {wanted}, got {tuple(x.shape)}")
    conditioned = net.config.embed_dim > 0 or net.config.sigma_map
    if conditioned and c_noise is None:
        raise ValueError(
            f"c_noise is required: this {type(net).__name__} is conditioned on the noise level"
        )
    if conditioned:
        c_noise = c_noise.reshape(-1)
        if c_noise.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"c_noise must have shape [B] = [{x.shape[0]}], got {tuple(c_noise.shape)}"
            )
    if net.config.sigma_map:
        x = append_sigma_map(x, c_noise)
    emb = None
    if net.embedding is not None:
        # [1, dim] for a batch at one σ: every block's projection of it then broadcasts
        emb = net.embedding(embedding_levels(c_noise), x.dtype)
    return x, emb
