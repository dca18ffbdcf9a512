"""Threshold calibration: sweep a policy's per-exit thresholds on held-out exit outputs, keep the
accuracy-vs-cost Pareto front, and choose the cheapest point within an accuracy budget of the final exit.

Every operating point is evaluated with :func:`edge_runtime.simulate_exits` — the decision code
the device runs — on the calibration split. Cost is the mean executed FLOPs (the manifest's
``exits[i].cumulative_flops`` of the exit each sample leaves at) and, when per-segment latencies
are given (measured on the exported ONNX files), the mean predicted latency. The oracle (each
sample leaves at the earliest exit that is right) is the ceiling to compare against.

Example:
    >>> outs = [np.eye(3)[[0, 1, 2]] * 9, np.eye(3)[[0, 1, 2]] * 9]
    >>> res = calibrate(outs, np.array([0, 1, 2]), "entropy", {}, flops=[10, 100])
    >>> res.chosen.mean_flops
    10.0
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.calibration.bounds import oracle_exits, pareto_front
from edge_runtime.errors import ConfigError
from edge_runtime.executor import simulate_exits
from edge_runtime.manifest import OperatingPoint
from edge_runtime.policies import ScorePolicy, create_policy


@dataclass(frozen=True)
class Calibration:
    """The result: the front, the chosen point, the final exit's and the oracle's numbers."""

    policy: str
    policy_kwargs: dict[str, Any]
    front: list[OperatingPoint]
    chosen: OperatingPoint
    final_accuracy: float
    exit_accuracy: list[float]
    oracle: dict[str, float]
    evaluated: int
    max_accuracy_drop: float
    cost: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``calibration`` section."""
        return {
            "split": "calibration",
            "policy": {"name": self.policy, "kwargs": self.policy_kwargs},
            "cost": self.cost,
            "max_accuracy_drop": self.max_accuracy_drop,
            "final_exit_accuracy": self.final_accuracy,
            "exit_accuracy": self.exit_accuracy,
            "points_evaluated": self.evaluated,
            "curve": [p.to_dict() for p in self.front],
            "chosen": self.chosen.to_dict(),
            "oracle": self.oracle,
            **self.extra,
        }


def evaluate_point(outputs: Sequence[np.ndarray], y: np.ndarray, policy: str, policy_kwargs: dict[str, Any],
                   thresholds: Sequence[float] | None, flops: Sequence[float],
                   latency: Sequence[float] | None = None, full_latency: float | None = None,
                   full_flops: float | None = None) -> OperatingPoint:
    """Accuracy and cost of one threshold setting (through ``simulate_exits``).

    ``flops_fraction`` is relative to ``full_flops`` (the one-graph full model) when given, else to
    the last exit's cumulative FLOPs (which include the early heads).
    """
    pol = create_policy(policy, len(outputs), list(thresholds) if thresholds is not None else None, **policy_kwargs)
    idx = simulate_exits(outputs, pol)
    return _point(outputs, y, idx, pol.thresholds, flops, latency, full_latency, full_flops)


def _point(outputs: Sequence[np.ndarray], y: np.ndarray, idx: np.ndarray, thresholds: Sequence[float],
           flops: Sequence[float], latency: Sequence[float] | None, full_latency: float | None,
           full_flops: float | None = None) -> OperatingPoint:
    preds = np.stack([o.argmax(-1) for o in outputs])[idx, np.arange(len(y))]
    cum_flops = np.asarray(flops, dtype=np.float64)
    frac = np.bincount(idx, minlength=len(outputs)) / len(y)
    mean_lat = speed = None
    if latency is not None:
        cum_lat = np.cumsum(np.asarray(latency, dtype=np.float64))
        mean_lat = float(cum_lat[idx].mean())
        if full_latency:
            speed = float(full_latency / mean_lat)
    return OperatingPoint([float(t) for t in thresholds], float((preds == y).mean()), float(cum_flops[idx].mean()),
                          float(cum_flops[idx].mean() / (full_flops or cum_flops[-1])), [float(f) for f in frac],
                          mean_lat, speed)


def oracle(outputs: Sequence[np.ndarray], y: np.ndarray, flops: Sequence[float],
           latency: Sequence[float] | None = None, full_latency: float | None = None,
           full_flops: float | None = None, *, accuracy: float | None = None) -> dict[str, Any]:
    """The oracle bound's accuracy and cost (see :func:`edge_runtime.calibration.bounds.oracle_exits`).

    With ``accuracy``, the oracle at that accuracy (cost: latency if given, else FLOPs).
    Returns accuracy, mean FLOPs, FLOPs fraction, exit fractions and (with latencies) the speed-up.
    """
    y = np.asarray(y)
    cum = np.cumsum(latency) if latency is not None else np.asarray(flops, dtype=np.float64)
    idx = oracle_exits(outputs, y, accuracy=accuracy, cumulative_cost=cum)
    p = _point(outputs, y, idx, [], flops, latency, full_latency, full_flops)
    out: dict[str, Any] = {"accuracy": p.accuracy, "mean_flops": p.mean_flops, "flops_fraction": p.flops_fraction,
                           "exit_fractions": p.exit_fractions}
    if accuracy is not None:
        out["target_accuracy"] = float(accuracy)
    if p.mean_latency_s is not None:
        out["mean_latency_s"] = p.mean_latency_s
    if p.expected_speedup is not None:
        out["expected_speedup"] = p.expected_speedup
    return out


def _cost_key(cost: str) -> Any:
    if cost == "flops":
        return lambda p: p.mean_flops
    if cost == "latency":
        return lambda p: (p.mean_latency_s if p.mean_latency_s is not None else p.mean_flops)
    raise ConfigError(f"calibrate.cost: expected 'flops' or 'latency', got {cost!r}")


def threshold_candidates(pol: ScorePolicy, scores: np.ndarray, levels: Sequence[float] | np.ndarray) -> list[float]:
    """Thresholds that let about a fraction q of the samples leave, for each q in ``levels`` (0: none, 1: all).

    Works for both directions (``lower_is_confident``) and for strict or non-strict comparisons:
    each threshold sits halfway between neighbouring distinct scores.
    """
    s = np.unique(scores.astype(np.float64))
    if pol.lower_is_confident:
        edges = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])    # leave if score < edge
    else:
        edges = np.concatenate([[s[-1] + 1.0], ((s[:-1] + s[1:]) / 2)[::-1], [s[0] - 1.0]])
    picks = sorted({int(round(q * (len(edges) - 1))) for q in levels})
    return [float(edges[i]) for i in picks]


def calibrate(outputs: Sequence[np.ndarray], y: np.ndarray, policy: str, policy_kwargs: dict[str, Any], *,
              flops: Sequence[float], latency: Sequence[float] | None = None, full_latency: float | None = None,
              full_flops: float | None = None, max_accuracy_drop: float = 1.0, cost: str = "flops",
              levels: int | None = None, refine_rounds: int = 4) -> Calibration:
    """Sweep per-exit thresholds, keep the Pareto front, choose the cheapest point whose accuracy is at
    least the final exit's minus ``max_accuracy_drop`` points.

    Search: a grid over per-exit quantiles of each exit's confidence score (a full product for up to
    three early exits, a shared quantile otherwise), then coordinate descent from the chosen point over
    every percentile of each exit's score, accepting moves that lower the cost within the budget.

    Args:
        outputs: every exit's outputs on the calibration split, (N, classes) each.
        y: labels, (N,).
        policy: a registered score policy (``entropy``, ``confidence``); other policies are
            evaluated at their configured setting only.
        flops: cumulative FLOPs of answering at each exit (manifest ``exits[i].cumulative_flops``).
        latency: per-segment latency in seconds (segment i alone, decision included), optional.
        full_latency: latency of the one-graph full model, for the expected speed-up.
        full_flops: FLOPs of the one-graph full model (what ``flops_fraction`` is relative to).
        max_accuracy_drop: budget in accuracy points (1.0 = one percentage point).
        cost: ``flops`` or ``latency`` — what "cheapest" means.
        levels: grid levels per exit (default: as many as keep the grid near 3,000 points).
    """
    n_exits = len(outputs)
    y = np.asarray(y)
    if len(flops) != n_exits:
        raise ConfigError(f"calibrate: {len(flops)} cumulative FLOPs for {n_exits} exits")
    exit_acc = [float((o.argmax(-1) == y).mean()) for o in outputs]
    final_acc = exit_acc[-1]
    floor = final_acc - max_accuracy_drop / 100.0 - 1e-12
    key = _cost_key(cost)
    args = (flops, latency, full_latency, full_flops)
    probe = _probe(policy, n_exits, policy_kwargs)
    points: dict[tuple[float, ...], OperatingPoint] = {}

    def run(thr: Sequence[float]) -> OperatingPoint:
        k = tuple(float(t) for t in thr)
        if k not in points:
            points[k] = evaluate_point(outputs, y, policy, policy_kwargs, list(k), *args)
        return points[k]

    if not isinstance(probe, ScorePolicy) or n_exits == 1:
        pt = evaluate_point(outputs, y, policy, policy_kwargs, probe.thresholds or None, *args)
        return Calibration(policy, policy_kwargs, [pt], pt, final_acc, exit_acc,
                           oracle(outputs, y, *args), 1, max_accuracy_drop, cost)
    scores = [probe.score(o) for o in outputs[:-1]]
    e = n_exits - 1
    if levels is None:
        levels = max(3, int(round(3000 ** (1 / e)))) if e <= 3 else 60
    grid = np.linspace(0.0, 1.0, levels)
    cands = [threshold_candidates(probe, s, grid) for s in scores]
    if e <= 3:
        for combo in itertools.product(*cands):
            run(combo)
    else:
        for j in range(levels):
            run([c[min(j, len(c) - 1)] for c in cands])
    feasible = [p for p in points.values() if p.accuracy >= floor]
    best = min(feasible, key=lambda p: (key(p), -p.accuracy)) if feasible else run(
        [c[0] for c in cands])  # nothing leaves early: the final exit's own point
    fine = [threshold_candidates(probe, s, np.linspace(0.0, 1.0, 101)) for s in scores]
    for _ in range(refine_rounds):
        improved = False
        for i in range(e):
            for t in fine[i]:
                thr = list(best.thresholds)
                thr[i] = t
                p = run(thr)
                if p.accuracy >= floor and (key(p), -p.accuracy) < (key(best), -best.accuracy):
                    best, improved = p, True
        if not improved:
            break
    front = pareto_front(list(points.values()), key, lambda p: p.accuracy)
    return Calibration(policy, dict(probe.config()), front, best, final_acc, exit_acc,
                       oracle(outputs, y, *args), len(points), max_accuracy_drop, cost,
                       {"oracle_at_chosen_accuracy": oracle(outputs, y, *args, accuracy=best.accuracy)})


def _probe(policy: str, n_exits: int, policy_kwargs: dict[str, Any]) -> Any:
    """The policy object whose ``score`` we sweep (thresholds are placeholders)."""
    try:
        return create_policy(policy, n_exits, None, **policy_kwargs)
    except ConfigError:
        return create_policy(policy, n_exits, 0.0, **policy_kwargs)


def measure_segment_latency(runtime: Any, x: np.ndarray, *, repeats: int = 200,
                            warmup: int = 20) -> tuple[list[float], float | None]:
    """Median batch-1 latency of each segment (its run plus the exit decision, as the executor times it)
    and of the one-graph full model, measured interleaved on the exported files.

    Samples cycle through ``x`` (model-ready inputs); no sample leaves early while measuring
    (a policy whose thresholds let none leave), so every segment is timed every time.
    """
    pol = _no_exit_policy(runtime)
    n = len(x)
    seg: list[np.ndarray] = []
    full: list[float] = []
    for r in range(warmup + repeats):
        xi = x[r % n:r % n + 1]
        res = runtime.infer(xi, policy=pol)
        t_full = runtime.infer(xi, mode="full").latency_s if runtime.has_full_model else None
        if r >= warmup:
            seg.append(res.segment_latency_s)
            if t_full is not None:
                full.append(t_full)
    return [float(v) for v in np.median(np.stack(seg), axis=0)], (float(np.median(full)) if full else None)


def _no_exit_policy(runtime: Any) -> Any:
    """The bundle's policy with thresholds no sample can meet (same decision cost, nobody leaves)."""
    spec = runtime.manifest.policy
    probe = _probe(spec.name, runtime.num_exits, spec.kwargs)
    if isinstance(probe, ScorePolicy):
        never = -1e30 if probe.lower_is_confident else 1e30
        return create_policy(spec.name, runtime.num_exits, never, **spec.kwargs)
    return create_policy("never", runtime.num_exits)
