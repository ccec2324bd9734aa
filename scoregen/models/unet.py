"""A small U-Net with noise-level embedding (FiLM per residual block)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scoregen.models.layers import (
    NoiseEmbedding,
    check_image_shape,
    check_widths,
    group_norm,
    noise_inputs,
)

__all__ = ["UNetConfig", "UNet"]


@dataclass
class UNetConfig:
    """Constructor arguments of :class:`UNet` (stored in checkpoints to rebuild it)."""

    shape: tuple[int, ...] = (1, 28, 28)  # one example (C, H, W); any H, W work
    channels: tuple[int, ...] = (32, 64, 64)  # width per resolution level (H halves per level)
    blocks_per_level: int = 1  # residual blocks per level on the way down (and up)
    embed_dim: int = 64  # noise-level embedding width; 0 = none
    sigma_map: bool = False  # also feed c_noise as a constant extra input channel
    groups: int = 8  # GroupNorm groups (reduced to a divisor of each width)
    dropout: float = 0.0


class ResBlock(nn.Module):
    """``x + conv(act(FiLM(norm(conv(act(norm(x)))), emb)))``, FiLM: ``h (1 + scale) + shift``."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.film = nn.Linear(embed_dim, 2 * c_out) if embed_dim > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Raw network ``net(x, c_noise)``: a U-Net with skip connections and FiLM σ-conditioning.

    Down path: per level ``blocks_per_level`` residual blocks, then a stride-2 convolution
    (``H -> ceil(H / 2)``); a middle block; up path: nearest upsampling back to the skip's
    size and a 3×3 convolution, concatenation with the skip, residual blocks. Any H, W work.
    With ``embed_dim = 0`` and ``sigma_map = False`` the net ignores ``c_noise`` (fixed σ).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        channels = check_image_shape(config.shape)[0]
        widths = check_widths(config.channels)
        if config.blocks_per_level < 1 or config.embed_dim < 0 or config.groups < 1:
            raise ValueError(
                "blocks_per_level and groups must be >= 1 and embed_dim >= 0, got "
                f"{config.blocks_per_level}, {config.groups}, {config.embed_dim}"
            )
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        emb, groups, drop = config.embed_dim, config.groups, config.dropout
        self.embedding = NoiseEmbedding(emb) if emb > 0 else None
        self.inp = nn.Conv2d(channels + int(config.sigma_map), widths[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = widths[0]
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock(c, width, emb, groups, drop))
                c = width
            self.down_blocks.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = ResBlock(c, c, emb, groups, drop)

        self.upsample = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            if level < len(widths) - 1:
                self.upsample.append(nn.Conv2d(c, width, 3, padding=1))
                c = width
            blocks = nn.ModuleList([ResBlock(c + width, width, emb, groups, drop)])
            for _ in range(config.blocks_per_level - 1):
                blocks.append(ResBlock(width, width, emb, groups, drop))
            self.up_blocks.append(blocks)
            c = width
        self.out_norm = group_norm(c, groups)
        self.out = nn.Conv2d(c, channels, 3, padding=1)

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        h, emb = noise_inputs(self, x, c_noise)
        h = self.inp(h)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.middle(h, emb)
        for i, blocks in enumerate(self.up_blocks):
            skip = skips.pop()
            if i > 0:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = self.upsample[i - 1](h)
            h = blocks[0](torch.cat([h, skip], dim=1), emb)
            for block in blocks[1:]:
                h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))
