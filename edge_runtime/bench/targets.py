"""The report's targets: each a registered check over results.json that says PASS, MISS or N/A, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_runtime.modes.base import MODES
from edge_runtime.registry import Registry

#: name -> ``check(results) -> target dict`` (``status`` PASS / MISS / N/A, ``value``, ``goal``, ``detail``)
TARGETS: Registry[Callable[[dict[str, Any]], dict[str, Any]]] = Registry(
    "benchmark target", plugins="edge_runtime.methods")


def target(name: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Any]:
    """Register a target check; targets are reported in registration order."""

    def decorator(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        TARGETS.register(name, fn)
        return fn

    return decorator


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every registered target's verdict on ``results``, then the targets of the modes the bundle ran."""
    out = [{"name": n, **TARGETS.get(n)(results)} for n in TARGETS.ordered()]
    kinds = {r["kind"] for r in results["configs"]}
    for name in MODES.ordered():
        if name in kinds:
            out += [{"name": t, **check(results)} for t, check in MODES.get(name).targets().items()]
    return out


def _row(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in results["configs"] if r["name"] == name), None)


def _na(goal: str, why: str) -> dict[str, Any]:
    return {"status": "N/A", "value": None, "goal": goal, "detail": why}


def _verdict(ok: bool, value: float | None, goal: str, detail: str) -> dict[str, Any]:
    return {"status": "PASS" if ok else "MISS", "value": value, "goal": goal, "detail": detail}


@target("early_exit_speedup")
def _early_exit_speedup(results: dict[str, Any]) -> dict[str, Any]:
    goal = "early exit at the calibrated point: >= 1.8x lower mean batch-1 latency than the one-graph model, " \
           "accuracy drop <= 1.0 point"
    full, ee = _row(results, "full"), _row(results, "early_exit")
    if not full or not ee or not ee.get("speedup_vs_full"):
        return _na(goal, "no calibrated early-exit row or no full-model row")
    s, drop = ee["speedup_vs_full"], ee["accuracy_drop_pts"]
    ok = s >= 1.8 and drop <= 1.0
    why = [] if ok else [w for w, bad in (("speed-up below 1.8x", s < 1.8), ("accuracy drop above 1 point",
                                                                            drop > 1.0)) if bad]
    return _verdict(ok, s, goal, f"speed-up {s:.2f}x, accuracy drop {drop:.2f} points"
                    + (f" ({'; '.join(why)})" if why else ""))


@target("batched_throughput_32")
def _batched(results: dict[str, Any]) -> dict[str, Any]:
    goal = "batched early exit (shrinking batch) at batch 32: >= 1.5x the one-graph model's throughput at batch 32"
    ee = _row(results, "early_exit")
    entry = next((t for t in (ee or {}).get("throughput", []) if t["batch_size"] == 32), None)
    if not entry or entry.get("speedup_vs_full") is None:
        return _na(goal, "batch 32 was not measured (add 32 to --batch-sizes)")
    s = entry["speedup_vs_full"]
    return _verdict(s >= 1.5, s, goal, f"throughput ratio {s:.2f}x at batch 32")


@target("early_exit_speedup_variants")
def _variants(results: dict[str, Any]) -> dict[str, Any]:
    goal = "every other backend x precision: early exit >= 1.8x vs the same variant's one-graph model, " \
           "accuracy drop <= 1.0 point"
    rows = [r for r in results["configs"] if r["kind"] == "early_exit" and "@" in r["name"]]
    if not rows:
        return _na(goal, "the bundle holds no other backend x precision variant")
    parts, ok, worst = [], True, None
    for r in rows:
        s, drop = r["speedup_vs_full"], r["accuracy_drop_pts"]
        good = s is not None and drop is not None and s >= 1.8 and drop <= 1.0
        ok &= good
        worst = s if worst is None or (s is not None and s < worst) else worst
        parts.append(f"{r['name'].split('@', 1)[1]} {_fmt(s)}x / {_fmt(drop)} pts")
    return _verdict(ok, worst, goal, "; ".join(parts))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
