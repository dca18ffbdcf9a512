"""The generic exit-head types, registered in :data:`converters.models.registry.HEADS`.

CNN heads take (B, C, H, W) feature maps (the ``1d`` ones (B, C, L)); transformer heads take (B, tokens, dim)
token sequences whose first token is CLS. LGViT's heads register here too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from converters.models.registry import HEADS
from edge_runtime.errors import ConfigError


@HEADS.register("pool_linear")
class PoolLinearHead(nn.Module):
    """Global average pool then a linear classifier (the usual CNN classifier)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(h), 1))


@HEADS.register("flatten_linear")
class FlattenLinearHead(nn.Module):
    """Flatten then one or more linear layers (LeNet's classifier shape)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            layers += [nn.Linear(in_features, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


@HEADS.register("linear")
class LinearHead(nn.Module):
    """One linear layer on a feature vector (N, in_features), or on anything that flattens to one — e.g.
    LeNet's last layer."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h if h.dim() == 2 else torch.flatten(h, 1))


@HEADS.register("branchy_conv")
class BranchyConvHead(nn.Module):
    """BranchyNet side branch: a small conv block, global pool, linear classifier."""

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(h)), 1))


@HEADS.register("cls_linear")
class ClsLinearHead(nn.Module):
    """Transformer head: LayerNorm, take the CLS token, linear classifier (ViT's own head)."""

    def __init__(self, dim: int, num_classes: int, **_: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(h)[:, 0])


@HEADS.register("pool1d_linear")
class Pool1dLinearHead(nn.Module):
    """1-D feature maps (B, C, L): global average pool over L, then a linear classifier."""

    input_rank = 3

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(h), 1))


@HEADS.register("branchy_conv1d")
class BranchyConv1dHead(nn.Module):
    """BranchyNet side branch for 1-D feature maps (B, C, L): conv3 + BN + ReLU, global pool, linear."""

    input_rank = 3

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(channels, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.conv(h)), 1))


@HEADS.register("token_linear")
class TokenLinearHead(nn.Module):
    """Token sequences (B, T, D): pool the tokens (``mean``, or ``cls``: the first token), LayerNorm, linear."""

    def __init__(self, dim: int, num_classes: int, pool: str = "mean", **_: Any) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ConfigError(f"token_linear pool: expected 'mean' or 'cls', got {pool!r}")
        self.pool = pool
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = h.mean(dim=1) if self.pool == "mean" else h[:, 0]
        return self.fc(self.norm(z))
