"""Threshold-sweep points for the benchmark: the manifest's calibration curve, else per-exit score quantiles."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.manifest import Manifest
from edge_runtime.policies import ScorePolicy


def sweep_thresholds(rt: Any, ctx: Any) -> tuple[list[list[float]], str, list[str]]:
    """Up to ``ctx.sweep_points`` per-exit threshold vectors, where the sweep came from, and each point's origin.

    1. ``calibration.curve`` in the manifest (points with ``thresholds`` for the bundle's policy):
       up to ``sweep_points`` points spread evenly over the curve ordered by cost.
    2. The rest (all of them without a curve), for a score policy (entropy, confidence, ...): at quantile
       level q (evenly spaced in (0, 1)), exit i's threshold is the q-quantile of exit i's score on the benchmark
       data (for higher-is-confident scores the (1-q)-quantile), so roughly a fraction q of the samples reaching
       exit i is confident there.
       The quantiles only place the grid; every point's accuracy is then measured like any other row.
    3. A policy without thresholds (never, patience): no sweep.
    """
    k = int(ctx.sweep_points)
    if k <= 0:
        return [], "disabled (--sweep-points 0)", []
    num = rt.num_exits - 1
    policy = rt.default_policy
    if num < 1 or not getattr(policy, "uses_thresholds", False):
        ctx.notes.append(f"no threshold sweep: policy {rt.manifest.policy.name!r} takes no thresholds")
        return [], "none (policy takes no thresholds)", []
    curve = _spread(_curve_points(rt.manifest, num), k)
    source = f"manifest calibration curve ({len(curve)} points)" if curve else ""
    origins = ["calibration curve"] * len(curve)
    if len(curve) >= k:
        return curve, source, origins
    if not isinstance(policy, ScorePolicy):
        if not curve:
            ctx.notes.append(f"no threshold sweep: policy {type(policy).__name__} has no per-sample score to sweep")
        return curve, source or "none (policy has no score)", origins
    extra = k - len(curve)
    outs = ctx.exit_outputs()
    scores = [np.asarray(policy.score(o), dtype=np.float64) for o in outs[:-1]]
    levels = np.linspace(0.0, 1.0, extra + 2)[1:-1]
    points = []
    for q in levels:
        qq = q if policy.lower_is_confident else 1.0 - q
        points.append([float(np.quantile(s, qq)) for s in scores])
    quant = f"quantile sweep ({extra} levels of per-exit {type(policy).__name__} scores on the benchmark data)"
    origins += [f"score quantile {q:.2f}" for q in levels]
    return curve + points, (f"{source} + {quant}" if source else quant), origins


def _curve_points(manifest: Manifest, num: int) -> list[list[float]]:
    cal = manifest.calibration
    if cal is None:
        return []
    cal_policy = cal.other.get("policy")
    if isinstance(cal_policy, dict) and cal_policy.get("name", manifest.policy.name) != manifest.policy.name:
        return []  # the curve was computed for another policy
    rows = [(p.mean_flops, list(p.thresholds[:num])) for p in cal.curve if len(p.thresholds) >= num]
    rows.sort(key=lambda r: r[0])
    return [thr for _, thr in rows]


def _spread(points: list[list[float]], k: int) -> list[list[float]]:
    if len(points) <= k:
        return points
    idx = np.unique(np.round(np.linspace(0, len(points) - 1, k)).astype(int))
    return [points[i] for i in idx]
