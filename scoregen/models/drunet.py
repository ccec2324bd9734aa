"""deepinv's DRUNet (a U-Net taking the noise level as an input map), used as it is."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoregen.models._deepinv import DeepinvNet

__all__ = ["DRUNetConfig", "DRUNetNet"]


@dataclass
class DRUNetConfig:
    """Constructor arguments of :class:`DRUNetNet`.

    The default is a small DRUNet (about 1 M parameters, fast on CPU); deepinv's published
    weights need ``nc=(64, 128, 256, 512), nb=4`` (32 M parameters).
    """

    shape: tuple[int, ...] = (1, 28, 28)  # one example (C, H, W); any H, W work (padded inside)
    nc: tuple[int, ...] = (16, 32, 64, 128)  # widths of DRUNet's 4 scales
    nb: int = 2  # residual blocks per scale
    act_mode: str = "R"  # R: ReLU, L: LeakyReLU, E: ELU, s: Softplus
    downsample_mode: str = "strideconv"  # strideconv | avgpool | maxpool
    upsample_mode: str = "convtranspose"  # convtranspose | pixelshuffle | upconv
    weights: str | None = (
        None  # a user's weight file (.safetensors or torch.save); never downloaded
    )
    pixel_scale: float = 1.0  # the model sees x * pixel_scale + pixel_shift, σ * pixel_scale
    pixel_shift: float = 0.0


class DRUNetNet(DeepinvNet):
    """Raw network ``net(x, c_noise)`` = ``deepinv.models.DRUNet(x, σ)`` (``pretrained=None``).

    DRUNet takes σ as a constant input channel in pixel units; ``Denoiser(precond="none")``
    passes ``c_noise = log(σ) / 4``, so the net recovers ``σ = exp(4 c_noise)`` and hands
    ``σ * pixel_scale`` to the model. It is always σ-conditioned; a fixed-σ DRUNet is a
    ``Denoiser(fixed_sigma=...)`` that only ever passes that σ.
    """

    def __init__(self, config: DRUNetConfig):
        super().__init__(config)
        if len(config.nc) != 4 or min(config.nc) < 1 or config.nb < 1:
            raise ValueError(
                f"nc must hold 4 positive widths and nb >= 1, got nc={config.nc}, nb={config.nb}"
            )
        for name, allowed in (
            ("act_mode", ("R", "L", "E", "s")),
            ("downsample_mode", ("strideconv", "avgpool", "maxpool")),
            ("upsample_mode", ("convtranspose", "pixelshuffle", "upconv")),
        ):
            if getattr(config, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
        from deepinv.models import DRUNet

        channels = config.shape[0]
        self.model = DRUNet(
            in_channels=channels,
            out_channels=channels,
            nc=tuple(config.nc),
            nb=config.nb,
            act_mode=config.act_mode,
            downsample_mode=config.downsample_mode,
            upsample_mode=config.upsample_mode,
            pretrained=None,
            device=None,
        )
        if config.weights is not None:
            self.load_weights(config.weights)

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        self.check_input(x)
        if c_noise is None:
            raise ValueError("c_noise is required: DRUNet is conditioned on the noise level")
        sigma = (4 * c_noise.to(x.dtype)).exp().reshape(-1) * self.config.pixel_scale
        if sigma.shape[0] == 1:
            sigma = sigma.expand(x.shape[0])
        return self.from_pixels(self.model(self.to_pixels(x), sigma.contiguous()))
