"""Convolutional autoencoder with a fully connected bottleneck of chosen size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from scoregen.models.layers import (
    ACTIVATIONS,
    NoiseEmbedding,
    activation_gain,
    check_choice,
    check_image_shape,
    check_widths,
    noise_inputs,
)

__all__ = ["ConvAEConfig", "ConvAE"]


@dataclass
class ConvAEConfig:
    """Constructor arguments of :class:`ConvAE` (stored in checkpoints to rebuild it)."""

    shape: tuple[int, ...] = (1, 28, 28)  # one example (C, H, W); the bottleneck fixes H, W
    channels: tuple[int, ...] = (16, 32, 64)  # width per resolution; each next one halves H, W
    latent_dim: int = 200  # bottleneck size
    embed_dim: int = 32  # noise-level embedding width; 0 = none
    sigma_map: bool = False  # also feed c_noise as a constant extra input channel
    activation: str = "silu"  # silu | gelu | relu | elu
    output: str = "linear"  # linear | sigmoid (for [0, 1] data with precond="none")


class _Conv(nn.Module):
    """3×3 convolution, plus a projection of the noise embedding added per channel, then act."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, act: type[nn.Module], stride=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.emb = nn.Linear(embed_dim, c_out) if embed_dim > 0 else None
        self.act = act()

    def forward(self, h: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv(h)
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.act(h)


class ConvAE(nn.Module):
    """Raw network ``net(x, c_noise)``: conv encoder -> ``latent_dim`` vector -> conv decoder.

    Encoder: per level two 3×3 convolutions (the first of every level after the first has
    stride 2, so ``H -> ceil(H / 2)``). The last feature map is flattened and squeezed
    through ``Linear -> latent_dim -> Linear`` (the bottleneck), then the decoder mirrors the
    encoder, upsampling (nearest) to the encoder's sizes. With ``embed_dim > 0`` every layer
    adds a projection of the σ embedding (and the latent does too); with ``embed_dim = 0``
    and ``sigma_map = False`` the net ignores ``c_noise`` (a fixed-σ DAE).

    ``ConvAEConfig(shape=(3, 32, 32), channels=(16, 32, 64), latent_dim=200, embed_dim=0,
    activation="relu")`` is a CIFAR-10 autoencoder with a 64×8×8 -> 200 bottleneck.
    """

    def __init__(self, config: ConvAEConfig):
        super().__init__()
        check_choice("activation", config.activation, ACTIVATIONS)
        check_choice("output", config.output, ("linear", "sigmoid"))
        channels, height, width = check_image_shape(config.shape)
        check_widths(config.channels)
        if config.latent_dim < 1 or config.embed_dim < 0:
            raise ValueError(
                f"latent_dim must be >= 1 and embed_dim >= 0, got {config.latent_dim}, {config.embed_dim}"
            )
        self.config = config
        act = ACTIVATIONS[config.activation]
        widths, emb_dim = list(config.channels), config.embed_dim
        # spatial size at each level: a stride-2, padding-1, 3×3 conv maps n -> ceil(n / 2)
        self.sizes = [(height, width)]
        for _ in widths[1:]:
            h, w = self.sizes[-1]
            self.sizes.append((math.ceil(h / 2), math.ceil(w / 2)))

        self.embedding = NoiseEmbedding(emb_dim) if emb_dim > 0 else None
        c_in = channels + int(config.sigma_map)
        self.encoder = nn.ModuleList()
        for level, width_out in enumerate(widths):
            stride = 1 if level == 0 else 2
            self.encoder.append(_Conv(c_in, width_out, emb_dim, act, stride=stride))
            self.encoder.append(_Conv(width_out, width_out, emb_dim, act))
            c_in = width_out

        flat = widths[-1] * math.prod(self.sizes[-1])
        self.to_latent = nn.Linear(flat, config.latent_dim)
        self.latent_emb = nn.Linear(emb_dim, config.latent_dim) if emb_dim > 0 else None
        self.from_latent = nn.Linear(config.latent_dim, flat)
        self.act = act()

        # decoder level i: (upsample to level i's size) conv w[i+1] -> w[i], conv w[i] -> w[i]
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width_in = widths[min(level + 1, len(widths) - 1)]
            self.decoder.append(_Conv(width_in, widths[level], emb_dim, act))
            self.decoder.append(_Conv(widths[level], widths[level], emb_dim, act))
        self.out = nn.Conv2d(widths[0], channels, 3, padding=1)
        # He-style initialisation keeps the activations' scale through the ~10 plain layers;
        # with PyTorch's default (variance 1/(3 fan_in)) the output barely depends on the
        # input at initialisation and the gradients vanish.
        gain = activation_gain(act())
        for module in [*self.encoder, *self.decoder, self.to_latent, self.from_latent]:
            layer = module.conv if isinstance(module, _Conv) else module
            nn.init.normal_(layer.weight, std=gain / math.sqrt(layer.weight[0].numel()))
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        h, emb = noise_inputs(self, x, c_noise, exact_size=True)
        for layer in self.encoder:
            h = layer(h, emb)
        z = self.to_latent(h.flatten(1))
        if self.latent_emb is not None:
            z = z + self.latent_emb(emb)
        z = self.act(z)
        h = self.act(self.from_latent(z)).reshape(h.shape)
        n_levels = len(self.config.channels)
        for i, level in enumerate(reversed(range(n_levels))):
            if level < n_levels - 1:
                h = F.interpolate(h, size=self.sizes[level], mode="nearest")
            h = self.decoder[2 * i](h, emb)
            h = self.decoder[2 * i + 1](h, emb)
        out = self.out(h)
        return out.sigmoid() if self.config.output == "sigmoid" else out
