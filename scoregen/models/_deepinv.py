"""What the deepinv families share: pixel-range mapping and loading a user's weight file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from scoregen.models.layers import check_image_shape

__all__ = ["DeepinvNet", "load_state_dict_file"]


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file, never running code.

    ``torch.load(weights_only=True)`` refuses anything but tensors and plain containers. A
    file holding ``{"state_dict": {...}}`` (a common training-script layout) is unwrapped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; name the file whatever they are
        raise ValueError(f"could not read weights file {str(path)!r}: {err}") from err
    if isinstance(state, dict) and set(state) == {"state_dict"}:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return state


class DeepinvNet(nn.Module):
    """Base of the raw nets wrapping a deepinv model ``model(x_pixel, sigma_pixel)``.

    The wrapped model sees ``x_pixel = x * pixel_scale + pixel_shift`` and noise level
    ``σ_pixel = σ * pixel_scale``; its output is mapped back, ``(out - pixel_shift) /
    pixel_scale``. deepinv's published weights were trained on images in [0, 1]: for scoregen's
    image sets in [-1, 1] use ``pixel_scale = pixel_shift = 0.5``. These nets take σ in the
    data's own units, so they are used with ``Denoiser(precond="none")`` (``preconditionings``).
    """

    preconditionings = ("none",)

    def __init__(self, config):
        super().__init__()
        check_image_shape(config.shape)
        if not config.pixel_scale > 0:
            raise ValueError(f"pixel_scale must be > 0, got {config.pixel_scale}")
        self.config = config

    def load_weights(self, path: str | Path) -> None:
        """Load a user's weight file into the wrapped deepinv model (its own state-dict keys)."""
        state = load_state_dict_file(path)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"weights file {str(path)!r} does not fit {type(self).__name__} with config "
                f"{self.config}; deepinv's published weights need its default architecture "
                f"(see the family's config docs). Details: {err}"
            ) from err

    def check_input(self, x: Tensor) -> None:
        channels = self.config.shape[0]
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"{type(self).__name__} expects input [B, {channels}, H, W], got {tuple(x.shape)}"
            )

    def to_pixels(self, x: Tensor) -> Tensor:
        return x * self.config.pixel_scale + self.config.pixel_shift

    def from_pixels(self, x: Tensor) -> Tensor:
        return (x - self.config.pixel_shift) / self.config.pixel_scale
