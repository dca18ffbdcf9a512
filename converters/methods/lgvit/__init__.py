"""LGViT (ACM MM 2023): local-perception and global-aggregation exit heads on a ViT, trained in two stages
(end-to-end, then self-distillation with the backbone frozen)."""

from converters.methods.lgvit import losses  # noqa: F401  (registers lgvit_stage1/2)
from converters.methods.lgvit.model import attach_lgvit_heads, lgvit_head_schedule, load_backbone_weights

__all__ = ["attach_lgvit_heads", "lgvit_head_schedule", "load_backbone_weights"]
