"""The exit-policy interface and the policy registry.

A policy decides, per sample and locally, whether a sample leaves at the exit that
just ran, from that exit's output and the policy's own per-sample state. The
executor shrinks the batch after each decision, so policies never see a sample
that has already left. Adding a policy (PALBERT's Q-exit, an uncertainty rule) is
a new module with a ``@POLICIES.register`` class, not an edit of the executor.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import SCORE_OUTPUT
from edge_runtime.registry import Registry

POLICIES: Registry[type[ExitPolicy]] = Registry("exit policy", plugins="edge_runtime.methods")

State = dict[str, np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


class ExitPolicy(ABC):
    """Decides which samples leave at an exit.

    Subclasses implement :meth:`decide`. Per-sample state lives in a dict of arrays
    whose first axis is the (shrinking) batch; the executor keeps only the rows of
    samples that stay, so a policy can keep running counters per sample.

    Args:
        num_exits: how many exits the model has (the last always answers).
        thresholds: one per non-final exit, or one number for all of them.
    """

    #: whether the policy takes per-exit thresholds
    uses_thresholds: bool = True
    #: the segment outputs :meth:`decide` reads: ``("exit",)`` passes the exit array itself; more names (e.g.
    #: ``("exit", "lambda")``) pass a dict of those outputs
    reads: tuple[str, ...] = ("exit",)

    def __init__(self, num_exits: int, thresholds: float | Sequence[float] | None = None, **kwargs: Any) -> None:
        if kwargs:
            raise ConfigError(f"policy {type(self).__name__} got unknown argument(s): {', '.join(sorted(kwargs))}")
        if num_exits < 1:
            raise ConfigError(f"num_exits must be >= 1, got {num_exits}")
        self.num_exits = int(num_exits)
        self.thresholds = self._normalise_thresholds(thresholds)

    def _normalise_thresholds(self, thresholds: float | Sequence[float] | None) -> list[float]:
        n = self.num_exits - 1
        if not self.uses_thresholds:
            return []
        if thresholds is None:
            thresholds = self.default_threshold()
        scalar = isinstance(thresholds, (int, float, np.integer, np.floating)) and not isinstance(thresholds, bool)
        try:
            values = [float(t) for t in ([thresholds] if scalar else thresholds)]  # type: ignore[arg-type, union-attr]
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"thresholds must be finite numbers, got {thresholds!r}") from None
        if any(not np.isfinite(v) for v in values):
            raise ConfigError(f"thresholds must be finite numbers, got {thresholds!r}")
        if scalar:
            values = values * n
        if len(values) == self.num_exits and n >= 0:
            values = values[:n]  # a value for the final exit is accepted and ignored
        if len(values) != n:
            raise ConfigError(
                f"thresholds: expected {n} value(s) (one per non-final exit) or one number, got {len(values)}"
            )
        return values

    def default_threshold(self) -> float:
        """Threshold used when none is given."""
        raise ConfigError(f"policy {type(self).__name__} needs thresholds")

    def start(self, batch_size: int) -> State:
        """Fresh per-sample state for a batch of ``batch_size`` samples."""
        return {}

    @abstractmethod
    def decide(self, exit_index: int, output: Any, state: State) -> np.ndarray:
        """Return a boolean mask (one per row of ``output``): True where the sample leaves now.

        ``output`` is the exit array itself when :attr:`reads` is ``("exit",)`` (a subclass may annotate it
        ``np.ndarray``), else a dict of the outputs :attr:`reads` names. ``exit_index`` is never the last exit:
        the executor answers every remaining sample there. ``state`` may be updated in place.
        """

    def decide_one(self, exit_index: int, output: Any, state: State) -> bool:
        """:meth:`decide` for a batch of one sample, as a plain bool (the executor's batch-1 path; a policy may
        override it to skip building a mask)."""
        return bool(self.decide(exit_index, output, state)[0])

    def config(self) -> dict[str, Any]:
        """The policy's own keyword arguments (without thresholds), for the manifest."""
        return {}


class ScorePolicy(ExitPolicy):
    """A policy that thresholds one score per sample: leave when ``score <= threshold``
    (``lower_is_confident``) or ``score >= threshold`` (``<`` / ``>`` when :attr:`strict`).

    The score is exposed so calibration can sweep thresholds without re-running. When a segment computes the
    score inside its graph (the ``exit.score`` output), :meth:`read_score_output` makes the policy compare that one
    number instead of recomputing it from the exit output.
    """

    lower_is_confident: bool = True
    #: the scores any output can have (entropy >= 0, confidence <= 1): a threshold past them switches its exit off
    score_bounds: tuple[float, float] = (-np.inf, np.inf)
    #: compare strictly (``score < t`` / ``score > t``)
    strict: bool = False

    @abstractmethod
    def score(self, output: np.ndarray) -> np.ndarray:
        """One confidence score per sample from an exit output."""

    def read_score_output(self) -> ScorePolicy:
        """Decide from the segments' ``exit.score`` output (this policy's own score, computed in the graph);
        returns self."""
        self.reads = (SCORE_OUTPUT,)
        return self

    def passes(self, score: Any, threshold: float) -> Any:
        """Whether a score (array or number) is confident enough to leave at ``threshold``."""
        if self.lower_is_confident:
            return score < threshold if self.strict else score <= threshold
        return score > threshold if self.strict else score >= threshold

    def decide(self, exit_index: int, output: Any, state: State) -> np.ndarray:
        return self.passes(output[SCORE_OUTPUT] if type(output) is dict else self.score(output),
                           self.thresholds[exit_index])

    def decide_one(self, exit_index: int, output: Any, state: State) -> bool:
        score = output[SCORE_OUTPUT] if type(output) is dict else self.score(output)
        return bool(self.passes(float(score[0]), self.thresholds[exit_index]))

    def exit_disabled(self, exit_index: int) -> bool:
        """True when no output can leave at this exit (its threshold lies past every possible score: calibration
        switched it off).

        Example:
            >>> create_policy("entropy", 3, [-0.9997, 0.4]).exit_disabled(0)
            True
        """
        t = self.thresholds[exit_index]
        lo, hi = self.score_bounds
        if self.lower_is_confident:
            return t <= lo if self.strict else t < lo
        return t >= hi if self.strict else t > hi


def create_policy(name: str, num_exits: int, thresholds: float | Sequence[float] | None = None,
                  **kwargs: Any) -> ExitPolicy:
    """Build a registered exit policy by name.

    Example:
        >>> p = create_policy("confidence", num_exits=3, thresholds=0.9)
        >>> p.thresholds
        [0.9, 0.9]
    """
    cls = POLICIES.get(name)
    try:
        return cls(num_exits, thresholds, **kwargs)
    except TypeError as exc:  # an argument the policy does not take
        takes = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "num_exits", "thresholds")]
        raise ConfigError(f"policy {name!r} cannot take arguments {sorted(kwargs)} ({exc}); it takes "
                          f"{', '.join(takes) or 'none'}") from None
    except (ValueError, OverflowError) as exc:  # an argument of the wrong kind (e.g. patience: "two")
        raise ConfigError(f"policy {name!r}: bad arguments {kwargs!r} ({exc})") from None
