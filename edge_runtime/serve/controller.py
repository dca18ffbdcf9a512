"""Service-level objectives on the device: move along the bundle's calibrated Pareto front to meet a latency or
energy objective under changing load, never below an accuracy floor; and watch live accuracy on a sampled stream.

:class:`SLOController` holds the front's operating points (most accurate first) and, each window (1 s by default),
compares what it observed (the window's p95 request latency, or mean energy per inference) with the objective. The
cost model is one number: ``k`` = observed / the current point's calibrated cost (its predicted mean latency, else
its FLOPs), smoothed; load, a throttled clock or a longer queue all show up as a larger ``k``. The controller picks
the most accurate allowed point whose calibrated cost times ``k`` fits under ``headroom`` x the objective, moves
back to more accurate points only when they fit under ``relax`` x the objective for ``patience`` windows in a row
(hysteresis), and steps one point cheaper at once when the queue backs up. Points whose calibrated accuracy is below
``floor_accuracy`` are never used.

:class:`AccuracyMonitor` (Apparate, SOSP 2024: thresholds re-tuned from a sampled stream of full-depth answers): a
small fraction of requests also runs to the final exit; the share answered alike (agreement) is kept per operating
point, and turned into a live accuracy estimate with the calibration split's own ratio of accuracy drop to
disagreement at that point. When the estimate for the point in use falls below the floor, the controller blocks
that point and every cheaper one for a while (falls back to safer thresholds).

Numpy only, no clock of its own (callers pass ``now``), so a recorded latency trace replays exactly.

Example:
    >>> from edge_runtime.manifest import OperatingPoint
    >>> pts = [OperatingPoint([9.0], 0.99, 10.0, 1.0, [0.0, 1.0], mean_latency_s=0.010),
    ...        OperatingPoint([0.5], 0.98, 4.0, 0.4, [0.6, 0.4], mean_latency_s=0.004)]
    >>> c = SLOController(pts, SLO.parse("p95_latency_ms=8"))
    >>> for t in range(20):
    ...     c.observe(12.0, now=t * 0.1)          # 12 ms at the accurate point: too slow
    >>> c.step(now=2.0), c.index
    (1, 1)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest, OperatingPoint

#: objective kinds: name -> (what is observed, unit)
SLO_KINDS = {"p95_latency_ms": ("p95 of request latency in the window", "ms"),
             "energy_mj": ("mean energy per inference in the window", "mJ")}


@dataclass(frozen=True)
class SLO:
    """A service-level objective: ``p95_latency_ms=5`` or ``energy_mj=2``."""

    kind: str
    target: float

    @classmethod
    def parse(cls, spec: str) -> SLO:
        """From ``KIND=VALUE``.

        Raises:
            ConfigError: unknown kind or a value that is not a positive number.
        """
        kind, sep, value = str(spec).partition("=")
        kind = kind.strip()
        if not sep or kind not in SLO_KINDS:
            raise ConfigError(f"--slo {spec!r}: expected KIND=VALUE with KIND one of {', '.join(SLO_KINDS)}")
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if not math.isfinite(target) or target <= 0:
            raise ConfigError(f"--slo {spec!r}: the target must be a positive number")
        return cls(kind, target)

    def __str__(self) -> str:
        return f"{self.kind}={self.target:g}"


def front_points(manifest: Manifest) -> list[OperatingPoint]:
    """The bundle's calibrated front as operating points, most accurate first, ending with nobody leaving early
    when the curve lacks it (always a valid fallback).

    Raises:
        ConfigError: the bundle has no calibration curve with thresholds (nothing to move along).
    """
    cal = manifest.calibration
    n = manifest.num_exits - 1
    curve = [p for p in (cal.curve if cal is not None else ()) if len(p.thresholds) == n and n > 0]
    if not curve:
        raise ConfigError(f"bundle {manifest.name!r} has no calibration curve with thresholds: an SLO needs the "
                          "calibrated front (convert with a 'calibrate' section)")
    pts = sorted(curve, key=lambda p: (-p.accuracy, -_cost(p)))
    out: list[OperatingPoint] = []
    for p in pts:  # keep a front: each next point strictly cheaper
        if not out or _cost(p) < _cost(out[-1]):
            out.append(p)
    return out


def _cost(p: OperatingPoint) -> float:
    """A point's calibrated cost: its mean latency in ms (so ``k`` is a plain slowdown factor for a latency
    objective), else its mean FLOPs."""
    return float(p.mean_latency_s * 1e3 if p.mean_latency_s is not None else p.mean_flops)


class SLOController:
    """Chooses the operating point from observed costs (see the module docstring).

    Args:
        points: operating points, most accurate (and most expensive) first.
        slo: the objective.
        floor_accuracy: points whose calibrated accuracy is below it are never used (a fraction, e.g. 0.97).
        window_s: how often a decision is made (seconds of observations).
        headroom: aim for the objective times this (< 1 leaves room for noise).
        relax: move to a more accurate point only when it is predicted under the objective times this.
        smoothing: weight of the newest window in ``k`` (exponential moving average).
        min_observations: a window with fewer observations makes no decision.
        block_s: how long a point the accuracy monitor rejected stays blocked (with every cheaper one).
        patience: windows in a row that must allow a more accurate point before the controller moves back up
            (moves to cheaper points are immediate).
    """

    def __init__(self, points: Sequence[OperatingPoint], slo: SLO, *, floor_accuracy: float | None = None,
                 window_s: float = 1.0, headroom: float = 0.9, relax: float = 0.8, smoothing: float = 0.5,
                 min_observations: int = 5, block_s: float = 30.0, patience: int = 3) -> None:
        if not points:
            raise ConfigError("SLOController needs at least one operating point")
        self.points = list(points)
        self.slo = slo
        self.floor_accuracy = floor_accuracy
        self.window_s, self.headroom, self.relax = float(window_s), float(headroom), float(relax)
        self.smoothing, self.min_observations, self.block_s = float(smoothing), int(min_observations), float(block_s)
        self.patience = max(int(patience), 1)
        self._calm = 0
        self.costs = np.array([_cost(p) for p in self.points], dtype=np.float64)
        allowed = [i for i, p in enumerate(self.points) if floor_accuracy is None or p.accuracy >= floor_accuracy]
        if not allowed:
            raise ConfigError(f"no calibrated operating point reaches the accuracy floor {floor_accuracy}; the most "
                              f"accurate one has {self.points[0].accuracy:.4f}")
        self.allowed = allowed
        self.index = allowed[0]
        self.k: float | None = None
        self._window: list[float] = []
        self._window_start: float | None = None
        self._blocked_until: dict[int, float] = {}
        self.last_observed: float | None = None
        self.windows = 0
        self.moves = 0

    # -- observations ------------------------------------------------------------------------------------------
    def observe(self, value: float, *, now: float) -> None:
        """One observation in the objective's unit (ms of latency, or mJ per inference), at time ``now``."""
        if self._window_start is None:
            self._window_start = now
        self._window.append(float(value))

    def backlog(self, *, now: float) -> int | None:
        """The queue is backing up: step one allowed point cheaper at once (returns the new index, or None)."""
        cheaper = [i for i in self._usable(now) if i > self.index]
        if not cheaper:
            return None
        self.index = cheaper[0]
        self.moves += 1
        return self.index

    def step(self, *, now: float) -> int | None:
        """Close the window if ``window_s`` has passed: decide the point; returns the new index when it changed."""
        if self._window_start is None or now - self._window_start < self.window_s:
            return None
        values, self._window, self._window_start = self._window, [], now
        if len(values) < self.min_observations:
            return None
        observed = float(np.percentile(values, 95)) if self.slo.kind == "p95_latency_ms" else float(np.mean(values))
        self.last_observed = observed
        self.windows += 1
        k_now = observed / self.costs[self.index]
        self.k = k_now if self.k is None else self.smoothing * k_now + (1 - self.smoothing) * self.k
        k = max(self.k, k_now) if observed > self.slo.target else self.k  # a breach counts at once
        usable = self._usable(now)
        fits = [i for i in usable if self.costs[i] * k <= self.headroom * self.slo.target]
        target = fits[0] if fits else usable[-1]
        if target < self.index and self.costs[target] * k > self.relax * self.slo.target:
            more = [i for i in usable if i < self.index and self.costs[i] * k <= self.relax * self.slo.target]
            target = more[0] if more else self.index  # not enough slack to go back up yet: stay
        if target not in usable:
            target = usable[0]
        if target < self.index:  # more accurate: only after `patience` windows in a row say so (no oscillation)
            self._calm += 1
            if self._calm < self.patience:
                return None
        self._calm = 0
        if target != self.index:
            self.index = target
            self.moves += 1
            return target
        return None

    # -- the accuracy monitor's fallback -----------------------------------------------------------------------
    def block(self, index: int, *, now: float) -> int:
        """Block point ``index`` and every cheaper one for ``block_s``; move to the cheapest safer point left."""
        for i in range(index, len(self.points)):
            self._blocked_until[i] = now + self.block_s
        usable = self._usable(now)
        if self.index not in usable:
            self.index = usable[-1]
            self.moves += 1
        return self.index

    def _usable(self, now: float) -> list[int]:
        out = [i for i in self.allowed if self._blocked_until.get(i, -math.inf) <= now]
        return out or [self.allowed[0]]

    @property
    def point(self) -> OperatingPoint:
        return self.points[self.index]

    def state(self) -> dict[str, Any]:
        """JSON-ready: the objective, the point in use and what was last observed."""
        p = self.point
        return {"slo": str(self.slo), "slo_kind": self.slo.kind, "slo_target": self.slo.target,
                "index": self.index, "points": len(self.points), "thresholds": list(p.thresholds),
                "expected_accuracy": p.accuracy, "expected_agreement": p.agreement,
                "calibrated_cost": float(self.costs[self.index]),
                "calibrated_cost_unit": "ms" if self.point.mean_latency_s is not None else "FLOPs",
                "cost_factor": None if self.k is None else float(self.k),
                "last_observed": self.last_observed, "floor_accuracy": self.floor_accuracy,
                "windows": self.windows, "moves": self.moves}


class AccuracyMonitor:
    """Agreement with the final exit on a sampled fraction of answers, per operating point (see module docstring).

    Args:
        fraction: share of samples also run to the final exit (0 turns the monitor off).
        final_accuracy: the final exit's calibrated accuracy.
        window: most recent checked samples kept per point.
        min_samples: fewer checked samples than this give no estimate.
        seed: the sampling generator's seed.
    """

    def __init__(self, fraction: float, final_accuracy: float | None, *, window: int = 2000, min_samples: int = 200,
                 seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"monitor fraction must be in [0, 1], got {fraction}")
        self.fraction = float(fraction)
        self.final_accuracy = final_accuracy
        self.window, self.min_samples = int(window), int(min_samples)
        self._rng = np.random.default_rng(seed)
        self._agree: dict[int, deque[bool]] = {}
        self.checked = 0

    def sample(self, n: int) -> np.ndarray:
        """Which of ``n`` samples to check (a boolean mask)."""
        if self.fraction <= 0.0:
            return np.zeros(n, dtype=bool)
        return self._rng.random(n) < self.fraction

    def record(self, index: int, agree: np.ndarray) -> None:
        """Checked samples answered at operating point ``index``: True where they matched the final exit."""
        q = self._agree.setdefault(index, deque(maxlen=self.window))
        q.extend(bool(a) for a in np.asarray(agree).reshape(-1))
        self.checked += int(np.asarray(agree).size)

    def points(self) -> list[int]:
        """The operating points with checked samples."""
        return sorted(self._agree)

    def agreement(self, index: int) -> tuple[float | None, int]:
        """(share answered as the final exit, checked samples) at point ``index``."""
        q = self._agree.get(index)
        if not q:
            return None, 0
        return float(np.mean(q)), len(q)

    def accuracy_estimate(self, index: int, point: OperatingPoint) -> float | None:
        """Live accuracy at a point: the final exit's calibrated accuracy minus the live disagreement times the
        calibration split's ratio of accuracy drop to disagreement at that point (1 when it had no disagreement).
        With the calibrated agreement it gives back the calibrated accuracy; more disagreement lowers it."""
        agree, n = self.agreement(index)
        if agree is None or n < self.min_samples or self.final_accuracy is None:
            return None
        cal_dis = 1.0 - point.agreement if point.agreement is not None else None
        ratio = (self.final_accuracy - point.accuracy) / cal_dis if cal_dis and cal_dis > 1e-9 else 1.0
        return float(self.final_accuracy - (1.0 - agree) * min(max(ratio, 0.0), 1.0))
