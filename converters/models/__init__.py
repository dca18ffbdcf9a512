"""Models: the early-exit model contract, exit heads, the model builders (registries) and model families."""

from converters.models import attach, branchynet, heads, zoo  # noqa: F401  (registration)
from converters.models.attach import attach_exits
from converters.models.contract import (
                                        EarlyExitModel,
                                        FullModel,
                                        SegmentWithExit,
                                        from_sequential_cnn,
                                        from_transformer_encoder,
)
from converters.models.registry import HEADS, MODELS, create_head, create_model

__all__ = [
    "EarlyExitModel", "FullModel", "SegmentWithExit", "attach_exits", "from_sequential_cnn", "from_transformer_encoder",
    "HEADS", "MODELS", "create_head", "create_model",
]
