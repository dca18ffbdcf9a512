"""DeeDiff's exit rule: a sample leaves after block i when its uncertainty score ``u_i`` is below the threshold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_runtime.policies import POLICIES, ExitPolicy

#: the segment output the policy reads (the UEM's score, one per sample)
UNCERTAINTY_OUTPUT = "u"


@POLICIES.register("uncertainty")
class UncertaintyPolicy(ExitPolicy):
    """Leave when ``u < threshold`` (DeeDiff: the UEM's estimate of the exit's error is small enough).

    Reads the segment output ``u`` (a bare array is taken as ``u`` itself); a ``u`` with more than one value per
    sample is averaged. Not a :class:`~edge_runtime.policies.ScorePolicy`: those score the ``exit`` output (and
    may read a precomputed ``exit.score``), while this one reads another output of the segment. Thresholds: one
    per non-final exit, or one for all (the usual DeeDiff setting).

    Example:
        >>> pol = UncertaintyPolicy(3, 0.2)
        >>> pol.decide(0, {"u": np.array([0.1, 0.2, 0.5])}, {}).tolist()
        [True, False, False]
    """

    reads = (UNCERTAINTY_OUTPUT,)

    def default_threshold(self) -> float:
        return 0.1

    def score(self, output: Any) -> np.ndarray:
        """One uncertainty per sample: ``u`` (or the bare array), averaged over any further axes."""
        u = np.asarray(output[UNCERTAINTY_OUTPUT] if isinstance(output, Mapping) else output)
        return u.reshape(u.shape[0], -1).mean(axis=1)

    def decide(self, exit_index: int, output: Any, state: dict[str, np.ndarray]) -> np.ndarray:
        return self.score(output) < self.thresholds[exit_index]
