"""Training exit heads: the registries (losses, optimisers, schedules), the losses and the one training loop."""

from converters.training.losses import ExitLoss, create_loss
from converters.training.registry import LOSSES, OPTIMIZERS, SCHEDULES
from converters.training.trainer import StageConfig, TrainCallback, Trainer, evaluate, exit_logits

__all__ = ["ExitLoss", "create_loss", "LOSSES", "OPTIMIZERS", "SCHEDULES", "StageConfig", "TrainCallback",
           "Trainer", "evaluate", "exit_logits"]
