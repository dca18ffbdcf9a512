"""Patience exit (PABEE): leave when the argmax has stayed the same for ``patience`` consecutive exits."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.policies.base import POLICIES, ExitPolicy, State


@POLICIES.register("patience")
class PatiencePolicy(ExitPolicy):
    """PABEE's rule, per sample.

    A counter starts at 0 at the first exit; at each later exit it increments when
    the prediction equals the previous exit's prediction and resets to 0 otherwise.
    The sample leaves as soon as the counter reaches ``patience``.
    """

    uses_thresholds = False

    def __init__(self, num_exits: int, thresholds: Any = None, *, patience: int = 2) -> None:
        if thresholds is not None and thresholds != []:
            raise ConfigError("policy 'patience' takes no thresholds; set 'patience' instead")
        if int(patience) < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.patience = int(patience)
        super().__init__(num_exits, None)

    def start(self, batch_size: int) -> State:
        return {
            "previous": np.full(batch_size, -1, dtype=np.int64),
            "count": np.zeros(batch_size, dtype=np.int64),
        }

    def decide(self, exit_index: int, output: np.ndarray, state: State) -> np.ndarray:
        pred = output.argmax(axis=-1)
        same = pred == state["previous"]
        state["count"] = np.where(same, state["count"] + 1, 0)
        state["previous"] = pred
        return state["count"] >= self.patience

    def config(self) -> dict[str, Any]:
        return {"patience": self.patience}
