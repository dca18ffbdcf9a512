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
from edge_runtime.calibration.risk import (
    BOUNDS,
    RISKS,
    Guarantee,
    certify_sequence,
    exit_losses,
    pvalue,
    split_indices,
    upper_bound,
)
from edge_runtime.errors import ConfigError
from edge_runtime.executor import simulate_exits
from edge_runtime.manifest import EXIT_OUTPUT, SCORE_OUTPUT, OperatingPoint
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
    levels: int | None = None   # the grid levels per exit asked for (None: the default); recalibration reuses it

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
            "levels": self.levels,
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
    return _point_of(np.stack([o.argmax(-1) for o in outputs]), y, idx, thresholds, flops, latency, full_latency,
                     full_flops)


def _point_of(preds: np.ndarray, y: np.ndarray, idx: np.ndarray, thresholds: Sequence[float], flops: Sequence[float],
              latency: Sequence[float] | None, full_latency: float | None,
              full_flops: float | None = None) -> OperatingPoint:
    """An operating point from every exit's predictions (exits, N) and the exit each sample took."""
    answer = preds[idx, np.arange(len(y))]
    cum_flops = np.asarray(flops, dtype=np.float64)
    frac = np.bincount(idx, minlength=preds.shape[0]) / len(y)
    mean_lat = speed = None
    if latency is not None:
        cum_lat = np.cumsum(np.asarray(latency, dtype=np.float64))
        mean_lat = float(cum_lat[idx].mean())
        if full_latency:
            speed = float(full_latency / mean_lat)
    agreement = float((answer == preds[-1]).mean())
    return OperatingPoint([float(t) for t in thresholds], float((answer == y).mean()), float(cum_flops[idx].mean()),
                          float(cum_flops[idx].mean() / (full_flops or cum_flops[-1])), [float(f) for f in frac],
                          mean_lat, speed, agreement)


class _Evaluator:
    """Threshold settings of one score policy on one set of exit outputs, evaluated fast: scores and predictions
    are computed once, and each setting runs the device's own loop (:func:`simulate_exits`) with the policy reading
    the precomputed score, as it reads a segment's in-graph ``exit.score`` on the device."""

    def __init__(self, outputs: Sequence[np.ndarray], y: np.ndarray, policy: str, policy_kwargs: dict[str, Any],
                 probe: ScorePolicy, args: tuple[Any, ...]) -> None:
        self.y = np.asarray(y)
        self.n_exits = len(outputs)
        self.policy, self.kwargs, self.args = policy, policy_kwargs, args
        self.preds = np.stack([o.argmax(-1) for o in outputs])
        self.scores = [np.asarray(probe.score(o), dtype=np.float64) for o in outputs[:-1]]
        self._per_exit = [{EXIT_OUTPUT: self.preds[i][:, None], SCORE_OUTPUT: s} for i, s in enumerate(self.scores)]
        self._per_exit.append({EXIT_OUTPUT: self.preds[-1][:, None]})
        self._cache: dict[tuple[float, ...], np.ndarray] = {}

    def exits(self, thresholds: Sequence[float]) -> np.ndarray:
        key = tuple(float(t) for t in thresholds)
        idx = self._cache.get(key)
        if idx is None:
            pol = create_policy(self.policy, self.n_exits, list(key), **self.kwargs)
            assert isinstance(pol, ScorePolicy)
            idx = self._cache[key] = simulate_exits(self._per_exit, pol.read_score_output())
        return idx

    def point(self, thresholds: Sequence[float]) -> OperatingPoint:
        return _point_of(self.preds, self.y, self.exits(thresholds), thresholds, *self.args)

    def losses(self, thresholds: Sequence[float], risk: str) -> tuple[np.ndarray, float, float]:
        """Per-sample losses of a setting (see :func:`exit_losses`) and their range."""
        answer = self.preds[self.exits(thresholds), np.arange(len(self.y))]
        return exit_losses(answer, self.preds[-1], self.y, risk)

    def subset(self, rows: np.ndarray) -> _Evaluator:
        sub = object.__new__(_Evaluator)
        sub.y, sub.n_exits, sub.policy, sub.kwargs, sub.args = self.y[rows], self.n_exits, self.policy, \
            self.kwargs, self.args
        sub.preds = self.preds[:, rows]
        sub.scores = [s[rows] for s in self.scores]
        sub._per_exit = [{k: v[rows] for k, v in d.items()} for d in self._per_exit]
        sub._cache = {}
        return sub


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
              levels: int | None = None, refine_rounds: int = 4, confidence: float | None = None,
              risk: str = "label_drop", bound: str = "binomial", selection_fraction: float | None = None,
              seed: int = 0, ramp_steps: int = 24) -> Calibration:
    """Sweep per-exit thresholds, keep the Pareto front, choose the cheapest point whose accuracy is at
    least the final exit's minus ``max_accuracy_drop`` points.

    Search: a grid over per-exit quantiles of each exit's confidence score (a full product for up to
    three early exits, a shared quantile otherwise), then coordinate descent from the chosen point over
    every percentile of each exit's score, accepting moves that lower the cost within the budget.

    With ``confidence`` (e.g. 0.9) the choice comes with a guarantee (:mod:`edge_runtime.calibration.risk`): the
    calibration samples are split (seeded) into a *selection* part, where the search above finds the Pareto front,
    and a *test* part, where the front's points are tested from the safest to the cheapest (Learn-then-Test,
    fixed-sequence); the cheapest certified point is chosen. With probability >= ``confidence`` over the calibration
    draw, its ``risk`` on new data from the same distribution is <= ``max_accuracy_drop`` points. When no point
    certifies, no sample leaves early (risk 0). ``confidence=None`` keeps the point estimate above.

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
        confidence: probability that the budget holds on new data (None: the point estimate).
        risk: what the budget bounds with ``confidence``: ``label_drop`` (the final exit's accuracy minus the
            early-exit accuracy, on labels) or ``disagreement`` (the fraction answered differently from the final
            exit; label-free and never below the drop).
        bound: the p-value (:data:`edge_runtime.calibration.risk.BOUNDS`).
        selection_fraction: the share of the calibration samples that finds the candidates (the rest tests them);
            None: the test part gets :func:`edge_runtime.calibration.risk.holdout_size` samples (nothing certifies
            unless it has at least ln(1 / (1 - confidence)) / budget of them, e.g. 230 for 1 point at 0.9).
        seed: the selection/test split's seed.
        ramp_steps: steps between neighbouring candidates of the tested sequence (see :func:`_path`).
    """
    n_exits = len(outputs)
    y = np.asarray(y)
    if len(flops) != n_exits:
        raise ConfigError(f"calibrate: {len(flops)} cumulative FLOPs for {n_exits} exits")
    if risk not in RISKS:
        raise ConfigError(f"calibrate.risk: expected one of {', '.join(RISKS)}, got {risk!r}")
    if bound not in BOUNDS:
        raise ConfigError(f"calibrate.bound: expected one of {', '.join(BOUNDS)}, got {bound!r}")
    exit_acc = [float((o.argmax(-1) == y).mean()) for o in outputs]
    final_acc = exit_acc[-1]
    key = _cost_key(cost)
    args = (flops, latency, full_latency, full_flops)
    probe = _probe(policy, n_exits, policy_kwargs)
    if not isinstance(probe, ScorePolicy) or n_exits == 1:
        pt = evaluate_point(outputs, y, policy, policy_kwargs, probe.thresholds or None, *args)
        extra: dict[str, Any] = {}
        if confidence is not None:
            extra["guarantee"] = _single_point_guarantee(outputs, y, pt, policy, policy_kwargs, max_accuracy_drop,
                                                         confidence, risk, bound)
        return Calibration(policy, policy_kwargs, [pt], pt, final_acc, exit_acc,
                           oracle(outputs, y, *args), 1, max_accuracy_drop, cost, extra, levels)
    ev = _Evaluator(outputs, y, policy, policy_kwargs, probe, args)
    if confidence is None:
        points, best = _search(ev, probe, max_accuracy_drop, key, levels, refine_rounds)
        front = pareto_front(list(points.values()), key, lambda p: p.accuracy)
        return Calibration(policy, dict(probe.config()), front, best, final_acc, exit_acc,
                           oracle(outputs, y, *args), len(points), max_accuracy_drop, cost,
                           {"oracle_at_chosen_accuracy": oracle(outputs, y, *args, accuracy=best.accuracy),
                            "confidence": None}, levels)
    return _calibrate_with_guarantee(ev, outputs, y, policy_kwargs, probe, args, max_accuracy_drop, key, cost,
                                     levels, refine_rounds, confidence, risk, bound, selection_fraction, seed,
                                     final_acc, exit_acc, ramp_steps)


def _search(ev: _Evaluator, probe: ScorePolicy, max_accuracy_drop: float, key: Any, levels: int | None,
            refine_rounds: int) -> tuple[dict[tuple[float, ...], OperatingPoint], OperatingPoint]:
    """The threshold search on one set of outputs: every evaluated point, and the cheapest within the budget."""
    floor = float((ev.preds[-1] == ev.y).mean()) - max_accuracy_drop / 100.0 - 1e-12
    points: dict[tuple[float, ...], OperatingPoint] = {}

    def run(thr: Sequence[float]) -> OperatingPoint:
        k = tuple(float(t) for t in thr)
        if k not in points:
            points[k] = ev.point(k)
        return points[k]

    scores = ev.scores
    e = ev.n_exits - 1
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
    return points, best


def _never_thresholds(probe: ScorePolicy, n_exits: int) -> list[float]:
    """Thresholds no score can meet: nobody leaves early (risk 0 by construction)."""
    return [-1e30 if probe.lower_is_confident else 1e30] * (n_exits - 1)


def _calibrate_with_guarantee(ev: _Evaluator, outputs: Sequence[np.ndarray], y: np.ndarray,
                              policy_kwargs: dict[str, Any], probe: Any, args: tuple[Any, ...],
                              max_accuracy_drop: float, key: Any, cost: str, levels: int | None, refine_rounds: int,
                              confidence: float, risk: str, bound: str, selection_fraction: float | None,
                              seed: int, final_acc: float, exit_acc: list[float], ramp_steps: int) -> Calibration:
    """Pareto Testing: candidates from the selection part, fixed-sequence test on the test part (see calibrate)."""
    sel, test = split_indices(len(y), selection_fraction, seed, max_risk=max_accuracy_drop / 100.0,
                              confidence=confidence)
    ev_sel = ev.subset(sel)
    points_sel, _ = _search(ev_sel, probe, max_accuracy_drop, key, levels, refine_rounds)
    # order by the risk the test will see (the positive part for binomial / Hoeffding-Bentkus), safest first
    tested_risk = {thr: float(_as_tested(ev_sel.losses(thr, risk)[0], bound).mean()) for thr in points_sel}
    front_sel = pareto_front(list(points_sel.values()), key, lambda p: -tested_risk[tuple(p.thresholds)])
    safe = tuple(_never_thresholds(probe, ev.n_exits))
    order = _path(probe, ev_sel.scores, [safe] + [tuple(p.thresholds) for p in reversed(front_sel)], ramp_steps)
    ev_test = ev.subset(test)
    eps = max_accuracy_drop / 100.0
    lo = -1.0 if risk == "label_drop" else 0.0
    certified, pvals = certify_sequence(
        order, lambda thr: ev_test.losses(thr, risk)[0], max_risk=eps, confidence=confidence, bound=bound, lo=lo,
        hi=1.0, safe=lambda thr: thr == safe)
    full_points = {thr: ev.point(thr) for thr in order}
    choice = min(certified, key=lambda i: (key(full_points[order[i]]), -full_points[order[i]].accuracy))
    chosen = full_points[order[choice]]
    ell, lo_, hi_ = ev_test.losses(order[choice], risk)
    g = Guarantee(
        certified=order[choice] != safe, max_risk=eps, confidence=float(confidence),
        upper_bound=upper_bound(ell, bound, confidence, lo=lo_, hi=hi_) if order[choice] != safe else 0.0,
        empirical_risk=float(ell.mean()), p_value=float(pvals[choice]), bound=bound,
        method="Learn-then-Test, fixed-sequence over the Pareto front of a selection split (Pareto Testing)",
        n_test=int(len(test)), n_selection=int(len(sel)), tested=len(pvals), rejected=len(certified))
    guarantee = {**g.to_dict(), "risk": risk, "max_accuracy_drop": float(max_accuracy_drop),
                 "selection_fraction": None if selection_fraction is None else float(selection_fraction),
                 "split_seed": int(seed),
                 "statement": _statement(risk, max_accuracy_drop, confidence)}
    front = pareto_front(list(full_points.values()), key, lambda p: p.accuracy)
    return Calibration(ev.policy, dict(probe.config()), front, chosen, final_acc, exit_acc,
                       oracle(outputs, y, *args), len(points_sel) + len(full_points), max_accuracy_drop, cost,
                       {"oracle_at_chosen_accuracy": oracle(outputs, y, *args, accuracy=chosen.accuracy),
                        "confidence": float(confidence), "guarantee": guarantee}, levels)


def _path(probe: ScorePolicy, scores: Sequence[np.ndarray], stops: Sequence[tuple[float, ...]],
          steps: int) -> list[tuple[float, ...]]:
    """The sequence to test: from each stop to the next in ``steps`` even steps of every exit's share of (selection)
    samples passing its threshold, so neighbours differ little and the first ones are nested (only looser)."""
    def share(i: int, t: float) -> float:
        return float(np.mean(probe.passes(scores[i], t)))

    out: list[tuple[float, ...]] = [stops[0]]
    for a, b in zip(stops[:-1], stops[1:]):
        fa = [share(i, t) for i, t in enumerate(a)]
        fb = [share(i, t) for i, t in enumerate(b)]
        for k in range(1, steps):
            alpha = k / steps
            out.append(tuple(threshold_candidates(probe, scores[i], [fa[i] + alpha * (fb[i] - fa[i])])[0]
                             for i in range(len(a))))
        out.append(tuple(b))
    return list(dict.fromkeys(out))


def _as_tested(losses: np.ndarray, bound: str) -> np.ndarray:
    """The losses a bound's p-value looks at: the positive part for the {0, 1} bounds, the signed loss for wsr."""
    return losses if bound == "wsr" else np.maximum(losses, 0.0)


def _statement(risk: str, max_accuracy_drop: float, confidence: float) -> str:
    what = ("the accuracy drop against the final exit (labels)" if risk == "label_drop"
            else "the share of answers that differ from the final exit's")
    return (f"with probability >= {confidence:g} over the calibration draw, {what} on new data from the same "
            f"distribution is <= {max_accuracy_drop:g} point(s)")


def _single_point_guarantee(outputs: Sequence[np.ndarray], y: np.ndarray, pt: OperatingPoint, policy: str,
                            policy_kwargs: dict[str, Any], max_accuracy_drop: float, confidence: float, risk: str,
                            bound: str) -> dict[str, Any]:
    """A policy without thresholds has one setting: test it on every calibration sample (nothing to select)."""
    pol = create_policy(policy, len(outputs), list(pt.thresholds) or None, **policy_kwargs)
    answer = np.stack([o.argmax(-1) for o in outputs])[simulate_exits(outputs, pol), np.arange(len(y))]
    ell, lo, hi = exit_losses(answer, outputs[-1].argmax(-1), y, risk)
    eps = max_accuracy_drop / 100.0
    p = pvalue(ell, eps, bound, lo=lo, hi=hi, delta=1.0 - confidence)
    g = Guarantee(certified=p <= 1.0 - confidence, max_risk=eps, confidence=float(confidence),
                  upper_bound=upper_bound(ell, bound, confidence, lo=lo, hi=hi), empirical_risk=float(ell.mean()),
                  p_value=p, bound=bound, method="one test of the policy's only setting", n_test=int(len(y)),
                  n_selection=0, tested=1, rejected=int(p <= 1.0 - confidence))
    return {**g.to_dict(), "risk": risk, "max_accuracy_drop": float(max_accuracy_drop),
            "statement": _statement(risk, max_accuracy_drop, confidence)}


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
    if isinstance(probe, ScorePolicy):  # made by the runtime: it reads the in-graph score when the graphs have it
        return runtime.make_policy(None, _never_thresholds(probe, runtime.num_exits))
    return create_policy("never", runtime.num_exits)
