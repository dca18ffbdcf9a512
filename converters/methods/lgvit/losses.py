"""LGViT's two training stages as LOSSES entries: ``lgvit_stage1`` (end-to-end) and ``lgvit_stage2``
(self-distillation into the exit heads with the backbone frozen) (Xu et al., ACM MM 2023).

Feature losses need LGViT heads (anything with ``parts(h) -> HeadOutputs`` and a ``kind``);
other exit heads (e.g. the ``cls_linear`` baseline) get the CE + KD terms only, so both head
families can be trained with the same recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from converters.models.contract import EarlyExitModel
from converters.training.augment import random_shift
from converters.training.losses import ExitLoss, kd_loss
from converters.training.registry import LOSSES
from edge_runtime.errors import ConfigError


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Per-token LayerNorm without affine: feature losses compare shapes, not scales."""
    return F.layer_norm(x, x.shape[-1:])


def gram(tokens: torch.Tensor) -> torch.Tensor:
    """Channel Gram matrix (B, dim, dim) of a token map (B, N, dim), divided by N (any stride fits)."""
    return tokens.transpose(1, 2) @ tokens / tokens.shape[1]


def heterogeneous_loss(head: Any, head_tokens: torch.Tensor, final_hidden: torch.Tensor) -> torch.Tensor:
    """MSE between a head's token map and the final layer's patch tokens at the same positions."""
    target = head.select(final_hidden)
    return F.mse_loss(_unit(head_tokens), _unit(target).detach())


def homogeneous_loss(kind: str, tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """MSE against the last head of the same kind: token maps for local heads, Gram matrices for global ones."""
    s, t = _unit(tokens), _unit(teacher_tokens).detach()
    if kind == "global":
        s, t = gram(s), gram(t)
    return F.mse_loss(s, t)


def _check_unit(value: Any, name: str, low: float = 0.0, high: float | None = None) -> float:
    v = float(value)
    if v < low or (high is not None and v > high):
        upper = high if high is not None else "inf"
        raise ConfigError(f"loss {name}: expected a number in [{low}, {upper}], got {value!r}")
    return v


@LOSSES.register("lgvit_stage1")
class LGViTStage1Loss(ExitLoss):
    """LGViT stage 1, end-to-end: even steps train on the final loss alone; odd steps on the
    depth-weighted mean of the early exits' losses (exit i weight i+1) plus the final loss.

    Args:
        alternate: alternate as above (default); False uses the odd-step loss every step.
        shift: random translation of each training image by up to this many pixels (0: none);
            small ViTs trained from scratch on small data need it.
    """

    def __init__(self, model: EarlyExitModel, alternate: bool = True, shift: int = 0) -> None:
        super().__init__(model)
        if not isinstance(alternate, bool):
            raise ConfigError(f"loss lgvit_stage1 alternate: expected true/false, got {alternate!r}")
        self.alternate = alternate
        self.shift = int(_check_unit(shift, "lgvit_stage1 shift"))
        n = model.num_exits - 1
        self.weights = [(i + 1) / (n * (n + 1) / 2) for i in range(n)]

    def __call__(self, model, x, y, step):
        logits = model(random_shift(x, self.shift))
        final = F.cross_entropy(logits[-1], y)
        if self.alternate and step % 2 == 0 or not self.weights:
            return final, logits
        exits = sum(w * F.cross_entropy(z, y) for w, z in zip(self.weights, logits[:-1]))
        return exits + final, logits


@LOSSES.register("lgvit_stage2")
class LGViTStage2Loss(ExitLoss):
    """LGViT stage 2: the backbone and final classifier frozen (eval mode, no gradients); each
    early exit learns (1-alpha)*CE + alpha*KD(final logits, T), averaged over exits, plus
    beta * (heterogeneous + homogeneous feature losses).

    Args:
        alpha: weight of the distillation term (paper code: 0.3).
        beta: weight of the feature losses (paper code: 0.01).
        temperature: distillation temperature (2).
        shift: random translation of each training image by up to this many pixels (0: none).
    """

    def __init__(self, model: EarlyExitModel, alpha: float = 0.3, beta: float = 0.01, temperature: float = 2.0,
                 shift: int = 0) -> None:
        super().__init__(model)
        self.shift = int(_check_unit(shift, "lgvit_stage2 shift"))
        self.alpha = _check_unit(alpha, "lgvit_stage2 alpha", 0.0, 1.0)
        self.beta = _check_unit(beta, "lgvit_stage2 beta")
        self.temperature = _check_unit(temperature, "lgvit_stage2 temperature")
        if self.temperature <= 0:
            raise ConfigError("loss lgvit_stage2 temperature: must be > 0")
        if model.num_exits < 2:
            raise ConfigError("loss lgvit_stage2: the model has no early exit to distil into")

    @staticmethod
    def _frozen(model: EarlyExitModel) -> list[nn.Module]:
        return [*model.segments, model.heads[-1]]

    def trainable_parameters(self, model: Any) -> list[nn.Parameter]:
        return [p for head in model.heads[:-1] for p in head.parameters()]

    def train_mode(self, model: Any) -> None:
        model.train()
        for module in self._frozen(model):
            module.eval()

    def __call__(self, model, x, y, step):
        with torch.no_grad():
            hidden = []
            h = random_shift(x, self.shift)
            for segment in model.segments:
                h = segment(h)
                hidden.append(h)
            final_logits = model.heads[-1](h)
        final_hidden = hidden[-1]
        outs: list[tuple[nn.Module, Any]] = []
        logits: list[torch.Tensor] = []
        for head, hid in zip(model.heads[:-1], hidden[:-1]):
            parts = head.parts(hid) if hasattr(head, "parts") else None
            outs.append((head, parts))
            logits.append(parts.logits if parts is not None else head(hid))
        a, t = self.alpha, self.temperature
        task = sum((1 - a) * F.cross_entropy(z, y) + a * kd_loss(z, final_logits, t) for z in logits) / len(logits)
        return task + self.beta * self.feature_loss(outs, final_hidden), [*logits, final_logits]

    @staticmethod
    def feature_loss(outs: list[tuple[nn.Module, Any]], final_hidden: torch.Tensor) -> torch.Tensor:
        """Heterogeneous (every LGViT head vs the final patch tokens) plus homogeneous (each head
        vs the last head of its kind) feature losses, each averaged over the heads it covers."""
        lg: list[tuple[Any, Any]] = [(head, parts) for head, parts in outs if parts is not None]
        if not lg:
            return final_hidden.new_zeros(())
        hete = torch.stack([heterogeneous_loss(head, p.tokens, final_hidden) for head, p in lg]).mean()
        last = {head.kind: p.tokens for head, p in lg}
        pairs = [(str(head.kind), p.tokens) for head, p in lg if p.tokens is not last[head.kind]]
        if not pairs:
            return hete
        return hete + torch.stack([homogeneous_loss(k, tok, last[k]) for k, tok in pairs]).mean()
