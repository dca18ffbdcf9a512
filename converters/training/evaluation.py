"""Evaluation helpers shared by the training stages and the methods: every exit's logits, per-exit accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from converters.models.contract import as_tuple


@torch.no_grad()
def exit_logits(model: nn.Module, x: Any, *, batch_size: int = 256,
                device: str = "cpu") -> list[np.ndarray]:
    """Every exit's logits for ``x``, computed in eval mode in chunks of ``batch_size``, as numpy arrays.

    Args:
        model: a module returning one logits tensor per exit (an :class:`EarlyExitModel`); its
            train/eval mode is restored afterwards.
        x: model-ready inputs (N, ...), numpy or torch; a tuple of them for a model with several inputs.
        batch_size: inputs per forward pass.
        device: where the model is.

    Example:
        >>> from converters.models import create_model
        >>> [z.shape for z in exit_logits(create_model("tiny_cnn"), np.zeros((2, 1, 16, 16), np.float32))]
        [(2, 10), (2, 10), (2, 10)]
    """
    was = model.training
    model.eval()
    xs = [torch.as_tensor(np.ascontiguousarray(p) if isinstance(p, np.ndarray) else p) for p in as_tuple(x)]
    xs = [t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64) for t in xs]
    outs: list[list[np.ndarray]] = []
    for start in range(0, len(xs[0]), batch_size):
        logits = model(*(t[start:start + batch_size].to(device) for t in xs))
        if not outs:
            outs = [[] for _ in logits]
        for k, z in enumerate(logits):  # a head returning (logits, *extras): its logits
            outs[k].append(as_tuple(z)[0].float().cpu().numpy())
    model.train(was)
    return [np.concatenate(o) for o in outs]


def evaluate(model: nn.Module, x: Any, y: np.ndarray | torch.Tensor, *,
             device: str = "cpu") -> list[float]:
    """Accuracy of every exit on (x, y)."""
    labels = np.asarray(y)
    return [float((z.argmax(-1) == labels).mean()) for z in exit_logits(model, x, device=device)]
