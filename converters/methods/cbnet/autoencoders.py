"""CBNet's converting autoencoders (CBNet, 2024): the AUTOENCODERS registry and the two shipped architectures.

An autoencoder consumes and produces *model-ready* inputs (after the bundle's preprocessing).
Inside, it maps each channel's value range ``[low, high]`` (measured on the training data)
onto [0, 1], runs its network, and maps the result back; with the default ``sigmoid``
output its answer therefore always lies inside the training range and it trains with
binary cross-entropy against the exemplar mapped to [0, 1] (the paper's setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.errors import ConfigError
from edge_runtime.registry import Registry

AUTOENCODERS: Registry[type[ConvertingAutoencoder]] = Registry("CBNet autoencoder")

#: output kind -> (activation applied to the network's last layer, loss(raw output, target in [0, 1]))
OUTPUT_KINDS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor],
                              Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "sigmoid": (torch.sigmoid, F.binary_cross_entropy_with_logits),
    "linear": (lambda z: z, F.mse_loss),
}


def create_autoencoder(name: str, input_shape: Sequence[int], value_range: tuple[Sequence[float], Sequence[float]],
                       **kwargs: Any) -> ConvertingAutoencoder:
    """Build a registered converting autoencoder for one sample shape.

    Args:
        name: registered name (``dense``: the paper's; ``conv``: a small convolutional one).
        input_shape: one sample's shape, e.g. (1, 28, 28).
        value_range: per-channel (low, high) of the model-ready training inputs.
        **kwargs: the architecture's own arguments.

    Example:
        >>> ae = create_autoencoder("dense", (1, 8, 8), ([0.0], [1.0]))
        >>> ae(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    cls = AUTOENCODERS.get(name)
    try:
        return cls(tuple(int(d) for d in input_shape), value_range, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"autoencoder {name!r}: bad arguments ({exc})") from None


class ConvertingAutoencoder(nn.Module):
    """Base: the [low, high] <-> [0, 1] mapping around a network ``self.net`` (set by subclasses).

    Args:
        input_shape: one sample's shape (channels first).
        value_range: per-channel (low, high) of the model-ready inputs; one value broadcasts.
        output: ``sigmoid`` (bounded output, BCE) or ``linear`` (unbounded, MSE).
    """

    low: torch.Tensor
    span: torch.Tensor
    net: nn.Module

    def __init__(self, input_shape: tuple[int, ...], value_range: tuple[Sequence[float], Sequence[float]],
                 output: str = "sigmoid") -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ConfigError(f"autoencoder output: expected one of {', '.join(OUTPUT_KINDS)}, got {output!r}")
        self.input_shape = input_shape
        self.output_kind = output
        channels = input_shape[0] if len(input_shape) > 1 else 1
        low = torch.as_tensor(value_range[0], dtype=torch.float32).flatten()
        high = torch.as_tensor(value_range[1], dtype=torch.float32).flatten()
        if low.numel() == 1:
            low, high = low.expand(channels).clone(), high.expand(channels).clone()
        if low.numel() != channels or high.numel() != channels:
            raise ConfigError(f"autoencoder value_range: expected 1 or {channels} values per bound")
        span = torch.clamp(high - low, min=1e-6)
        view = (1, channels) + (1,) * (len(input_shape) - 1) if len(input_shape) > 1 else (1, 1)
        self.register_buffer("low", low.reshape(view))
        self.register_buffer("span", span.reshape(view))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Model-ready values -> [0, 1] (the training range)."""
        return (x - self.low) / self.span

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> model-ready values."""
        return u * self.span + self.low

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output before its activation (logits for ``sigmoid``), in unit space."""
        return self.net(self.to_unit(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation, _ = OUTPUT_KINDS[self.output_kind]
        return self.from_unit(activation(self.raw(x)))

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of mapping ``x`` to ``target`` (both model-ready)."""
        _, loss_fn = OUTPUT_KINDS[self.output_kind]
        goal = self.to_unit(target).clamp(0.0, 1.0)  # exemplars are training samples: inside the range
        return loss_fn(self.raw(x), goal)


class Reshape(nn.Module):
    """``x.view(-1, *shape)``: exports as one ONNX Reshape with a constant shape. ``nn.Unflatten`` exports as a
    dozen shape ops (Shape, Slice, Mod, Concat, ...), each a few microseconds at batch 1 on a small CPU.
    Parameter-free, so it replaces ``nn.Unflatten`` without changing a state dict."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, *self.shape)


def _scaled(width: int, factor: float, floor: int) -> int:
    return max(floor, int(round(width * factor)))


@AUTOENCODERS.register("dense")
class DenseAutoencoder(ConvertingAutoencoder):
    """The paper's dense autoencoder, 784 -> 512 -> 256 -> 32 -> 784, scaled to the input size.

    Args:
        hidden: encoder widths at the reference size (default (512, 256)).
        code: bottleneck width at the reference size (the paper uses 64 or 32).
        reference_size: input size the widths are given for (784 = 28x28).
        scale: ``input`` scales every width by input_size / reference_size (with floors of
            ``min_width`` and ``min_code``); ``none`` keeps them as given.
        pool: average-pool (C, H, W) inputs by this factor before the encoder (1: off). The decoder
            still writes every pixel; the encoder's input size (what ``scale`` uses) shrinks by pool².
    """

    def __init__(self, input_shape: tuple[int, ...], value_range: Any, output: str = "sigmoid",
                 hidden: Sequence[int] = (512, 256), code: int = 32, reference_size: int = 784,
                 scale: str = "input", min_width: int = 32, min_code: int = 16, pool: int = 1) -> None:
        super().__init__(input_shape, value_range, output)
        size = math.prod(input_shape)
        layers: list[nn.Module] = []
        if pool > 1:
            if len(input_shape) != 3:
                raise ConfigError(f"autoencoder 'dense' pool needs (C, H, W) inputs, got shape {list(input_shape)}")
            layers.append(nn.AvgPool2d(pool, ceil_mode=True))
        encoder_in = math.prod(nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1:])
        scales = {"input": encoder_in / reference_size, "none": 1.0}
        if scale not in scales:
            raise ConfigError(f"autoencoder scale: expected one of {', '.join(scales)}, got {scale!r}")
        factor = scales[scale]
        widths = [_scaled(w, factor, min_width) for w in hidden] + [_scaled(code, factor, min_code)]
        layers.append(nn.Flatten())
        prev = encoder_in
        for w in widths:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        layers += [nn.Linear(prev, size), Reshape(input_shape)]
        self.widths = widths
        self.net = nn.Sequential(*layers)


@AUTOENCODERS.register("conv")
class ConvAutoencoder(ConvertingAutoencoder):
    """A small convolutional autoencoder: two stride-2 convs, a dense bottleneck (the class
    decision needs the whole image), then upsample + conv twice back to the input size.

    Args:
        widths: channels of the two encoder convs (the decoder mirrors them).
        code: bottleneck width.
    """

    def __init__(self, input_shape: tuple[int, ...], value_range: Any, output: str = "sigmoid",
                 widths: Sequence[int] = (8, 16), code: int = 32) -> None:
        super().__init__(input_shape, value_range, output)
        if len(input_shape) != 3:
            raise ConfigError(f"autoencoder 'conv' needs (C, H, W) inputs, got shape {list(input_shape)}")
        c, h, w = input_shape
        w1, w2 = (int(v) for v in widths)
        h1, wd1 = (h + 1) // 2, (w + 1) // 2
        h2, wd2 = (h1 + 1) // 2, (wd1 + 1) // 2
        self.net = nn.Sequential(
            nn.Conv2d(c, w1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(w2 * h2 * wd2, code), nn.ReLU(),
            nn.Linear(code, w2 * h2 * wd2), nn.ReLU(), Reshape((w2, h2, wd2)),
            nn.Upsample(size=(h1, wd1), mode="nearest"), nn.Conv2d(w2, w1, 3, padding=1), nn.ReLU(),
            nn.Upsample(size=(h, w), mode="nearest"), nn.Conv2d(w1, c, 3, padding=1),
        )
