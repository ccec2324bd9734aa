"""The σ-conditioned MLP's previous forward pass, kept as a benchmark contender.

Before the σ embedding was computed once per distinct noise level, the MLP embedded every
example's level and projected it in every layer, ``B`` times for a batch at one σ. This is
that forward pass, on the weights of a current :class:`scoregen.models.mlp.MLP`; it is not
part of the package.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scoregen.models.mlp import MLP, sinusoidal_embedding


def per_example_forward(net: MLP, x: Tensor, c_noise: Tensor) -> Tensor:
    """``net(x, c_noise)`` with ``c_noise`` ``[B]`` embedded example by example."""
    h = x.reshape(x.shape[0], -1)
    emb = sinusoidal_embedding(c_noise.expand(x.shape[0]), net.config.embed_dim).to(h.dtype)
    for i, layer in enumerate(net.layers):
        h = net.act(layer(h) + net.embeds[i](emb))
    h = net.out(h)
    if net.config.output == "sigmoid":
        h = torch.sigmoid(h)
    return h.reshape(x.shape)
