"""Training objectives, one registry: ``create_loss(name, model, **kwargs)``.

A loss decides which parameters train in its stage (e.g. LGViT's stage 2 freezes the
backbone) and computes the loss of one batch. The trainer (:mod:`converters.training.trainer`)
calls it; new objectives (LGViT's stages, CBNet's autoencoder, PALBERT's ponder loss) register
in :data:`converters.training.registry.LOSSES` from their method's folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from converters.models.contract import EarlyExitModel, as_tuple
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

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(f"loss {type(self).__name__} got unknown argument(s): {', '.join(sorted(kwargs))}")

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters this stage trains (default: all). Others get ``requires_grad=False``."""
        return list(model.parameters())

    def parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: ``[{"params": [...]}, {"params": [...], "lr": 1e-5}, ...]`` (a group's
        ``lr`` replaces the stage's; the schedule scales every group). Default: one group, the
        :meth:`trainable_parameters`. Parameters in no group are frozen."""
        return [{"params": self.trainable_parameters(model)}]

    def train_mode(self, model: nn.Module) -> None:
        """Put the model in the right mode for this stage (default: ``model.train()``)."""
        model.train()

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


def create_loss(name: str, model: nn.Module, **kwargs: Any) -> ExitLoss:
    """Build a registered training loss for ``model``.

    Example:
        >>> from converters.models import create_model
        >>> loss = create_loss("weighted_exits", create_model("tiny_cnn"), weights=[0.3, 0.3, 1.0])
    """
    return LOSSES.get(name)(model, **kwargs)
