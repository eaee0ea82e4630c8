"""Architecture registry: CNNs built by name, for training and export (needs the torch extra).

Register a new architecture with ``@register("name")`` on a function that takes the number of
input channels and classes and returns an ``nn.Module`` mapping ``(N, C, H, W)`` to logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from edgefer.errors import ConfigError, require

if TYPE_CHECKING:
    from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return add


def available() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def build(name: str, in_channels: int = 1, num_classes: int = 7, **kwargs: object) -> nn.Module:
    """Build a registered architecture by name."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **kwargs)


def with_flip_average(module: nn.Module) -> nn.Module:
    """``module`` averaged over the input and its mirror image (test-time augmentation).

    Faces are near-symmetric and training used mirroring, so averaging the two views is a
    cheap ensemble; it runs as one batch of 2N inside the exported graph.
    """
    torch = require("torch", "torch")

    class FlipAverage(torch.nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):  # type: ignore[no-untyped-def]
            n = x.shape[0]
            logits = self.inner(torch.cat([x, torch.flip(x, dims=[3])], dim=0))
            return (logits[:n] + logits[n:]) / 2

    return FlipAverage(module)


def average_of(members: Sequence[nn.Module]) -> nn.Module:
    """Several networks that read the same input, as one model: their logits averaged.

    An ensemble gains as far as its networks err differently; two networks without mirror
    averaging cost what one costs with it, and engines/MODEL_CARD.md measures which pays more.
    """
    torch = require("torch", "torch")

    class LogitAverage(torch.nn.Module):
        def __init__(self, inner: Sequence[nn.Module]) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(inner)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.stack([member(x) for member in self.members]).mean(dim=0)

    return LogitAverage(members)


def _ensure_builtins() -> None:
    if not _REGISTRY:
        _register_builtins()


def _register_builtins() -> None:
    nn = require("torch.nn", "torch")

    def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
        return [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]

    def vgg(widths: tuple[int, ...], in_channels: int, num_classes: int, input_size: int,
            hidden: int, dropout: float) -> nn.Module:
        """VGG-style stages of two 3x3 convs and a 2x2 max-pool, then a small MLP head.

        Plain 3x3 convs with BatchNorm are what oneDNN, ONNX Runtime and TensorRT all run
        fastest on small inputs, and VGG variants remain the strongest single models on FER2013.
        """
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += conv_bn_relu(channels, width) + conv_bn_relu(width, width)
            layers.append(nn.MaxPool2d(2))
            channels = width
        side = input_size // 2 ** len(widths)
        head = [
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        ]
        return nn.Sequential(*layers, *head)

    @register("vgg_s")
    def vgg_s(in_channels: int = 1, num_classes: int = 7, input_size: int = 48) -> nn.Module:
        """The default edge CNN: 1.8M parameters, about 0.12 GMAC per 48x48 face."""
        return vgg((32, 64, 128, 256), in_channels, num_classes, input_size, hidden=256, dropout=0.4)

    @register("vgg_m")
    def vgg_m(in_channels: int = 1, num_classes: int = 7, input_size: int = 48) -> nn.Module:
        """A wider variant for desktop GPUs: 4.0M parameters, about 0.26 GMAC per face."""
        return vgg((48, 96, 192, 384), in_channels, num_classes, input_size, hidden=384, dropout=0.4)

    @register("vgg_l")
    def vgg_l(in_channels: int = 1, num_classes: int = 7, input_size: int = 48) -> nn.Module:
        """A teacher-sized variant, trained on a GPU: 7.1M parameters, about 0.47 GMAC per face."""
        return vgg((64, 128, 256, 512), in_channels, num_classes, input_size, hidden=512, dropout=0.4)
