"""deepinv's DnCNN (a blind residual CNN denoiser), used as it is behind scoregen's net API."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from scoregen.models._deepinv import DeepinvNet

__all__ = ["DnCNNConfig", "DnCNNNet"]


@dataclass
class DnCNNConfig:
    """Constructor arguments of :class:`DnCNNNet`; depth 20, nf 64, bias = deepinv's weights' shape."""

    shape: tuple[int, ...] = (1, 28, 28)  # one example (C, H, W); any H, W work
    depth: int = 20  # convolutional layers
    nf: int = 64  # channels per layer
    bias: bool = True
    weights: str | None = (
        None  # a user's weight file (.safetensors or torch.save); never downloaded
    )
    pixel_scale: float = 1.0  # the model sees x * pixel_scale + pixel_shift
    pixel_shift: float = 0.0


class DnCNNNet(DeepinvNet):
    """Raw network ``net(x, c_noise)`` = ``deepinv.models.DnCNN`` (``pretrained=None``).

    DnCNN is blind: it predicts the noise from the image alone and ignores ``c_noise``, so
    one network serves a range of σ only if it was trained on that range. It is residual
    (``out = x - noise``). Use it with ``Denoiser(precond="none")``.
    """

    def __init__(self, config: DnCNNConfig):
        super().__init__(config)
        if config.depth < 2 or config.nf < 1:
            raise ValueError(f"depth must be >= 2 and nf >= 1, got {config.depth}, {config.nf}")
        from deepinv.models import DnCNN

        channels = config.shape[0]
        self.model = DnCNN(
            in_channels=channels,
            out_channels=channels,
            depth=config.depth,
            bias=config.bias,
            nf=config.nf,
            pretrained=None,
            device=None,
        )
        if config.weights is not None:
            self.load_weights(config.weights)

    def forward(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        self.check_input(x)
        return self.from_pixels(self.model(self.to_pixels(x)))
