"""BranchyNet CNNs (Teerapittayanon et al., ICPR 2016): a LeNet with two side branches and a
ResNet-style CNN with three, registered in :data:`converters.models.zoo.MODELS`.

Both are trained on the weighted sum of exit losses (``weighted_exits``) and exit on softmax
entropy. The ResNet-style CNN is shaped for early exit on small images: a cheap first
segment (stem + one narrow block at half resolution) carries an accurate spatial branch, and
the compute sits in the deep, wide stages that only hard inputs reach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from converters.models import heads as _heads  # noqa: F401  (registers the heads the builders use)
from converters.models.contract import EarlyExitModel
from converters.models.registry import HEADS, MODELS, create_head
from edge_runtime.errors import ConfigError


@HEADS.register("conv_pool_linear")
class ConvPoolLinearHead(nn.Module):
    """A side branch that keeps coarse spatial layout: conv3x3 (stride) + BN + ReLU, adaptive average
    pool to ``grid`` x ``grid``, flatten, linear. (Global pooling loses where strokes are, which
    is most of what a shallow branch knows about a digit.) ``grid`` must divide the conv's output
    size (ONNX exports only whole-window adaptive pooling).
    """

    def __init__(self, channels: int, num_classes: int, width: int = 16, grid: int = 7, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Linear(width * grid * grid, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(h)), 1))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


def _head_spec(exit_heads: Any, i: int, n: int, default: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The recipe's ``heads`` entry for early exit ``i`` (a name or ``{name, kwargs}``), else the default."""
    if exit_heads is None:
        spec: Any = default
    else:
        if not isinstance(exit_heads, (list, tuple)) or len(exit_heads) != n:
            raise ConfigError(f"exit_heads: expected a list of {n} head specs (one per early exit), got {exit_heads!r}")
        spec = exit_heads[i]
    if isinstance(spec, str):
        return spec, {}
    return spec["name"], dict(spec.get("kwargs") or {})


@MODELS.register("branchynet_lenet")
def branchynet_lenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                     exit_heads: Any = None) -> EarlyExitModel:
    """LeNet-5 (conv5x5 6 -> pool -> conv5x5 16 -> pool -> fc 120 -> fc 84 -> fc 10) with BranchyNet's
    two side branches: after the first conv block and after the second. The paper's reference
    configuration; so small that per-call overhead, not compute, bounds early exit at batch 1.

    Args:
        exit_heads: head type per branch (two names or ``{name, kwargs}``; the recipe's ``heads``).
    """
    s1 = image_size // 2                      # conv1 keeps the size (padding 2), pool halves it
    s2 = (s1 - 4) // 2                        # conv2 5x5 valid, pool
    seg0 = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    seg1 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
    seg2 = nn.Sequential(nn.Flatten(), nn.Linear(16 * s2 * s2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
    chans = [6, 16]
    defaults = [{"name": "conv_pool_linear", "kwargs": {"width": 8, "grid": s1 // 2, "stride": 2}},
                {"name": "flatten_linear", "kwargs": {"in_features": 16 * s2 * s2}}]
    early = []
    for i in range(2):
        name, kw = _head_spec(exit_heads, i, len(defaults), defaults[i])
        kw.setdefault("num_classes", num_classes)
        if name != "flatten_linear":
            kw.setdefault("channels", chans[i])
        early.append((name, create_head(name, **kw)))
    final = create_head("linear", in_features=84, num_classes=num_classes)
    return EarlyExitModel([seg0, seg1, seg2], [h for _, h in early] + [final],
                          head_types=[n for n, _ in early] + ["linear"],
                          input_shape=(in_channels, image_size, image_size))


@MODELS.register("branchynet_resnet")
def branchynet_resnet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                      widths: Sequence[int] = (16, 32, 96, 192), blocks: Sequence[int] = (1, 1, 2, 2),
                      exit_heads: Any = None) -> EarlyExitModel:
    """A ResNet-style CNN with four stages and three BranchyNet side branches (4 exits).

    stem conv3x3 + maxpool (H/2) -> stage 0 [exit 0] -> stage 1 [exit 1] -> stage 2, stride 2 [exit 2]
    -> stage 3, stride 2 -> global pool + linear (final). Stage i has ``blocks[i]`` basic blocks of
    width ``widths[i]``. Exits 0 and 1 sit on cheap features but keep a spatial grid.

    Args:
        widths: channels per stage (4 values).
        blocks: basic blocks per stage (4 values).
        exit_heads: head type per branch (three names or ``{name, kwargs}``; the recipe's ``heads``).
    """
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError(f"widths and blocks need 4 values (one per stage), got {list(widths)}, {list(blocks)}")
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(2))
    stages: list[nn.Module] = []
    cin = widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks)):
        stride = 2 if i >= 2 else 1
        layers = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w) for _ in range(n - 1)]
        stages.append(nn.Sequential(*layers))
        cin = w
    segments = [nn.Sequential(stem, stages[0]), stages[1], stages[2], stages[3]]
    half = image_size // 4                    # branch conv (stride 2) output size after stem pooling
    defaults = [{"name": "conv_pool_linear", "kwargs": {"width": 16, "grid": half, "stride": 2}},
                {"name": "conv_pool_linear", "kwargs": {"width": 32, "grid": half, "stride": 2}},
                {"name": "pool_linear", "kwargs": {}}]
    early = []
    for i in range(3):
        name, kw = _head_spec(exit_heads, i, len(defaults), defaults[i])
        kw.setdefault("channels", widths[i])
        kw.setdefault("num_classes", num_classes)
        early.append((name, create_head(name, **kw)))
    final = create_head("pool_linear", channels=widths[3], num_classes=num_classes)
    return EarlyExitModel(segments, [h for _, h in early] + [final],
                          head_types=[n for n, _ in early] + ["pool_linear"],
                          input_shape=(in_channels, image_size, image_size))
