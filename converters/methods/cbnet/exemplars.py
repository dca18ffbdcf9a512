"""CBNet's easy samples and exemplars (CBNet, 2024): which training inputs are easy, and which easy
input each training input is converted to. numpy only, so it is testable on crafted sets.

Easy = leaves at the first exit under the calibrated policy (decided with
:func:`edge_runtime.simulate_exits`, the device's own code path) and, by default, is
classified correctly there. Exemplar methods, registered in :data:`EXEMPLAR_METHODS`:

* ``medoid`` (the public prototype's "one fixed easy exemplar per class"): every input of
  class c maps to the medoid of class c's easy samples;
* ``nearest``: every input maps to its nearest (Euclidean, model-ready space) easy sample of
  its own class;
* ``medoids``: a per-class *set* of ``k`` easy exemplars (k-medoids of the class's easy samples:
  greedy BUILD, then alternating refinement); every input maps to the nearest one. ``k=1`` is ``medoid``.

A method may take keyword arguments (the recipe's ``cbnet.exemplar_kwargs``, e.g. ``{k: 8}``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.policies import ExitPolicy
from edge_runtime.registry import Registry
from edge_runtime.runtime import simulate_exits

#: method name -> fn(flat inputs of one class, their pool positions, **kwargs) -> pool position per input
EXEMPLAR_METHODS: Registry[Callable[..., np.ndarray]] = Registry("CBNet exemplar method")

_CHUNK = 1024


def find_easy(exit_outputs: Sequence[np.ndarray], labels: np.ndarray, policy: ExitPolicy,
              *, require_correct: bool = True) -> np.ndarray:
    """Boolean mask of the easy samples: those ``policy`` lets leave at the first exit.

    Args:
        exit_outputs: every exit's logits for every sample (N, classes) per exit.
        labels: true classes (N,).
        policy: the calibrated exit policy (the bundle's).
        require_correct: also require the first exit's prediction to be right.

    Example:
        >>> from edge_runtime import create_policy
        >>> out = [np.array([[9.0, 0.0], [0.0, 0.1]]), np.zeros((2, 2))]
        >>> find_easy(out, np.array([0, 1]), create_policy("entropy", 2, 0.1)).tolist()
        [True, False]
    """
    easy = simulate_exits(list(exit_outputs), policy) == 0
    if require_correct:
        easy &= np.asarray(exit_outputs[0]).argmax(axis=-1) == np.asarray(labels)
    return easy


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of a and rows of b (float64)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


@EXEMPLAR_METHODS.register("medoid")
def _medoid(x: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Every input maps to the pool's medoid (least total distance to the other pool members)."""
    p = x[pool]
    totals = np.zeros(pool.shape[0])
    for start in range(0, pool.shape[0], _CHUNK):
        totals[start:start + _CHUNK] = np.sqrt(_sq_dists(p[start:start + _CHUNK], p)).sum(1)
    return np.full(x.shape[0], pool[int(np.argmin(totals))], dtype=np.int64)


@EXEMPLAR_METHODS.register("nearest")
def _nearest(x: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Every input maps to its nearest pool member (an easy input maps to itself)."""
    p = x[pool]
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], _CHUNK):
        out[start:start + _CHUNK] = pool[np.argmin(_sq_dists(x[start:start + _CHUNK], p), axis=1)]
    return out


@EXEMPLAR_METHODS.register("medoids")
def _medoids(x: np.ndarray, pool: np.ndarray, k: int = 8, iterations: int = 20) -> np.ndarray:
    """Every input maps to the nearest of ``k`` medoids of the pool (deterministic k-medoids).

    BUILD adds, one at a time, the pool member that most lowers the total distance of the pool to its
    nearest chosen member (the first is the pool's medoid, so ``k=1`` equals ``medoid``); then each
    cluster's medoid replaces its centre until nothing moves (at most ``iterations`` rounds).

    Raises:
        ConfigError: ``k`` < 1.
    """
    if int(k) < 1:
        raise ConfigError(f"exemplar method 'medoids': k must be >= 1, got {k!r}")
    p = x[pool]
    d = np.sqrt(_sq_dists(p, p))
    k = min(int(k), pool.shape[0])
    centres = [int(np.argmin(d.sum(1)))]
    nearest = d[:, centres[0]].copy()
    for _ in range(1, k):
        gain = np.maximum(nearest[:, None] - d, 0.0).sum(0)
        gain[centres] = -1.0
        c = int(np.argmax(gain))
        centres.append(c)
        nearest = np.minimum(nearest, d[:, c])
    for _ in range(iterations):
        assign = np.argmin(d[:, centres], axis=1)
        moved = []
        for j, c in enumerate(centres):
            members = np.flatnonzero(assign == j)
            moved.append(int(members[np.argmin(d[np.ix_(members, members)].sum(1))]) if members.size else c)
        if moved == centres:
            break
        centres = moved
    chosen = np.asarray(centres, dtype=np.int64)
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], _CHUNK):
        out[start:start + _CHUNK] = pool[chosen[np.argmin(_sq_dists(x[start:start + _CHUNK], p[chosen]), axis=1)]]
    return out


@dataclass(frozen=True)
class ExemplarChoice:
    """Which training input each training input is converted to.

    Attributes:
        target_index: per input, the index (into the training set) of its exemplar.
        method: the exemplar method used.
        easy_per_class: how many easy samples each class had.
        fallback_classes: classes without easy samples, whose pool was their ``fallback_count``
            most confident first-exit samples instead.
        exemplars_per_class: how many distinct exemplars each class ended up with.
    """

    target_index: np.ndarray
    method: str
    easy_per_class: list[int]
    fallback_classes: list[int]
    exemplars_per_class: list[int]

    def summary(self) -> dict:
        """The manifest's ``cbnet.exemplars`` record."""
        medoids = {}
        if self.method in ("medoid", "medoids"):
            medoids = {"indices": sorted({int(i) for i in self.target_index})}
        return {"method": self.method, "easy_per_class": self.easy_per_class,
                "easy_total": int(sum(self.easy_per_class)), "fallback_classes": self.fallback_classes,
                "exemplars_per_class": self.exemplars_per_class, **medoids}


def choose_exemplars(x: np.ndarray, y: np.ndarray, easy: np.ndarray, method: str = "medoid", *,
                     confidence: np.ndarray | None = None, fallback_count: int = 10, max_pool: int = 2000,
                     seed: int = 0, method_kwargs: dict | None = None) -> ExemplarChoice:
    """Pick every input's exemplar among the easy inputs of its own class.

    Args:
        x: inputs (N, ...), model-ready.
        y: classes (N,).
        easy: easy mask (N,), from :func:`find_easy`.
        method: a name in :data:`EXEMPLAR_METHODS`.
        confidence: per input, the first exit's probability of the true class; used to build a
            pool for classes with no easy input (default: any inputs of the class).
        fallback_count: pool size for such classes.
        max_pool: a class's easy pool is subsampled (seeded) to at most this many.
        seed: subsampling seed.
        method_kwargs: the method's keyword arguments (``medoids``: ``k``).

    Raises:
        ConfigError: unknown method, or a class present in ``y`` has no inputs at all.

    Example:
        >>> x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
        >>> c = choose_exemplars(x, np.array([0, 0, 0, 1, 1]), np.array([1, 1, 1, 1, 0], bool))
        >>> c.target_index.tolist()
        [1, 1, 1, 3, 3]
    """
    fn = EXEMPLAR_METHODS.get(method)
    kwargs = dict(method_kwargs or {})
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    y = np.asarray(y).astype(np.int64)
    easy = np.asarray(easy, dtype=bool)
    rng = np.random.default_rng(seed)
    num_classes = int(y.max()) + 1
    target = np.empty(flat.shape[0], dtype=np.int64)
    easy_counts, fallback, distinct = [], [], []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        pool = np.flatnonzero(easy & (y == c))
        easy_counts.append(int(pool.size))
        if members.size == 0:
            distinct.append(0)
            continue
        if pool.size == 0:
            fallback.append(c)
            order = (np.argsort(-confidence[members], kind="stable") if confidence is not None
                     else np.arange(members.size))
            pool = members[order[:max(1, fallback_count)]]
        if pool.size > max_pool:
            pool = np.sort(rng.choice(pool, size=max_pool, replace=False))
        target[members] = _apply(fn, flat, members, pool, kwargs)
        distinct.append(int(np.unique(target[members]).size))
    return ExemplarChoice(target, method, easy_counts, fallback, distinct)


def _apply(fn: Callable[..., np.ndarray], flat: np.ndarray, members: np.ndarray, pool: np.ndarray,
           kwargs: dict) -> np.ndarray:
    """Run a method on one class: positions are re-based onto the class's own rows."""
    local = flat[members]
    where = {int(m): i for i, m in enumerate(members)}
    local_pool = np.array([where[int(p)] for p in pool], dtype=np.int64)
    return members[fn(local, local_pool, **kwargs)]
