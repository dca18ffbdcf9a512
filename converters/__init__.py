"""converters: the workstation side — build early-exit models, train exits, export verified bundles.

Needs torch (``pip install edge-runtime[convert]``). The device side, :mod:`edge_runtime`, does not.

Example:
    >>> from converters import create_model, export_bundle
    >>> model = create_model("tiny_cnn")                                        # doctest: +SKIP
    >>> export_bundle(model, torch.randn(1, 1, 16, 16), "out/b", name="tiny")   # doctest: +SKIP
"""

from converters.convert import convert
from converters.export import count_flops, count_params, export_bundle, export_onnx
from converters.heads import HEADS, create_head
from converters.model import EarlyExitModel, from_sequential_cnn, from_transformer_encoder
from converters.recipe import Recipe, load_recipe, parse_recipe
from converters.zoo import MODELS, create_model
from converters import _lgvit_losses, lgvit  # noqa: E402,F401  (registers LGViT heads, models, losses)
from converters.lgvit import attach_lgvit_heads, load_backbone_weights
from converters.calibrate import Calibration, OperatingPoint, calibrate, oracle
from converters.train import OPTIMIZERS, SCHEDULES, StageConfig, TrainCallback, Trainer

__all__ = [
    "convert", "count_flops", "count_params", "export_bundle", "export_onnx",
    "HEADS", "create_head",
    "EarlyExitModel", "from_sequential_cnn", "from_transformer_encoder",
    "Recipe", "load_recipe", "parse_recipe",
    "MODELS", "create_model",
    "attach_lgvit_heads", "load_backbone_weights",
    "Calibration", "OperatingPoint", "calibrate", "oracle",
    "OPTIMIZERS", "SCHEDULES", "StageConfig", "TrainCallback", "Trainer",
]
