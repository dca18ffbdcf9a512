"""PALBERT's ponder loss (PonderNet's objective as the reference code ``tinkoff-ai/palbert`` computes it).

Exit distribution p_i = lambda_i * prod_{j<i} (1 - lambda_j); once a sample's CDF exceeds 1 - epsilon, every later
layer gets epsilon / N instead (and once every sample's has, the later layers add no classification term). The loss
is sum_i mean_batch(p_i * CE(f_i(x), y)) + beta * KL(prior || p), the prior geometric with lambda_p (the last layer
takes the rest of its mass), KL averaged over the batch. The Lambda layers may train with their own learning rate
(``lambda_lr``; 1e-5 in the reference) through :meth:`ExitLoss.parameter_groups`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from converters.models.contract import as_tuple
from converters.training.losses import ExitLoss
from converters.training.registry import LOSSES
from edge_runtime.errors import ConfigError


def geometric_prior(lambda_p: float, steps: int) -> torch.Tensor:
    """p_g(k) = lambda_p (1 - lambda_p)^k for k < steps - 1; the last step takes the remaining mass.

    Example:
        >>> [round(v, 3) for v in geometric_prior(0.5, 3).tolist()]
        [0.5, 0.25, 0.25]
    """
    k = torch.arange(steps, dtype=torch.float64)
    p = lambda_p * (1 - lambda_p) ** k
    p[-1] = 1 - p[:-1].sum()
    return p.to(torch.float32)


def exit_distribution(lambdas: list[torch.Tensor], epsilon: float) -> tuple[list[torch.Tensor], int]:
    """Per layer p_i (N,) with the epsilon tail rule, and how many layers get a classification term (the layers up
    to the first one after which every sample's CDF exceeds 1 - epsilon).

    Example:
        >>> p, used = exit_distribution([torch.tensor([0.5]), torch.tensor([0.99]), torch.tensor([0.5])], 0.05)
        >>> [round(float(v), 4) for v in torch.cat(p)], used
        ([0.5, 0.495, 0.0167], 2)
    """
    n = len(lambdas)
    cdf = torch.zeros_like(lambdas[0])
    survive = torch.ones_like(lambdas[0])
    pdf: list[torch.Tensor] = []
    used = n
    for i, lam in enumerate(lambdas):
        if i >= used:
            pdf.append(torch.full_like(lam, epsilon / n))
            continue
        p = lam * survive
        survive = (1 - lam) * survive
        p = torch.where(cdf > 1 - epsilon, torch.full_like(p, epsilon / n), p)
        cdf = cdf + p
        pdf.append(p)
        if bool((cdf > 1 - epsilon).all()):
            used = i + 1
    return pdf, used


def trim_padding(x: Any) -> Any:
    """Token-id/mask model inputs cut to the batch's longest real sequence (``attention_mask`` is the second
    input); other inputs unchanged. The result is the same for every real token: padding is masked anyway."""
    parts = as_tuple(x)
    if len(parts) != 2 or parts[1].dim() != 2 or parts[1].is_floating_point():
        return x
    width = max(1, int(parts[1].sum(1).max()))
    return parts[0][:, :width], parts[1][:, :width]


def new_parameters(model: nn.Module) -> list[nn.Parameter]:
    """PALBERT's new parts (shared classifier, Lambda layer, layer embeddings): the shared parts but the
    pretrained encoder's pooler."""
    palbert: Any = model
    return [p for name, p in palbert.shared.named_parameters() if not name.startswith("pooler.")]


def frozen_encoder_train_mode(model: nn.Module) -> None:
    """Training mode for the new parts only: the frozen encoder's segments stay in eval mode (no dropout)."""
    model.train()
    for seg in model.segments:  # type: ignore[union-attr]
        seg.eval()


@LOSSES.register("palbert")
class PalbertLoss(ExitLoss):
    """PALBERT's objective for a model whose exits return ``(logits, lambda)``.

    Args:
        beta: weight of the KL term (0.5).
        prior_lambda: the geometric prior's lambda_p (0.1).
        epsilon: the tail rule's epsilon (0.05).
        lambda_lr: learning rate of the Lambda layers (None: the stage's).
        freeze_backbone: train only the new parts (classifier, Lambda layer, layer embeddings); the pretrained
            encoder and its pooler stay as they are and no gradient flows through them (a cheap stage).
    """

    def __init__(self, model: nn.Module, beta: float = 0.5, prior_lambda: float = 0.1, epsilon: float = 0.05,
                 lambda_lr: float | None = None, freeze_backbone: bool = False) -> None:
        super().__init__(model)
        if not hasattr(model, "shared"):
            raise ConfigError("loss palbert: the model has no PALBERT parts (use model palbert_bert)")
        for name, v, lo, hi in (("beta", beta, 0.0, None), ("prior_lambda", prior_lambda, 0.0, 1.0),
                                ("epsilon", epsilon, 0.0, 1.0)):
            if not isinstance(v, (int, float)) or v < lo or (hi is not None and not lo < v < hi):
                raise ConfigError(f"loss palbert: {name} out of range, got {v!r}")
        if lambda_lr is not None and (not isinstance(lambda_lr, (int, float)) or lambda_lr <= 0):
            raise ConfigError(f"loss palbert: lambda_lr must be > 0, got {lambda_lr!r}")
        self.beta, self.epsilon, self.lambda_lr = float(beta), float(epsilon), lambda_lr
        self.freeze_backbone = bool(freeze_backbone)
        palbert: Any = model
        self.prior = geometric_prior(float(prior_lambda), int(palbert.num_exits))

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        palbert: Any = model
        lam = palbert.shared.lambda_parameters()
        ids = {id(p) for p in lam}
        pool = new_parameters(model) if self.freeze_backbone else list(model.parameters())
        rest = [p for p in pool if id(p) not in ids]
        if self.lambda_lr is None:
            return [{"params": rest + lam}]
        return [{"params": rest}, {"params": lam, "lr": float(self.lambda_lr)}]

    def train_mode(self, model: nn.Module) -> None:
        if self.freeze_backbone:
            frozen_encoder_train_mode(model)
        else:
            model.train()

    def __call__(self, model, x, y, step):
        outs = model(*as_tuple(trim_padding(x)))
        logits = [o[0] for o in outs]
        pdf, used = exit_distribution([o[1] for o in outs], self.epsilon)
        task = sum((p * F.cross_entropy(z, y, reduction="none")).mean() for p, z in zip(pdf[:used], logits[:used]))
        p = torch.stack(pdf, dim=1).clamp_min(1e-10)  # (N, exits)
        prior = self.prior.to(p.device)[None].expand_as(p)
        kl = F.kl_div(p.log(), prior, reduction="batchmean")  # KL(prior || p), as the reference computes it
        return task + self.beta * kl, logits


@LOSSES.register("shared_exits")
class SharedExitsLoss(ExitLoss):
    """Cross-entropy averaged over every exit of a model whose exits return ``(logits, *extras)`` (a warm-up stage
    for the backbone and the shared classifier before the ponder loss; padding trimmed per batch).

    Args:
        head_lr: learning rate of the new parts (PALBERT's classifier, Lambda layer, layer embeddings) while the
            pretrained backbone keeps the stage's (None: the stage's for all).
        freeze_backbone: train only those new parts (a DeeBERT-style first stage: the pretrained encoder and its
            pooler stay as they are, and no gradient flows through the encoder, so the stage is cheap).
    """

    def __init__(self, model: nn.Module, head_lr: float | None = None, freeze_backbone: bool = False) -> None:
        super().__init__(model)
        if head_lr is not None and (not isinstance(head_lr, (int, float)) or head_lr <= 0):
            raise ConfigError(f"loss shared_exits: head_lr must be > 0, got {head_lr!r}")
        if freeze_backbone and getattr(model, "shared", None) is None:
            raise ConfigError("loss shared_exits: freeze_backbone needs a model with PALBERT parts (palbert_bert)")
        self.head_lr, self.freeze_backbone = head_lr, bool(freeze_backbone)

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        shared = getattr(model, "shared", None)
        if shared is None or (self.head_lr is None and not self.freeze_backbone):
            return super().parameter_groups(model)
        new = new_parameters(model)
        ids = {id(p) for p in new}
        head = {"params": new, **({"lr": float(self.head_lr)} if self.head_lr is not None else {})}
        if self.freeze_backbone:  # the pretrained encoder (and its pooler) stay as they are
            return [head]
        return [{"params": [p for p in model.parameters() if id(p) not in ids]}, head]

    def train_mode(self, model: nn.Module) -> None:
        if self.freeze_backbone:  # no dropout inside the frozen encoder
            frozen_encoder_train_mode(model)
        else:
            model.train()

    def __call__(self, model, x, y, step):
        logits = [as_tuple(o)[0] for o in model(*as_tuple(trim_padding(x)))]
        return sum(F.cross_entropy(z, y) for z in logits) / len(logits), logits
