"""Registered model builders: ``create_model(name, **kwargs) -> EarlyExitModel``.

Recipes name a builder and its arguments. Tests run over every registered builder,
so the tiny ones here double as test models (timm's ``test_*`` models).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from converters.models import heads as _heads  # noqa: F401  (registers the heads the builders use)
from converters.models.contract import EarlyExitModel, from_sequential_cnn, from_transformer_encoder
from converters.models.registry import MODELS, create_head
from converters.models.vit import Block, PatchEmbed


def _conv_block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@MODELS.register("tiny_cnn")
def tiny_cnn(
    in_channels: int = 1,
    image_size: int = 16,
    num_classes: int = 10,
    widths: Sequence[int] = (8, 16, 16, 32),
    exits_after: Sequence[int] = (0, 1),
    head: str = "branchy_conv",
) -> EarlyExitModel:
    """A small sequential CNN with BranchyNet-style side branches after the given blocks."""
    blocks = []
    cin = in_channels
    for i, w in enumerate(widths):
        blocks.append(_conv_block(cin, w, pool=i % 2 == 1))
        cin = w
    chans = list(widths)
    n_exits = len(set(exits_after)) + 1
    return from_sequential_cnn(
        blocks,
        exits_after,
        lambda i: create_head(head, channels=chans[i], num_classes=num_classes),
        create_head("pool_linear", channels=chans[-1], num_classes=num_classes),
        input_shape=(in_channels, image_size, image_size),
        head_types=[head] * (n_exits - 1) + ["pool_linear"],
    )


@MODELS.register("tiny_transformer")
def tiny_transformer(
    in_channels: int = 1,
    image_size: int = 16,
    patch_size: int = 4,
    num_classes: int = 10,
    dim: int = 32,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    exits_after: Sequence[int] = (0, 1, 2),
    head: str = "cls_linear",
) -> EarlyExitModel:
    """A tiny ViT (patch tokens + CLS) whose blocks are grouped into segments, a head after each."""
    embed = PatchEmbed(in_channels, image_size, patch_size, dim)
    blocks = [Block(dim, heads, mlp_ratio) for _ in range(depth)]
    n_exits = len(set(exits_after)) + 1
    tokens = embed.num_patches + 1
    return from_transformer_encoder(
        embed,
        blocks,
        exits_after,
        lambda i: create_head(head, dim=dim, num_classes=num_classes, num_tokens=tokens),
        create_head("cls_linear", dim=dim, num_classes=num_classes),
        input_shape=(in_channels, image_size, image_size),
        head_types=[head] * (n_exits - 1) + ["cls_linear"],
    )

