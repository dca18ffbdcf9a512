"""The two reference curves every report compares against, defined once: the oracle and the Pareto front.

The **oracle** is the cheapest possible assignment of samples to exits at the best reachable
accuracy: each sample leaves at the earliest exit whose prediction is right. A sample no exit gets
right is charged the *first* exit: nothing can make it right, so its cheapest exit is the bound (a
"last exit" charge would make the bound looser than what a policy can achieve on such samples).
It needs the labels, so it cannot run on a device; reports estimate its cost from measured parts.

The **Pareto front** of a set of operating points keeps the points that no cheaper (or equally
cheap) point matches in accuracy, cheapest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def oracle_exits(outputs: Sequence[np.ndarray], y: np.ndarray, *, accuracy: float | None = None,
                 cumulative_cost: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Exit index per sample chosen by the oracle.

    Args:
        outputs: every exit's outputs, (N, classes) each.
        y: labels, (N,).
        accuracy: the oracle *at that accuracy* instead of the best reachable one: of the samples it
            could get right, those whose earliest correct exit costs most above exit 0 leave at exit 0
            instead, until only the needed number stay right.
        cumulative_cost: cost of answering at each exit (needed with ``accuracy``).

    Example:
        >>> outs = [np.array([[1., 0.], [1., 0.], [1., 0.]]), np.array([[0., 1.], [0., 1.], [1., 0.]])]
        >>> oracle_exits(outs, np.array([0, 1, 1])).tolist()
        [0, 1, 0]
    """
    y = np.asarray(y)
    right = np.stack([np.asarray(o).argmax(-1) == y for o in outputs])       # (exits, N)
    reachable = right.any(0)
    idx = np.where(reachable, right.argmax(0), 0).astype(np.int64)
    if accuracy is not None:
        if cumulative_cost is None:
            raise ValueError("oracle_exits(accuracy=...) needs cumulative_cost")
        cum = np.asarray(cumulative_cost, dtype=np.float64)
        need = int(np.ceil(accuracy * len(y) - 1e-9))
        spare = int(reachable.sum()) - need
        saving = np.where(reachable & (idx > 0), cum[idx] - cum[0], -1.0)
        order = np.argsort(-saving, kind="stable")
        drop = [i for i in order[:max(spare, 0)] if saving[i] > 0]
        idx[drop] = 0
    return idx


def pareto_front(items: Sequence[T], cost: Callable[[T], float], accuracy: Callable[[T], float]) -> list[T]:
    """Items no cheaper-or-equal item matches in accuracy, cheapest first (ties on cost: most accurate first).

    Example:
        >>> pts = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (2.0, 0.80)]
        >>> pareto_front(pts, cost=lambda p: p[0], accuracy=lambda p: p[1])
        [(1.0, 0.9), (2.0, 0.95)]
    """
    front: list[T] = []
    best = -np.inf
    for item in sorted(items, key=lambda it: (cost(it), -accuracy(it))):
        if accuracy(item) > best + 1e-12:
            front.append(item)
            best = accuracy(item)
    return front


