"""Recommend what to deploy: every configuration a bundle holds — each inference mode (early exit, the one-graph
model, a method's own mode, found through :data:`edge_runtime.modes.MODES`) on each backend x precision its files
cover — compared on the same samples, and the cheapest within the accuracy budget chosen.

The one-graph fp32 model is always a candidate and always within the budget (it *is* the reference), so the
recommendation is never slower than it: a bundle whose early exit does not pay on this device (a small model whose
per-segment call cost outweighs the skipped work, an int8 one-graph file faster than every early-exit setting)
recommends the faster configuration instead, and says why. ``convert`` writes the recommendation into the
manifest's ``deployment`` record, which :func:`edge_runtime.load_bundle` and :meth:`Runtime.infer` follow by
default; ``bench`` recommends from its own measured rows with the same rule (:func:`recommend`).

Costs are mean batch-1 latencies measured here (interleaved, each sample through every configuration in turn), or,
with a device profile, predicted for that device from the manifest's FLOPs and op counts
(:mod:`edge_runtime.estimate`; only configurations it can predict are then eligible).

Example:
    >>> cands = [Candidate("full", "onnxruntime", "onnx", "fp32", None, 0.99, 1e-3),
    ...          Candidate("early_exit", "onnxruntime", "onnx", "fp32", [0.5], 0.985, 4e-4)]
    >>> recommend(cands, budget_pts=1.0).mode
    'early_exit'
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError

#: the configuration every recommendation is measured against (and may fall back to)
REFERENCE = ("full", "fp32")


@dataclass(frozen=True)
class Candidate:
    """One deployable configuration and what it achieved on the comparison samples.

    Attributes:
        mode: a registered inference mode; backend/format/precision: the files and the backend running them.
        thresholds: the policy thresholds it runs with (modes that use the policy), else None.
        accuracy: on the comparison samples.
        latency_s: mean batch-1 latency (measured, or predicted for ``cost_source``'s device); None: unknown.
        energy_j: mean energy per inference when metered/estimated, else None.
        cost_source: ``measured on this machine`` or ``predicted for <profile>``.
        drop_pts, eligible, note: filled by :func:`recommend`.
    """

    mode: str
    backend: str
    format: str
    precision: str
    thresholds: list[float] | None
    accuracy: float
    latency_s: float | None
    energy_j: float | None = None
    cost_source: str = "measured on this machine"
    drop_pts: float | None = None
    eligible: bool | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.format}/{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration, why, and every candidate it was chosen from (the manifest's ``deployment``)."""

    mode: str
    backend: str
    format: str
    precision: str
    thresholds: list[float] | None
    why: str
    budget_pts: float
    reference: str
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "backend": self.backend, "format": self.format, "precision": self.precision,
                "thresholds": self.thresholds, "why": self.why, "budget_pts": self.budget_pts,
                "reference": self.reference, "candidates": [c.to_dict() for c in self.candidates]}


def recommend(candidates: Sequence[Candidate], budget_pts: float, *, reference: Candidate | None = None
              ) -> Recommendation:
    """The candidate with the lowest latency among those whose accuracy is within ``budget_pts`` points of the
    reference (the fp32 one-graph model, or ``reference``); ties go to the reference, then to fewer moving parts.

    Raises:
        EdgeRuntimeError: no candidate has a known cost.
    """
    ref = reference or _reference(candidates)
    judged = []
    for c in candidates:
        drop = 100.0 * (ref.accuracy - c.accuracy)
        ok = c.latency_s is not None and drop <= budget_pts + 1e-9
        why = "" if ok else ("cost unknown" if c.latency_s is None else f"drop {drop:.2f} > {budget_pts:g} points")
        judged.append(replace(c, drop_pts=drop, eligible=ok, note=(c.note + "; " if c.note and why else c.note) + why))
    eligible = [c for c in judged if c.eligible]
    if not eligible:
        raise EdgeRuntimeError("no configuration with a known cost to recommend")
    best = min(eligible, key=lambda c: (c.latency_s or 0.0, c.name != ref.name, c.mode != "full"))
    assert best.latency_s is not None
    ref_lat = next((c.latency_s for c in judged if c.name == ref.name), None)
    speed = f"{ref_lat / best.latency_s:.2f}x" if ref_lat and best.latency_s else "n/a"
    if best.name == ref.name:
        beaten = [c for c in judged if c.name != ref.name and (c.latency_s or best.latency_s) < best.latency_s]
        why = (f"the one-graph model is the fastest configuration within {budget_pts:g} accuracy point(s)"
               + (f" ({', '.join(f'{c.name}: {c.note}' for c in beaten)})" if beaten else
                  " (every other configuration is slower here)"))
    else:
        why = (f"fastest within {budget_pts:g} accuracy point(s) of {ref.name}: {1e3 * best.latency_s:.3f} ms vs "
               f"{1e3 * ref_lat:.3f} ms ({speed}), accuracy drop {best.drop_pts:.2f} points"
               if ref_lat else f"fastest within {budget_pts:g} accuracy point(s) of {ref.name}")
    why += f"; costs {best.cost_source}"
    return Recommendation(best.mode, best.backend, best.format, best.precision, best.thresholds, why,
                          float(budget_pts), ref.name, judged)


def _reference(candidates: Sequence[Candidate]) -> Candidate:
    ref = [c for c in candidates if (c.mode, c.precision) == REFERENCE]
    if not ref:
        raise EdgeRuntimeError("no fp32 one-graph ('full') candidate to compare against")
    return min(ref, key=lambda c: (c.format != "onnx",))


def measure_candidates(bundle: str | Path, x: np.ndarray, y: np.ndarray, *, repeats: int = 3, threads: int | None = 1,
                       profile: Any = None, notes: list[str] | None = None) -> list[Candidate]:
    """Run every configuration the bundle holds on ``x`` (model-ready, one sample per call) and return each one's
    accuracy and mean batch-1 latency (the median of ``repeats`` interleaved passes per sample).

    With ``profile`` (a device profile or its name) the latencies are predicted for that device instead
    (:mod:`edge_runtime.estimate`); configurations it cannot predict keep ``latency_s = None``.
    ``notes`` collects why a variant was skipped (its backend missing here).
    """
    from edge_runtime.backends import BACKENDS
    from edge_runtime.modes import MODES
    from edge_runtime.runtime import load_bundle

    notes = notes if notes is not None else []
    first = load_bundle(bundle, threads=threads, precision="fp32", backend="onnxruntime")
    configs: list[tuple[Candidate, Any]] = []
    for fmt, precision in first.manifest.held_variants():
        names = [n for n in BACKENDS.names() if _file_format(BACKENDS, n) == fmt]
        rt = None
        for name in names:
            try:
                rt = first if (name, precision) == ("onnxruntime", "fp32") else \
                    load_bundle(bundle, threads=threads, precision=precision, backend=name)
                break
            except EdgeRuntimeError as exc:
                notes.append(f"{fmt}/{precision} on {name}: not compared ({exc})")
        if rt is None:
            continue
        for mode_name in rt.modes():
            mode = MODES.get(mode_name)
            if mode.handles_requests or (mode_name == "full" and not rt.has_full_model):
                continue  # a generative mode answers requests, not batches; full without its file = every segment
            thr = list(rt.default_policy.thresholds) if mode.uses_policy else None
            configs.append((Candidate(mode_name, rt.backend.name, fmt, precision, thr, 0.0, None), rt))
    preds: dict[int, np.ndarray] = {k: np.empty(len(x), dtype=np.int64) for k in range(len(configs))}
    times: dict[int, np.ndarray] = {k: np.empty((repeats, len(x))) for k in range(len(configs))}
    clock = time.perf_counter
    for r in range(repeats):
        for i in range(len(x)):
            xi = x[i:i + 1]
            for k in _rotate(len(configs), i + r):  # each sample through every configuration, in turn
                cand, rt = configs[k]
                t0 = clock()
                res = rt.infer(xi, mode=cand.mode)
                times[k][r, i] = clock() - t0
                preds[k][i] = int(res.predictions[0])
    out = []
    y = np.asarray(y)
    for k, (cand, rt) in enumerate(configs):
        latency: float | None = float(np.median(times[k], axis=0).mean())
        source = "measured on this machine"
        if profile is not None:
            latency, source = _predicted(rt, cand, profile, preds[k])
        out.append(replace(cand, accuracy=float((preds[k] == y).mean()), latency_s=latency, cost_source=source))
    return out


def _file_format(backends: Any, name: str) -> str | None:
    try:
        return backends.get(name).file_format
    except EdgeRuntimeError:  # a lazy backend whose package is missing here
        return None


def _rotate(n: int, shift: int) -> list[int]:
    s = shift % n if n else 0
    return list(range(s, n)) + list(range(s))


def _predicted(rt: Any, cand: Candidate, profile: Any, preds: np.ndarray) -> tuple[float | None, str]:
    """A profile's predicted batch-1 latency for fp32 ONNX early exit (at its exit fractions) or one graph."""
    from edge_runtime.estimate import estimate_segment_latency
    from edge_runtime.profiles import resolve_profile

    prof = resolve_profile(profile)
    source = f"predicted for {prof.name}"
    m = rt.manifest
    if (cand.format, cand.precision) != ("onnx", "fp32"):
        return None, source + " (no prediction for this precision)"
    if cand.mode == "full" and m.full_model is not None:
        return estimate_segment_latency(m.full_model, prof, last=True), source
    if cand.mode == "early_exit" and m.calibration is not None and m.calibration.chosen is not None:
        seg = [estimate_segment_latency(s, prof, last=i == m.num_exits - 1, first=i == 0)
               for i, s in enumerate(m.segments)]
        cum = np.cumsum(seg)
        frac = np.asarray(m.calibration.chosen.exit_fractions, dtype=np.float64)
        return float((cum * frac).sum() / frac.sum()), source
    return None, source + f" (no prediction for mode {cand.mode!r})"
