"""The model-side registries: model builders (:data:`MODELS`) and exit-head types (:data:`HEADS`).

This module imports nothing else from ``converters``, so any module (a model family, a method's
heads) can register here without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edge_runtime.registry import Registry

#: model builders: ``name -> builder(**kwargs) -> EarlyExitModel``
MODELS: Registry[Callable[..., Any]] = Registry("model builder", plugins="converters.methods")
#: exit-head types: ``name -> nn.Module class`` taking the probed hidden shape's sizes as keyword arguments
HEADS: Registry[type[nn.Module]] = Registry("exit-head type", plugins="converters.methods")


def create_model(name: str, **kwargs: Any) -> Any:
    """Build a registered early-exit model.

    Example:
        >>> import converters
        >>> m = create_model("tiny_cnn")
        >>> m.num_exits
        3
    """
    return MODELS.get(name)(**kwargs)


def create_head(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered exit head; the module carries ``head_type = name``.

    Example:
        >>> import converters, torch
        >>> head = create_head("pool_linear", channels=8, num_classes=10)
        >>> head(torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 10])
    """
    head = HEADS.get(name)(**kwargs)
    setattr(head, "head_type", name)  # noqa: B010 - an attribute nn.Module's typing does not know
    return head
