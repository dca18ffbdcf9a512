"""converters: the workstation side — build early-exit models, train exits, export verified bundles.

Needs torch (``pip install edge-runtime[convert]``). The device side, :mod:`edge_runtime`, does not.
The package is grouped by concern: ``recipe/`` (YAML recipes), ``models/`` (the model contract, heads,
builders), ``training/`` (losses, the training loop), ``export/`` (ONNX, TFLite, quantization, the
verifier, the bundle writer), ``methods/`` (one folder per paper method) and ``pipeline/`` (``convert``,
``demo``, and the command-line plug-ins). Public names are imported on first use, so the command line
can register ``convert`` without importing torch.

Example:
    >>> from converters import create_model, export_bundle
    >>> model = create_model("tiny_cnn")                                        # doctest: +SKIP
    >>> export_bundle(model, torch.randn(1, 1, 16, 16), "out/b", name="tiny")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "convert": "converters.pipeline.convert",
    "count_flops": "converters.export.onnx", "count_params": "converters.export.onnx",
    "export_onnx": "converters.export.onnx", "export_bundle": "converters.export.bundle",
    "HEADS": "converters.models.registry", "MODELS": "converters.models.registry",
    "attach_exits": "converters.models.attach",
    "create_head": "converters.models.registry", "create_model": "converters.models.registry",
    "EarlyExitModel": "converters.models.contract", "from_sequential_cnn": "converters.models.contract",
    "from_transformer_encoder": "converters.models.contract",
    "Recipe": "converters.recipe.core", "load_recipe": "converters.recipe.core",
    "parse_recipe": "converters.recipe.core",
    "attach_lgvit_heads": "converters.methods.lgvit.model", "load_backbone_weights": "converters.methods.lgvit.model",
    "Calibration": "edge_runtime.calibration", "OperatingPoint": "edge_runtime.calibration",
    "calibrate": "edge_runtime.calibration", "oracle": "edge_runtime.calibration",
    "OPTIMIZERS": "converters.training.registry", "SCHEDULES": "converters.training.registry",
    "StageConfig": "converters.training.trainer", "TrainCallback": "converters.training.trainer",
    "Trainer": "converters.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    importlib.import_module("converters.models")      # the built-in models and heads register themselves
    importlib.import_module("converters.recipe")      # and the built-in recipe sections
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from converters.export.bundle import export_bundle  # noqa: F401
    from converters.export.onnx import count_flops, count_params, export_onnx  # noqa: F401
    from converters.methods.lgvit.model import attach_lgvit_heads, load_backbone_weights  # noqa: F401
    from converters.models.attach import attach_exits  # noqa: F401
    from converters.models.contract import EarlyExitModel, from_sequential_cnn, from_transformer_encoder  # noqa: F401
    from converters.models.registry import HEADS, MODELS, create_head, create_model  # noqa: F401
    from converters.pipeline.convert import convert  # noqa: F401
    from converters.recipe.core import Recipe, load_recipe, parse_recipe  # noqa: F401
    from converters.training.registry import OPTIMIZERS, SCHEDULES  # noqa: F401
    from converters.training.trainer import StageConfig, TrainCallback, Trainer  # noqa: F401
    from edge_runtime.calibration import Calibration, OperatingPoint, calibrate, oracle  # noqa: F401
