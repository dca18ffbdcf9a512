"""CBNet's training objectives (CBNet, 2024) on the shared trainer (:class:`converters.training.Trainer`):
the converting autoencoder's reconstruction loss against each input's exemplar, and the lightweight
classifier's cross-entropy on converted inputs, registered in :data:`converters.training.registry.LOSSES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from converters.training.augment import random_shift
from converters.training.losses import ExitLoss
from converters.training.registry import LOSSES
from converters.training.trainer import StageConfig, TrainCallback, Trainer
from edge_runtime.errors import ConfigError

#: CBNet's stages shuffle with ``seed * SEED_STRIDE + epoch`` (the trainer's ``seed + stage + epoch`` with
#: this base), the seeds its own loop used, so the shipped recipes train to the same weights
SEED_STRIDE = 1_000_003


@LOSSES.register("cbnet_reconstruction")
class ReconstructionLoss(ExitLoss):
    """The converting autoencoder's own ``loss(output_of(x), target)``; the targets are the exemplars.

    Args:
        shift: translate each input image by up to this many pixels (0: off, the paper's setting),
            drawn from the epoch's generator; the targets stay as they are.
    """

    def __init__(self, model: nn.Module, shift: int = 0) -> None:
        super().__init__(model)
        if not callable(getattr(model, "loss", None)):
            raise ConfigError(f"loss cbnet_reconstruction: {type(model).__name__} has no loss(x, target) method "
                              "(expected a converting autoencoder)")
        if int(shift) < 0:
            raise ConfigError(f"loss cbnet_reconstruction shift: must be >= 0, got {shift!r}")
        self.shift = int(shift)

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return model.loss(random_shift(x, self.shift, self.generator, axis_major=True), y), []


@LOSSES.register("cbnet_classifier")
class ClassifierLoss(ExitLoss):
    """Cross-entropy of the lightweight classifier (one logits output) on (converted input, class) batches.

    Given a :class:`ConvertedClassifier` (a frozen autoencoder in front of the classifier), it converts each
    batch on the fly, so ``shift`` (random translations of up to this many pixels, drawn from the epoch's
    generator) shows the classifier the autoencoder's answers to inputs it did not memorise; only the
    classifier trains, the autoencoder stays in eval mode.
    """

    def __init__(self, model: nn.Module, shift: int = 0) -> None:
        super().__init__(model)
        if int(shift) < 0:
            raise ConfigError(f"loss cbnet_classifier shift: must be >= 0, got {shift!r}")
        if shift and not isinstance(model, ConvertedClassifier):
            raise ConfigError("loss cbnet_classifier shift: needs a ConvertedClassifier (the inputs are converted "
                              "after the shift)")
        self.shift = int(shift)

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        target = model.classifier if isinstance(model, ConvertedClassifier) else model
        return list(target.parameters())

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if isinstance(model, ConvertedClassifier):
            model.autoencoder.eval()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = model(random_shift(x, self.shift, self.generator, axis_major=True))
        return F.cross_entropy(logits, y), [logits]


class ConvertedClassifier(nn.Module):
    """``classifier(autoencoder(x))``: what the fine-tuning with augmentation trains (the classifier only)."""

    def __init__(self, autoencoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.autoencoder(x))


def train_part(module: nn.Module, x: torch.Tensor, target: torch.Tensor, *, loss: dict[str, Any], epochs: int,
               batch_size: int, lr: float, seed: int, name: str, progress: bool, checkpoint: Path | None = None,
               resume: bool = False, run_id: str = "", callbacks: Sequence[TrainCallback] = ()) -> list[float]:
    """Train one CBNet part with Adam at a constant ``lr`` on (x, target) mini-batches; mean loss per epoch.

    One stage of the shared :class:`Trainer` (seeded shuffling, progress bar, an atomic checkpoint after
    every epoch, ``resume`` continuing to the same weights as an uninterrupted run).

    Args:
        module: the part (trained in place, left in eval mode).
        x, target: inputs and targets (exemplars, or classes).
        loss: the stage's registered loss, ``{"name": ..., "kwargs": {...}}``.
        seed: the run's seed (the stage shuffles from ``seed * SEED_STRIDE``).
        name: the stage's name in progress bars and history.
        checkpoint: the checkpoint file (None: none).
        run_id: identifies the run; another run's checkpoint is refused on resume.
        callbacks: the trainer's hooks (e.g. a learning curve: accuracy after every k-th epoch).
    """
    stage = StageConfig(name=name, loss=loss, optimizer={"name": "adam", "kwargs": {}}, lr=lr, epochs=epochs,
                        batch_size=batch_size, schedule={"name": "constant", "kwargs": {}})
    history = Trainer(module, [stage], x, target, seed=seed * SEED_STRIDE, checkpoint_path=checkpoint,
                      resume=resume, run_id=run_id, progress=progress, epoch_lines=False, callbacks=callbacks).fit()
    return [h["loss"] for h in history]


def batched(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, batch_size: int = 512) -> list[Any]:
    """``fn`` over ``x`` in eval-time chunks (no grad); the chunks' results in order."""
    with torch.no_grad():
        return [fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def predict(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Argmax class of a single-output classifier over ``x``."""
    module.eval()
    return torch.cat(batched(lambda b: module(b).argmax(-1), x)).numpy()
