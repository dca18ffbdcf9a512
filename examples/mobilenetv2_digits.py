"""A MobileNetV2-style network written the way a user writes one (torchvision's layout: ``features`` of inverted
residual blocks, then ``classifier``), sized for small grey images. Plain ``nn.Module``, no edge-runtime imports."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, 1))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 settings (t, c, n, s), narrowed (``width``) for 28x28 digits."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 1), (6, 64, 2, 2), (6, 96, 2, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 0.5, last: int = 256) -> None:
        super().__init__()
        cin = int(32 * width)
        features: list[nn.Module] = [ConvBNReLU(in_channels, cin, 3, 1)]
        for t, c, n, s in self.SETTINGS:
            cout = max(8, int(c * width))
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNReLU(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def build_mobilenetv2(num_classes: int = 10, in_channels: int = 1, width: float = 0.5) -> MobileNetV2:
    """The factory a recipe names."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, width=width)
