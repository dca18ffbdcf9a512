"""A small Vision Transformer backbone (patch embedding + CLS token + pre-norm blocks), export-friendly."""

from __future__ import annotations

import torch
from torch import nn

from converters.models import heads as _heads  # noqa: F401  (registers cls_linear)
from converters.models.registry import create_head


class PatchEmbed(nn.Module):
    """Image -> patch tokens with a CLS token prepended and learned position embeddings."""

    def __init__(self, in_channels: int, image_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(t.shape[0], -1, -1)
        return torch.cat([cls, t], dim=1) + self.pos_embed


class Attention(nn.Module):
    """Multi-head self-attention written out with matmuls (exports to plain ONNX ops)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A plain ViT classifier (the user's model): ``patch_embed`` + ``blocks`` + ``head`` (LayerNorm, CLS, linear).

    Its ``state_dict`` keys (``patch_embed.*``, ``blocks.<i>.*``, ``head.*``) are the names
    user weights are loaded under (see :func:`converters.methods.lgvit.model.load_backbone_weights`).

    Example:
        >>> vit = VisionTransformer(1, 16, 4, 10, dim=32, depth=2, heads=4)
        >>> vit(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, image_size: int, patch_size: int, num_classes: int,
                 dim: int = 64, depth: int = 8, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, image_size, patch_size, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.head = create_head("cls_linear", dim=dim, num_classes=num_classes)
        self.dim = dim
        self.num_prefix_tokens = 1
        self.input_shape = (in_channels, image_size, image_size)
        self.apply(_init_vit_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _init_vit_weights(module: nn.Module) -> None:
    """timm's ViT init: truncated-normal(0.02) linear weights, zero biases (trains faster than the default)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
