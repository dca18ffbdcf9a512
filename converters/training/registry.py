"""The training registries: losses (:data:`LOSSES`), optimisers and learning-rate schedules.

Imports nothing else from ``converters``, so a method's losses (LGViT's stages, PALBERT's ponder
loss) register here from their own folder without an import cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from edge_runtime.registry import Registry

#: training objectives: ``name -> ExitLoss subclass`` (see :mod:`converters.training.losses`)
LOSSES: Registry[type[Any]] = Registry("training loss", plugins="converters.methods")
OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", plugins="converters.methods")
SCHEDULES: Registry[Callable[..., Callable[[int, int], float]]] = Registry("learning-rate schedule",
                                                                           plugins="converters.methods")

OPTIMIZERS.register("adam", lambda params, lr, weight_decay, **kw: torch.optim.Adam(
    params, lr=lr, weight_decay=weight_decay, **kw))
OPTIMIZERS.register("adamw", lambda params, lr, weight_decay, **kw: torch.optim.AdamW(
    params, lr=lr, weight_decay=weight_decay, **kw))
OPTIMIZERS.register("sgd", lambda params, lr, weight_decay, momentum=0.9, nesterov=True, **kw: torch.optim.SGD(
    params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov and momentum > 0, **kw))


@SCHEDULES.register("constant")
def _constant() -> Callable[[int, int], float]:
    return lambda step, total: 1.0


@SCHEDULES.register("cosine")
def _cosine(warmup_steps: int = 0, min_factor: float = 0.0) -> Callable[[int, int], float]:
    """Linear warm-up, then cosine decay to ``min_factor`` of the base lr at the stage's last step."""

    def factor(step: int, total: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


@SCHEDULES.register("step")
def _step(every_fraction: float = 0.5, gamma: float = 0.1) -> Callable[[int, int], float]:
    """Multiply the lr by ``gamma`` after every ``every_fraction`` of the stage."""
    return lambda step, total: gamma ** int(step / max(1.0, every_fraction * total))
