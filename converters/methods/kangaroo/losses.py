"""Kangaroo's two training objectives on the shared trainer (:class:`converters.training.trainer.Trainer`):
next-token cross-entropy for the LM (``kangaroo_lm``), then the adapter's soft-label cross-entropy to the full
model's next-token distribution, -sum p_full * log p_adapter, with everything but the adapter frozen
(``kangaroo_adapter``; Liu et al., NeurIPS 2024, eq. for the adapter loss).

Both take a batch of token windows: ``x`` the input ids (B, T), ``y`` the next tokens (B, T). The trainer may hand
token ids over as float32 (exact below 2**24); they are cast back to int64 here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from converters.methods.kangaroo.model import KangarooLM
from converters.training.losses import ExitLoss
from converters.training.registry import LOSSES
from edge_runtime.errors import ConfigError


def _lm(model: nn.Module, loss: str) -> KangarooLM:
    if not isinstance(model, KangarooLM):
        raise ConfigError(f"loss {loss}: {type(model).__name__} is not a Kangaroo LM (converters.methods.kangaroo)")
    return model


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of -sum_v softmax(teacher)_v * log_softmax(student)_v (Kangaroo's adapter loss).

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> round(float(soft_cross_entropy(z, z)), 4)   # log 2
        0.6931
    """
    p = F.softmax(teacher_logits.float(), dim=-1)
    return -(p * F.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


@LOSSES.register("kangaroo_lm")
class LanguageModelLoss(ExitLoss):
    """Next-token cross-entropy of the whole LM; the adapter stays frozen (it trains afterwards)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(_lm(model, "kangaroo_lm"))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        adapter = {id(p) for p in _lm(model, "kangaroo_lm").adapter.parameters()}
        return [p for p in model.parameters() if id(p) not in adapter]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = _lm(model, "kangaroo_lm")(x.long())
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.long().reshape(-1)), []


@LOSSES.register("kangaroo_adapter")
class AdapterLoss(ExitLoss):
    """The adapter learns the full model's next-token distribution from the shallow hidden states; the LM (its
    head included) is frozen and stays in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(_lm(model, "kangaroo_adapter"))

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return list(_lm(model, "kangaroo_adapter").adapter.parameters())

    def train_mode(self, model: nn.Module) -> None:
        model.eval()
        _lm(model, "kangaroo_adapter").adapter.train()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lm = _lm(model, "kangaroo_adapter")
        with torch.no_grad():
            teacher, shallow = lm.forward_with_exit(x.long())
        return soft_cross_entropy(lm.adapter_logits(shallow), teacher), []


@torch.no_grad()
def evaluate_lm(model: KangarooLM, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 32) -> dict[str, float]:
    """Held-out figures: the LM's loss, top-1 next-token accuracy and the entropy of its next-token distribution,
    the adapter's loss (soft cross-entropy to the LM; minus that entropy it is KL(p_full || p_adapter)) and how
    often its top-1 token is the LM's (the per-token greedy acceptance rate), and the expected acceptance
    sum_v min(p_full, p_adapter) the paper tracks."""
    model.eval()
    sums = {"lm_loss": 0.0, "lm_accuracy": 0.0, "lm_entropy": 0.0, "adapter_loss": 0.0, "adapter_agreement": 0.0,
            "adapter_expected_acceptance": 0.0}
    n = 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size].long(), y[i:i + batch_size].long()
        logits, shallow = model.forward_with_exit(xb)
        draft = model.adapter_logits(shallow)
        tokens = yb.numel()
        sums["lm_loss"] += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))) * tokens
        sums["lm_accuracy"] += float((logits.argmax(-1) == yb).sum())
        sums["lm_entropy"] += float(soft_cross_entropy(logits, logits)) * tokens
        sums["adapter_loss"] += float(soft_cross_entropy(draft, logits)) * tokens
        sums["adapter_agreement"] += float((draft.argmax(-1) == logits.argmax(-1)).sum())
        sums["adapter_expected_acceptance"] += float(torch.minimum(F.softmax(logits, -1), F.softmax(draft, -1)).sum())
        n += tokens
    return {k: v / max(n, 1) for k, v in sums.items()}
