"""Training: the registries (losses, optimisers, schedules), the losses, shared augmentation and evaluation,
and the one training loop every stage runs through (exit heads and a method's own parts)."""

from converters.training.augment import random_shift
from converters.training.evaluation import evaluate, exit_logits
from converters.training.losses import ExitLoss, create_loss
from converters.training.registry import LOSSES, OPTIMIZERS, SCHEDULES
from converters.training.trainer import StageConfig, TrainCallback, Trainer, run_fingerprint

__all__ = ["ExitLoss", "create_loss", "LOSSES", "OPTIMIZERS", "SCHEDULES", "StageConfig", "TrainCallback",
           "Trainer", "evaluate", "exit_logits", "random_shift", "run_fingerprint"]
