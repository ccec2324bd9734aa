"""σ-conditioned MLP for toys and flattened images (also a fixed-σ MNIST autoencoder)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["MLPConfig", "MLP", "embedding_levels", "sinusoidal_embedding"]


def sinusoidal_embedding(c_noise: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``[B]`` noise conditioning -> ``[B, dim]`` sin/cos features at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device) / half)
    angles = c_noise.float()[:, None] * freqs[None] * 1000.0
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)


def embedding_levels(c_noise: Tensor) -> Tensor:
    """The noise levels a batch's σ embedding has to be computed for: ``c_noise[:1]`` when
    all ``B`` examples share one level (a sampler's call), which broadcasts against the
    batch, so the embedding and its per-layer projections are computed once; else ``c_noise``.

    Only the one-level case is looked for: sorting out repeated levels (``torch.unique``)
    cost a training batch of distinct levels more than it saved a batch of ten repeated ones
    (experiments/bench/cpu.py). Reading the values costs a device synchronisation, so only
    CPU tensors outside ``torch.compile`` are read (elsewhere a caller with one σ passes
    ``[1]``, as :class:`~scoregen.models.Denoiser` does), and never a ``c_noise`` that
    carries gradients (each example keeps its own).
    """
    if (
        c_noise.shape[0] <= 1
        or c_noise.device.type != "cpu"
        or c_noise.requires_grad
        or torch.compiler.is_compiling()
        or not bool((c_noise == c_noise[0]).all())
    ):
        return c_noise
    return c_noise[:1]


_PROJECTION_CACHE_SIZE = 64  # levels: a ladder's worth


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
        self._projection_cache: dict = {}

    def _projections(self, levels: Tensor, dtype: torch.dtype) -> list[Tensor]:
        """Each hidden layer's projection of the σ embedding (``[1 or B, width]``).

        A sampler calls the network hundreds of times at one level: for one level on the CPU
        without gradients the projections are computed once and kept, keyed by the level, the
        dtype and the projection weights' storage and version (so loading or training new
        weights is never served a stale entry), in a small cache of recent levels.
        """
        cacheable = (
            levels.shape[0] == 1
            and levels.device.type == "cpu"
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )
        if cacheable:
            weights = tuple((p.data_ptr(), p._version) for p in self.embeds.parameters())
            key = (float(levels[0]), dtype, weights)
            cached = self._projection_cache.get(key)
            if cached is not None:
                return cached
        emb = sinusoidal_embedding(levels, self.config.embed_dim).to(dtype)
        projections = [embed(emb) for embed in self.embeds]
        if cacheable:
            if len(self._projection_cache) >= _PROJECTION_CACHE_SIZE:
                self._projection_cache.pop(next(iter(self._projection_cache)))
            self._projection_cache[key] = projections
        return projections

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        projections = None
        if self.embeds is not None:
            if c_noise is None:
                raise ValueError("c_noise is required: this MLP is conditioned on the noise level")
            # [1, embed_dim] for a batch at one σ: each layer's projection then broadcasts
            projections = self._projections(embedding_levels(c_noise.reshape(-1)), h.dtype)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if projections is not None:
                h = h + projections[i]
            h = self.act(h)
        h = self.out(h)
        if self.config.output == "sigmoid":
            h = torch.sigmoid(h)
        return h.reshape(x.shape)
