"""σ-conditioned MLP for toys and flattened images (also a fixed-σ MNIST autoencoder)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["MLPConfig", "MLP", "sinusoidal_embedding"]


def sinusoidal_embedding(c_noise: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``[B]`` noise conditioning -> ``[B, dim]`` sin/cos features at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device) / half)
    angles = c_noise.float()[:, None] * freqs[None] * 1000.0
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)


@dataclass
class MLPConfig:
    """Constructor arguments of :class:`MLP` (stored in checkpoints to rebuild it)."""

    shape: tuple[int, ...] = (2,)  # one example; [B, *shape] in and out
    hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    embed_dim: int = 32  # noise-level embedding width; 0 = fixed-σ (ignores c_noise)
    activation: str = "silu"  # silu | elu | relu
    output: str = "linear"  # linear | sigmoid (sigmoid keeps outputs in [0, 1], for images)


_ACTIVATIONS = {"silu": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU}


class MLP(nn.Module):
    """Raw network ``net(x, c_noise)``: flatten, MLP with the σ embedding added per layer, reshape.

    ``MLPConfig(shape=(784,), hidden=[128, 64, 10, 64, 128], embed_dim=0, activation="elu",
    output="sigmoid")`` is a fixed-σ MNIST autoencoder with a 10-unit bottleneck.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        if config.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {config.activation!r}"
            )
        if config.output not in ("linear", "sigmoid"):
            raise ValueError(f"output must be 'linear' or 'sigmoid', got {config.output!r}")
        if not config.hidden:
            raise ValueError("hidden must list at least one layer width")
        self.config = config
        dim = math.prod(config.shape)
        widths = [dim, *config.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.embeds = (
            nn.ModuleList(nn.Linear(config.embed_dim, w) for w in config.hidden)
            if config.embed_dim > 0
            else None
        )
        self.act = _ACTIVATIONS[config.activation]()
        self.out = nn.Linear(widths[-1], dim)

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        emb = None
        if self.embeds is not None:
            if c_noise is None:
                raise ValueError("c_noise is required: this MLP is conditioned on the noise level")
            emb = sinusoidal_embedding(c_noise, self.config.embed_dim).to(h.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if emb is not None:
                h = h + self.embeds[i](emb)
            h = self.act(h)
        h = self.out(h)
        if self.config.output == "sigmoid":
            h = torch.sigmoid(h)
        return h.reshape(x.shape)
