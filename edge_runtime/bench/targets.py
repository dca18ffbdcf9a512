"""The report's targets: each a registered check over results.json that says PASS, MISS or N/A, and why."""

from __future__ import annotations

from typing import Any, Callable

from edge_runtime.registry import Registry

#: name -> ``check(results) -> target dict`` (``status`` PASS / MISS / N/A, ``value``, ``goal``, ``detail``)
TARGETS: Registry[Callable[[dict[str, Any]], dict[str, Any]]] = Registry("benchmark target", plugins="edge_runtime.methods")
_ORDER: list[str] = []


def target(name: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Any]:
    """Register a target check; targets are reported in registration order."""

    def decorator(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        TARGETS.register(name, fn)
        _ORDER.append(name)
        return fn

    return decorator


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every registered target's verdict on ``results``."""
    return [{"name": n, **TARGETS.get(n)(results)} for n in _ORDER]


def _row(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in results["configs"] if r["name"] == name), None)


def _na(goal: str, why: str) -> dict[str, Any]:
    return {"status": "N/A", "value": None, "goal": goal, "detail": why}


def _verdict(ok: bool, value: float, goal: str, detail: str) -> dict[str, Any]:
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


@target("cbnet_accuracy")
def _cbnet_accuracy(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet accuracy within 1.0 point of the full model"
    cb = _row(results, "cbnet")
    if not cb:
        return _na(goal, "the bundle has no CBNet parts")
    drop = cb["accuracy_drop_pts"]
    return _verdict(drop <= 1.0, drop, goal, f"accuracy drop {drop:.2f} points")


@target("cbnet_speedup")
def _cbnet_speedup(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet mean batch-1 latency >= 3x lower than the full model's"
    cb = _row(results, "cbnet")
    if not cb or not cb.get("speedup_vs_full"):
        return _na(goal, "the bundle has no CBNet parts")
    s = cb["speedup_vs_full"]
    return _verdict(s >= 3.0, s, goal, f"speed-up {s:.2f}x")


@target("cbnet_vs_branchynet")
def _cbnet_vs_ee(results: dict[str, Any]) -> dict[str, Any]:
    goal = "CBNet mean batch-1 latency lower than BranchyNet early exit's at its calibrated point"
    cb, ee = _row(results, "cbnet"), _row(results, "early_exit")
    if not cb or not ee or not cb.get("latency_ms") or not ee.get("latency_ms"):
        return _na(goal, "the bundle has no CBNet parts")
    ratio = ee["latency_ms"]["mean"] / cb["latency_ms"]["mean"]
    return _verdict(ratio > 1.0, ratio, goal, f"early exit / CBNet mean latency = {ratio:.2f}x")


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
