"""A torchvision-style ResNet written the way a user writes one: plain ``nn.Module``, no edge-runtime imports.

``build_resnet(num_classes=10)`` is the factory a recipe names (``examples/resnet_digits.yaml``);
``python examples/resnet_digits.py OUT`` takes the Python path instead: exits attached by ``attach_exits`` and the
bundle written by ``convert(..., model=...)`` on the shipped digits data.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with BatchNorm, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout (stem, layer1..layer4, avgpool, fc), sized for small grey images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 128, 256),
                 blocks: tuple[int, ...] = (1, 1, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i < 2 else 2
            layers.append(nn.Sequential(*[BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> ResNet:
    """The factory a recipe names (``width``: channels of layer1; the later layers have 2x, 8x and 16x)."""
    return ResNet(num_classes=num_classes, in_channels=in_channels, widths=(width, 2 * width, 8 * width, 16 * width))


if __name__ == "__main__":  # the Python path: exits attached and a bundle written in three lines
    import sys

    from converters import attach_exits, convert

    model = attach_exits(build_resnet(), torch.zeros(1, 1, 28, 28), at=["layer1", "layer2", "layer3"])
    recipe = Path(__file__).with_name("resnet_digits.yaml")   # data, training, calibration (its model is ignored)
    convert(recipe, sys.argv[1] if len(sys.argv) > 1 else "out/resnet_digits_py", model=model)
