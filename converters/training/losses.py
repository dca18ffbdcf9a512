"""Training objectives, one registry: ``create_loss(name, model, **kwargs)``.

A loss decides which parameters train in its stage (e.g. LGViT's stage 2 freezes the
backbone) and computes the loss of one batch. The trainer (:mod:`converters.training.trainer`)
calls it; new objectives (a paper method's stages, autoencoders, ponder losses) register
in :data:`converters.training.registry.LOSSES` from their method's folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from converters.models.contract import EarlyExitModel, as_tuple, call_with
from converters.training.registry import LOSSES
from edge_runtime.errors import ConfigError


class ExitLoss(ABC):
    """One training stage's objective, for an :class:`EarlyExitModel` or any module a method trains.

    Args:
        model: the module being trained (read its structure; do not keep stale copies).
        **kwargs: the recipe's ``loss.kwargs``.
    """

    #: the current epoch's generator (set by :meth:`start_epoch`); None outside the trainer
    generator: torch.Generator | None = None
    #: whether the objective needs class labels (False: it trains on unlabelled data, e.g. self-distillation)
    needs_labels: bool = True
    #: for a loss that needs no labels: why it cannot train a backbone that is not frozen on samples without
    #: labels (``convert`` refuses such a run before training); None: it can
    unlabelled_backbone: str | None = None

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(f"loss {type(self).__name__} got unknown argument(s): {', '.join(sorted(kwargs))}")

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters this stage trains (default: all; the early heads only for a model with a frozen backbone).
        Others get ``requires_grad=False``."""
        if isinstance(model, EarlyExitModel) and model.frozen_backbone:
            return [p for head in model.heads[:-1] for p in head.parameters()]
        return list(model.parameters())

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: ``[{"params": [...]}, {"params": [...], "lr": 1e-5}, ...]`` (a group's
        ``lr`` replaces the stage's; the schedule scales every group). Default: one group, the
        :meth:`trainable_parameters`. Parameters in no group are frozen."""
        return [{"params": self.trainable_parameters(model)}]

    def train_mode(self, model: nn.Module) -> None:
        """Put the model in the right mode for this stage (default: ``model.train()``; a frozen backbone and the
        final head stay in eval mode, so BatchNorm statistics do not move and dropout is off)."""
        model.train()
        if isinstance(model, EarlyExitModel) and model.frozen_backbone:
            for module in [*model.segments, model.heads[-1]]:
                module.eval()

    def start_epoch(self, epoch: int, generator: torch.Generator) -> None:
        """Called before each epoch with the generator that drew its shuffling order (seeded by the
        trainer's seed, the stage and the epoch). Augmentation drawn from it repeats exactly on resume
        without saved random state; the default keeps it in :attr:`generator`."""
        self.generator = generator

    @abstractmethod
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Loss of one batch and the per-exit logits, for the accuracy shown while training (an empty
        list when the module has no exits, e.g. an autoencoder)."""


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Hinton distillation term: T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch.

    Example:
        >>> float(kd_loss(torch.zeros(1, 2), torch.zeros(1, 2)))
        0.0
    """
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def weighted_exit_loss(logits: Sequence[torch.Tensor], y: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """BranchyNet's objective: sum_i w_i * CE(logits_i, y)."""
    if len(weights) != len(logits):
        raise ConfigError(f"loss weights: expected {len(logits)} (one per exit), got {len(weights)}")
    return sum(w * F.cross_entropy(z, y) for w, z in zip(weights, logits))  # type: ignore[return-value]


@LOSSES.register("weighted_exits")
class WeightedExitLoss(ExitLoss):
    """BranchyNet: one optimiser step on the weighted sum of all exit losses.

    Args:
        weights: one per exit (default all 1.0); ``"depth"`` gives exit i weight i+1 (PABEE's
            sum_j j*L_j, normalised by sum_j j).
    """

    def __init__(self, model: EarlyExitModel, weights: Sequence[float] | str | None = None) -> None:
        super().__init__(model)
        n = model.num_exits
        if weights is None:
            self.weights = [1.0] * n
        elif weights == "depth":
            total = n * (n + 1) / 2
            self.weights = [(i + 1) / total for i in range(n)]
        elif isinstance(weights, str):
            raise ConfigError(f"loss weights: expected a list of {n} numbers or 'depth', got {weights!r}")
        else:
            self.weights = [float(w) for w in weights]
            if len(self.weights) != n:
                raise ConfigError(f"loss weights: expected {n} (one per exit), got {len(self.weights)}")

    def __call__(self, model, x, y, step):
        logits = model(*as_tuple(x))
        return weighted_exit_loss(logits, y, self.weights), logits


@LOSSES.register("self_distill")
class SelfDistillLoss(ExitLoss):
    """Self-distillation: every early exit learns the final classifier's own soft outputs, so unlabelled data
    trains exits on a pretrained model: mean over early exits of ``T^2 KL(final/T || exit/T)``, plus
    ``alpha * CE(exit, y)`` on the samples that have a label (``y >= 0``; unlabelled samples carry -1).

    With a frozen backbone (``attach_exits(..., freeze_backbone=True)``) the teacher is the untouched model.
    Without one, the backbone trains too (joint fine-tuning): then the final exit also learns ``CE(final, y)``
    on labelled samples and the teacher's outputs are detached.

    Args:
        temperature: distillation temperature (> 0).
        alpha: weight of the label term for early exits (0: distillation only).
    """

    needs_labels = False
    unlabelled_backbone = ("a batch without labels cannot train the backbone (the final classifier is the "
                           "teacher); freeze the backbone or give labels")

    def __init__(self, model: EarlyExitModel, temperature: float = 2.0, alpha: float = 0.0) -> None:
        super().__init__(model)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        if self.temperature <= 0 or self.alpha < 0:
            raise ConfigError(f"loss self_distill: temperature must be > 0 and alpha >= 0, got {temperature!r}, "
                              f"{alpha!r}")
        if model.num_exits < 2:
            raise ConfigError("loss self_distill: the model has no early exit to distil into")

    def __call__(self, model, x, y, step):
        frozen = model.frozen_backbone
        labelled = y >= 0
        if frozen:
            with torch.no_grad():
                hidden, h = [], x
                for segment in model.segments:
                    h = call_with(segment, h)
                    hidden.append(h)
                final = call_with(model.heads[-1], h)
            logits = [call_with(head, h) for head, h in zip(model.heads[:-1], hidden[:-1])]
        else:
            outs = model(*as_tuple(x))
            logits, final = list(outs[:-1]), outs[-1]
        teacher = final.detach()
        loss = sum(kd_loss(z, teacher, self.temperature) for z in logits) / len(logits)
        if labelled.any():
            if self.alpha:
                loss = loss + self.alpha * sum(F.cross_entropy(z[labelled], y[labelled]) for z in logits) / len(logits)
            if not frozen:
                loss = loss + F.cross_entropy(final[labelled], y[labelled])
        elif not frozen:
            raise ConfigError(f"loss self_distill: {self.unlabelled_backbone}")
        return loss, [*logits, final]


def create_loss(name: str, model: nn.Module, **kwargs: Any) -> ExitLoss:
    """Build a registered training loss for ``model``.

    Example:
        >>> from converters.models import create_model
        >>> loss = create_loss("weighted_exits", create_model("tiny_cnn"), weights=[0.3, 0.3, 1.0])
    """
    return LOSSES.get(name)(model, **kwargs)
