"""Patch transformer denoiser: patchify, sinusoidal positions, encoder-only transformer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoregen.models.layers import NoiseEmbedding, check_choice, check_image_shape, noise_inputs

__all__ = [
    "PatchTransformerConfig",
    "PatchTransformer",
    "patchify",
    "unpatchify",
    "sinusoidal_positions_2d",
]


@dataclass
class PatchTransformerConfig:
    """Constructor arguments of :class:`PatchTransformer` (stored in checkpoints to rebuild it)."""

    shape: tuple[int, ...] = (1, 28, 28)  # one example (C, H, W); H, W padded to patch multiples
    patch_size: int = 8
    d_model: int = 64  # token width
    depth: int = 2  # encoder layers
    n_heads: int = 4
    mlp_ratio: float = 4.0  # feed-forward width = mlp_ratio * d_model
    dropout: float = 0.0
    embed_dim: int = 64  # noise-level embedding width (added to every token per layer); 0 = none
    sigma_map: bool = False  # also feed c_noise as a constant extra input channel
    head: str = "mlp"  # mlp: per-patch MLP | conv: per-patch MLP + 3×3 conv refinement
    head_channels: int = 32  # hidden width of the conv head


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W]`` (H, W multiples of p) -> ``[B, (H/p)(W/p), C p p]``, rows of patches."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: Tensor, channels: int, height: int, width: int, patch_size: int) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, N, C p p]`` -> ``[B, C, H, W]``."""
    b, p = tokens.shape[0], patch_size
    x = tokens.reshape(b, height // p, width // p, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


def sinusoidal_positions_2d(rows: int, cols: int, dim: int) -> Tensor:
    """``[rows * cols, dim]`` position codes: half the features encode the row, half the column.

    Within each half, feature pairs are ``sin(pos ω_k), cos(pos ω_k)`` with
    ``ω_k = 10000^(-k / (dim / 4))`` (the Transformer's encoding, once per axis).
    """
    if dim % 4:
        raise ValueError(f"the position code width must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = torch.exp(-math.log(10_000.0) * torch.arange(quarter) / quarter)

    def encode(n: int) -> Tensor:
        angles = torch.arange(n, dtype=torch.float32)[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # [n, dim / 2]

    row, col = encode(rows), encode(cols)
    grid = torch.cat(
        [row[:, None].expand(rows, cols, dim // 2), col[None].expand(rows, cols, dim // 2)], dim=2
    )
    return grid.reshape(rows * cols, dim)


class PatchTransformer(nn.Module):
    """Raw network ``net(x, c_noise)``: an encoder-only transformer over image patches.

    The image is padded (replicate) to multiples of ``patch_size``, cut into non-overlapping
    patches, each flattened and linearly embedded to ``d_model``; 2-D sinusoidal position
    codes are added; ``depth`` pre-norm encoder layers follow, each preceded by adding a
    projection of the σ embedding to every token. The head maps each token back to a patch
    (MLP), the patches are reassembled and cropped. ``head="conv"`` adds a residual 3×3
    convolution stack on the reassembled image, which lets neighbouring patches talk across
    their borders.
    """

    def __init__(self, config: PatchTransformerConfig):
        super().__init__()
        channels = check_image_shape(config.shape)[0]
        check_choice("head", config.head, ("mlp", "conv"))
        for name in ("patch_size", "d_model", "depth", "n_heads", "head_channels"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        if config.d_model % 4 or config.d_model % config.n_heads:
            raise ValueError(
                f"d_model must be a multiple of 4 and of n_heads={config.n_heads}, got {config.d_model}"
            )
        if config.embed_dim < 0 or config.mlp_ratio <= 0 or not 0 <= config.dropout < 1:
            raise ValueError(
                "embed_dim must be >= 0, mlp_ratio > 0 and dropout in [0, 1), got "
                f"{config.embed_dim}, {config.mlp_ratio}, {config.dropout}"
            )
        self.config = config
        p, d = config.patch_size, config.d_model
        self.embedding = NoiseEmbedding(config.embed_dim) if config.embed_dim > 0 else None
        self.patch_embed = nn.Linear((channels + int(config.sigma_map)) * p * p, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                config.n_heads,
                dim_feedforward=max(1, round(config.mlp_ratio * d)),
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.depth)
        )
        self.token_emb = (
            nn.ModuleList(nn.Linear(config.embed_dim, d) for _ in range(config.depth))
            if config.embed_dim > 0
            else None
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, channels * p * p)
        )
        self.refine = (
            nn.Sequential(
                nn.Conv2d(channels, config.head_channels, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(config.head_channels, channels, 3, padding=1),
            )
            if config.head == "conv"
            else None
        )

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        h, emb = noise_inputs(self, x, c_noise)
        p = self.config.patch_size
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % p, -width % p
        if pad_h or pad_w:
            h = F.pad(h, (0, pad_w, 0, pad_h), mode="replicate")
        rows, cols = h.shape[-2] // p, h.shape[-1] // p
        tokens = self.patch_embed(patchify(h, p))
        positions = sinusoidal_positions_2d(rows, cols, self.config.d_model)
        tokens = tokens + positions.to(device=tokens.device, dtype=tokens.dtype)
        for i, layer in enumerate(self.layers):
            if self.token_emb is not None:
                tokens = tokens + self.token_emb[i](emb)[:, None]
            tokens = layer(tokens)
        out = unpatchify(self.head(self.norm(tokens)), x.shape[1], rows * p, cols * p, p)
        if self.refine is not None:
            out = out + self.refine(out)
        return out[..., :height, :width]
