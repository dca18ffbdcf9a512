"""The ``never`` policy: every sample runs to the final exit (the full-model baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.policies.base import POLICIES, ExitPolicy, State


@POLICIES.register("never")
class NeverPolicy(ExitPolicy):
    """No sample leaves before the last exit."""

    uses_thresholds = False

    def __init__(self, num_exits: int, thresholds: Any = None) -> None:
        super().__init__(num_exits, None)

    def decide(self, exit_index: int, output: np.ndarray, state: State) -> np.ndarray:
        return np.zeros(output.shape[0], dtype=bool)

    def decide_one(self, exit_index: int, output: np.ndarray, state: State) -> bool:
        return False
