"""Max-softmax confidence exit (LGViT's default rule): leave when max p >= the exit's threshold."""

from __future__ import annotations

import numpy as np

from edge_runtime.policies.base import POLICIES, ScorePolicy, softmax


@POLICIES.register("confidence")
class ConfidencePolicy(ScorePolicy):
    """Leave at exit i when max(softmax(logits)) >= T_i."""

    lower_is_confident = False
    score_bounds = (0.0, 1.0)

    def default_threshold(self) -> float:
        return 0.8  # LGViT's scripts

    def score(self, output: np.ndarray) -> np.ndarray:
        return softmax(output.astype(np.float64, copy=False)).max(axis=-1)
