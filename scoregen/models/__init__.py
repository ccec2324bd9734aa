"""Denoiser architectures behind one registry: a family name maps to (config dataclass, raw net)."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from scoregen.models.denoiser import PRECONDITIONINGS, Denoiser
from scoregen.models.mlp import MLP, MLPConfig

__all__ = [
    "MODELS",
    "Denoiser",
    "build_net",
    "build_denoiser",
    "denoiser_record",
    "PRECONDITIONINGS",
]

# family name -> (config dataclass, raw network class taking that config)
MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
}


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
    if "shape" in config:
        config["shape"] = tuple(config["shape"])
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
        precond=record.get("precond", "edm"),
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
    return {
        "family": family,
        "net": config,
        "precond": denoiser.precond,
        "sigma_data": denoiser.sigma_data,
        "fixed_sigma": denoiser.fixed_sigma,
    }
