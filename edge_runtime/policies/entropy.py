"""Entropy exit (BranchyNet, DeeBERT): leave when the softmax entropy is below the exit's threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.policies.base import POLICIES, ScorePolicy, softmax


@POLICIES.register("entropy")
class EntropyPolicy(ScorePolicy):
    """Leave at exit i when H(softmax(logits)) < T_i (natural log).

    Args:
        normalized: divide the entropy by log(num_classes), so thresholds live in [0, 1].
    """

    lower_is_confident = True
    score_bounds = (0.0, np.inf)
    strict = True

    def __init__(self, num_exits: int, thresholds: Any = None, *, normalized: bool = False) -> None:
        self.normalized = bool(normalized)
        super().__init__(num_exits, thresholds)

    def default_threshold(self) -> float:
        return 0.1 if self.normalized else 0.3

    def score(self, output: np.ndarray) -> np.ndarray:
        p = softmax(output.astype(np.float64, copy=False))
        h = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=-1)
        if self.normalized:
            h = h / np.log(output.shape[-1])
        return h

    def config(self) -> dict[str, Any]:
        return {"normalized": self.normalized}
