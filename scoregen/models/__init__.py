"""Denoiser architectures behind one registry: a family name maps to (config dataclass, raw net)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from scoregen.models.conv_ae import ConvAE, ConvAEConfig
from scoregen.models.denoiser import PRECONDITIONINGS, Denoiser
from scoregen.models.dncnn import DnCNNConfig, DnCNNNet
from scoregen.models.drunet import DRUNetConfig, DRUNetNet
from scoregen.models.mlp import MLP, MLPConfig
from scoregen.models.patch_transformer import PatchTransformer, PatchTransformerConfig
from scoregen.models.unet import UNet, UNetConfig

__all__ = [
    "MODELS",
    "Denoiser",
    "build_net",
    "build_denoiser",
    "count_parameters",
    "denoiser_record",
    "PRECONDITIONINGS",
]

# family name -> (config dataclass, raw network class taking that config). The deepinv
# families import deepinv only when one is built.
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "conv_ae": (ConvAEConfig, ConvAE),
    "unet": (UNetConfig, UNet),
    "patch_transformer": (PatchTransformerConfig, PatchTransformer),
    "dncnn": (DnCNNConfig, DnCNNNet),
    "drunet": (DRUNetConfig, DRUNetNet),
}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of scalar parameters of ``module`` (only those with requires_grad if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _is_tuple_field(f: dataclasses.Field) -> bool:
    # annotations are strings (postponed evaluation); a tuple default says the same
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return annotation.startswith(("tuple", "Tuple")) or isinstance(f.default, tuple)


def build_net(family: str, **config: Any) -> nn.Module:
    """The raw network of a family from its config fields (unknown fields are an error)."""
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; choose one of {sorted(MODELS)}")
    config_cls, net_cls = MODELS[family]
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(
            f"unknown config fields for {family!r}: {unknown}; allowed: {sorted(names)}"
        )
    # JSON turns tuples into lists: give tuple fields their tuples back
    for f in dataclasses.fields(config_cls):
        if f.name in config and isinstance(config[f.name], list) and _is_tuple_field(f):
            config[f.name] = tuple(config[f.name])
    return net_cls(config_cls(**config))


def build_denoiser(record: dict[str, Any]) -> Denoiser:
    """Rebuild a :class:`Denoiser` from the JSON record written by :func:`denoiser_record`."""
    try:
        family, net_config = record["family"], dict(record["net"])
    except (KeyError, TypeError):
        raise ValueError(
            f"a model record needs 'family' and 'net' entries, got {record!r}"
        ) from None
    net = build_net(family, **net_config)
    return Denoiser(
        net,
        precond=record.get("precond"),
        sigma_data=record.get("sigma_data", 0.5),
        fixed_sigma=record.get("fixed_sigma"),
    )


def denoiser_record(denoiser: Denoiser) -> dict[str, Any]:
    """The JSON-able record that :func:`build_denoiser` turns back into the same architecture."""
    net = denoiser.net
    family = next((name for name, (_, cls) in MODELS.items() if type(net) is cls), None)
    if family is None:
        raise ValueError(f"{type(net).__name__} is not a registered model family")
    config = dataclasses.asdict(net.config)
    if config.get("weights") is not None:
        # the initial weight file is not needed to rebuild: the checkpoint's state dict holds
        # the weights, and the file may not exist where the checkpoint is loaded
        config["weights"] = None
    return {
        "family": family,
        "net": config,
        "precond": denoiser.precond,
        "sigma_data": denoiser.sigma_data,
        "fixed_sigma": denoiser.fixed_sigma,
    }
