"""LGViT exit heads (local perception, global aggregation) and ViT builders with them (Xu et al., ACM MM 2023).

Heads are registered in :data:`converters.models.heads.HEADS` (``lgvit_local``, ``lgvit_global``);
builders in :data:`converters.models.zoo.MODELS` (``lgvit_vit``, and ``vit_linear``: the same
backbone with ``cls_linear`` heads, the baseline). :func:`attach_lgvit_heads` puts exits on
any ViT-style backbone (``patch_embed`` + CLS + ``blocks``); :func:`load_backbone_weights`
loads the user's own weights from a state_dict file. The two training stages are in
:mod:`converters.methods.lgvit.losses` (``lgvit_stage1``, ``lgvit_stage2`` in LOSSES).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from converters.models.contract import EarlyExitModel, from_transformer_encoder
from converters.models.registry import HEADS, MODELS, create_head
from converters.models.vit import Attention, VisionTransformer
from edge_runtime.errors import ConfigError


class HeadOutputs(NamedTuple):
    """What an LGViT head computes: its token map, its pooled features (classifier input), its logits."""

    tokens: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor


class _LGViTHead(nn.Module):
    """Shared LGViT head tail: LayerNorm the tokens, transform the patch tokens (subclass),
    average-pool them, concatenate the CLS token, linear classifier."""

    kind = ""

    def __init__(self, dim: int, num_classes: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if num_prefix_tokens < 1:
            raise ConfigError(f"{type(self).__name__}: num_prefix_tokens must be >= 1 (CLS first), "
                              f"got {num_prefix_tokens}")
        self.dim = dim
        self.num_prefix_tokens = num_prefix_tokens
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(2 * dim, num_classes)

    def _transform(self, patches: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, tokens: torch.Tensor) -> torch.Tensor:
        """The patch tokens this head looks at (CLS/distillation tokens dropped)."""
        return tokens[:, self.num_prefix_tokens:]

    def parts(self, h: torch.Tensor) -> HeadOutputs:
        """Token map, pooled features and logits in one pass (what the feature losses use)."""
        t = self.norm(h)
        tokens = self._transform(self.select(t))
        features = torch.cat([tokens.mean(dim=1), t[:, 0]], dim=-1)
        return HeadOutputs(tokens, features, self.fc(features))

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """Classifier input: [mean-pooled head tokens ; CLS], shape (B, 2*dim)."""
        return self.parts(h).features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.parts(h).logits


@HEADS.register("lgvit_local")
class LocalPerceptionHead(_LGViTHead):
    """LGViT local perception head: patch tokens folded to a sqrt(N) x sqrt(N) grid, then
    1x1 conv -> GELU -> BN -> [depthwise 3x3 conv -> GELU -> BN] -> 1x1 conv -> BN, plus the input.

    Args:
        dim: token width.
        num_classes: classifier outputs.
        num_tokens: tokens per sample including the prefix (CLS) tokens; N = num_tokens - prefix
            must be a square.
        num_prefix_tokens: leading tokens that are not patches (CLS, distillation).
        depthwise: include the depthwise 3x3 conv (LGViT drops it at its later local exits).
        hidden_ratio: width of the 1x1 convs relative to ``dim`` (1.0 in the paper).

    Example:
        >>> head = create_head("lgvit_local", dim=16, num_classes=10, num_tokens=17)
        >>> head(torch.zeros(2, 17, 16)).shape
        torch.Size([2, 10])
    """

    kind = "local"

    def __init__(self, dim: int, num_classes: int, num_tokens: int, num_prefix_tokens: int = 1,
                 depthwise: bool = True, hidden_ratio: float = 1.0) -> None:
        super().__init__(dim, num_classes, num_prefix_tokens)
        n = num_tokens - num_prefix_tokens
        self.grid = math.isqrt(max(n, 0))
        if n <= 0 or self.grid * self.grid != n:
            raise ConfigError(f"lgvit_local: num_tokens - num_prefix_tokens = {n} patch tokens is not a square grid")
        hidden = max(1, int(round(dim * hidden_ratio)))
        layers: list[nn.Module] = [nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden)]
        if depthwise:
            layers += [nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU(), nn.BatchNorm2d(hidden)]
        layers += [nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim)]
        self.conv = nn.Sequential(*layers)
        self.depthwise = depthwise

    def _transform(self, patches: torch.Tensor) -> torch.Tensor:
        grid = patches.transpose(1, 2).unflatten(2, (self.grid, self.grid))
        return patches + self.conv(grid).flatten(2).transpose(1, 2)


@HEADS.register("lgvit_global")
class GlobalAggregationHead(_LGViTHead):
    """LGViT global aggregation head: every ``stride``-th patch token, multi-head self-attention
    (no qkv bias) with its linear projection, plus the input.

    Args:
        dim: token width.
        num_classes: classifier outputs.
        stride: keep patch tokens 0, stride, 2*stride, ... (LGViT: 2 at the first deep exits, 3 later).
        attn_heads: attention heads (8 in the paper); must divide ``dim``.
        num_prefix_tokens: leading tokens that are not patches.

    Example:
        >>> head = create_head("lgvit_global", dim=16, num_classes=10, stride=2, attn_heads=4)
        >>> head(torch.zeros(2, 17, 16)).shape
        torch.Size([2, 10])
    """

    kind = "global"

    def __init__(self, dim: int, num_classes: int, stride: int = 2, attn_heads: int = 8,
                 num_prefix_tokens: int = 1, **_: Any) -> None:
        super().__init__(dim, num_classes, num_prefix_tokens)
        if stride < 1:
            raise ConfigError(f"lgvit_global: stride must be >= 1, got {stride}")
        if dim % attn_heads:
            raise ConfigError(f"lgvit_global: attn_heads={attn_heads} does not divide dim={dim}")
        self.stride = stride
        self.attn = Attention(dim, attn_heads, qkv_bias=False)

    def select(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.num_prefix_tokens::self.stride]

    def _transform(self, patches: torch.Tensor) -> torch.Tensor:
        return patches + self.attn(patches)


def lgvit_head_schedule(num_exits: int) -> list[dict[str, Any]]:
    """LGViT's layout scaled to ``num_exits`` early exits: the first half local heads (the first
    half of those with the depthwise conv), the rest global heads (stride 2, then 3).

    Example:
        >>> [h["name"] for h in lgvit_head_schedule(4)]
        ['lgvit_local', 'lgvit_local', 'lgvit_global', 'lgvit_global']
    """
    n_local = (num_exits + 1) // 2
    n_global = num_exits - n_local
    specs = [{"name": "lgvit_local", "kwargs": {"depthwise": i < (n_local + 1) // 2}} for i in range(n_local)]
    specs += [{"name": "lgvit_global", "kwargs": {"stride": 2 if i < (n_global + 1) // 2 else 3}}
              for i in range(n_global)]
    return specs


def _head_spec(spec: Any, where: str) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec, "kwargs": {}}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str) and set(spec) <= {"name", "kwargs"}:
        return {"name": spec["name"], "kwargs": dict(spec.get("kwargs") or {})}
    raise ConfigError(f"{where}: expected a head-type name or {{name: ..., kwargs: {{...}}}}, got {spec!r}")


def attach_lgvit_heads(
    backbone: nn.Module,
    exits_after: Sequence[int],
    num_classes: int,
    exit_heads: Sequence[Any] | None = None,
    *,
    head_kwargs: dict[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
) -> EarlyExitModel:
    """Cut a ViT-style backbone after the given blocks and attach an exit head at each cut.

    The backbone needs ``patch_embed`` (image -> tokens, CLS first; ``num_patches`` and
    ``cls_token`` attributes) and ``blocks``; its ``head`` (if any) stays the final classifier,
    otherwise a ``cls_linear`` head is made. Its modules are shared, not copied.

    Args:
        backbone: e.g. :class:`converters.models.vit.VisionTransformer` with the user's weights loaded.
        exits_after: block indices after which an early exit sits.
        num_classes: classifier outputs of the new heads.
        exit_heads: per early exit a registered head type (name or ``{name, kwargs}``);
            default :func:`lgvit_head_schedule` (local at shallow exits, global at deep ones).
        head_kwargs: extra keyword arguments for every head of a given type, ``{type: {...}}``
            (e.g. ``{"lgvit_global": {"attn_heads": 4}}``).
        input_shape: one sample's input shape (default ``backbone.input_shape``).

    Example:
        >>> vit = VisionTransformer(1, 16, 4, 10, dim=32, depth=4, heads=4)
        >>> m = attach_lgvit_heads(vit, [0, 1, 2], 10, head_kwargs={"lgvit_global": {"attn_heads": 4}})
        >>> m.head_types
        ['lgvit_local', 'lgvit_local', 'lgvit_global', 'cls_linear']
    """
    for attr in ("patch_embed", "blocks"):
        if not hasattr(backbone, attr):
            raise ConfigError(f"attach_lgvit_heads: the backbone has no {attr!r} (need patch_embed + CLS + blocks)")
    embed: Any = backbone.patch_embed
    dim = int(embed.cls_token.shape[-1])
    prefix = int(getattr(backbone, "num_prefix_tokens", 1))
    num_tokens = int(embed.num_patches) + prefix
    cuts = sorted(set(int(e) for e in exits_after))
    specs = [_head_spec(s, f"exit_heads[{i}]") for i, s in enumerate(exit_heads)] if exit_heads is not None \
        else lgvit_head_schedule(len(cuts))
    if len(specs) != len(cuts):
        raise ConfigError(f"exit_heads: expected {len(cuts)} head types (one per early exit), got {len(specs)}")
    extra = head_kwargs or {}
    common = {"dim": dim, "num_classes": num_classes, "num_tokens": num_tokens, "num_prefix_tokens": prefix}

    def make(i: int) -> nn.Module:
        spec = specs[cuts.index(i)]
        return create_head(spec["name"], **{**common, **extra.get(spec["name"], {}), **spec["kwargs"]})

    final = getattr(backbone, "head", None)
    if final is None:
        final = create_head("cls_linear", dim=dim, num_classes=num_classes)
    shape = input_shape if input_shape is not None else getattr(backbone, "input_shape", None)
    if shape is None:
        raise ConfigError("attach_lgvit_heads: pass input_shape (the backbone has no input_shape attribute)")
    return from_transformer_encoder(
        embed, list(backbone.blocks), cuts, make, final, input_shape=shape,  # type: ignore[arg-type]
        head_types=[s["name"] for s in specs] + [getattr(final, "head_type", "cls_linear")],
    )


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load the user's weights (a state_dict file, ``torch.load(weights_only=True)``) into ``backbone``.

    Keys must match ``backbone.state_dict()`` (for :class:`VisionTransformer`: ``patch_embed.*``,
    ``blocks.<i>.*``, ``head.*``). A file without any ``head.*`` keys loads the backbone only
    (the final classifier is then trained from scratch). A ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        ConfigError: the file is missing or unreadable, or keys are missing/unexpected/mis-shaped
            (each named).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model.kwargs.pretrained: weights file {p} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
        raise ConfigError(f"{p}: not a state_dict loadable with weights_only=True: {exc}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and set(state) == {wrapper} and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{p}: expected a state_dict (a mapping of names to tensors)")
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing and all(k.startswith("head.") for k in missing) and not any(k.startswith("head.") for k in state):
        missing = []
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ConfigError(f"{p}: state_dict does not fit the backbone; missing keys: {missing or 'none'}; "
                          f"unexpected keys: {unexpected or 'none'}")
    bad = [f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
           if v.shape != own[k].shape]
    if bad:
        raise ConfigError(f"{p}: state_dict shapes do not fit the backbone: {'; '.join(bad)}")
    backbone.load_state_dict(state, strict=False)


@MODELS.register("lgvit_vit")
def lgvit_vit(
    in_channels: int = 1,
    image_size: int = 16,
    patch_size: int = 4,
    num_classes: int = 10,
    dim: int = 32,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    exits_after: Sequence[int] = (0, 1, 2),
    exit_heads: Sequence[Any] | None = None,
    head_kwargs: dict[str, Any] | None = None,
    pretrained: str | None = None,
) -> EarlyExitModel:
    """A ViT (patch tokens + CLS) with LGViT exit heads after the given blocks.

    ``exit_heads`` picks a head type per early exit (default: local heads at the shallow half,
    global heads at the deep half); ``head_kwargs`` defaults ``lgvit_global.attn_heads`` to
    ``heads`` when 8 does not divide ``dim``. ``pretrained`` is a state_dict file of a
    :class:`VisionTransformer` of the same shape (the user's own backbone).
    """
    vit = VisionTransformer(in_channels, image_size, patch_size, num_classes, dim, depth, heads, mlp_ratio)
    if pretrained:
        load_backbone_weights(vit, pretrained)
    kwargs = {k: dict(v) for k, v in (head_kwargs or {}).items()}
    if dim % 8:
        kwargs.setdefault("lgvit_global", {}).setdefault("attn_heads", heads)
    return attach_lgvit_heads(vit, exits_after, num_classes, exit_heads, head_kwargs=kwargs)


@MODELS.register("vit_linear")
def vit_linear(exits_after: Sequence[int] = (0, 1, 2), **kwargs: Any) -> EarlyExitModel:
    """The linear-head baseline: :func:`lgvit_vit`'s backbone with ``cls_linear`` heads at the same exits."""
    if "exit_heads" in kwargs:
        raise ConfigError("vit_linear: exit_heads is fixed to cls_linear (use lgvit_vit to choose head types)")
    n = len(set(int(e) for e in exits_after))
    return lgvit_vit(exits_after=exits_after, exit_heads=["cls_linear"] * n, **kwargs)
