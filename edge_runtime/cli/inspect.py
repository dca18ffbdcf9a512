"""``edge-runtime inspect BUNDLE``: a readable table of segments, FLOPs, params, thresholds and verification."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge_runtime.bundle import read_bundle
from edge_runtime.calibration.risk import describe_guarantee
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import CalibrationRecord, Manifest
from edge_runtime.modes import MODES
from edge_runtime.policies import ScorePolicy, create_policy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a bundle's segments, costs, policy and verification",
                       description="Validate a bundle (schema and hashes) and print what it holds.")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def _fmt_int(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def format_bundle(m: Manifest) -> str:
    """The human-readable summary printed by ``inspect``."""
    inputs = ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in m.inputs)
    lines = [f"bundle {m.name!r} (format v{m.format_version}), input {inputs}, {len(m.labels)} classes"]
    pol = m.policy
    thr = list(pol.thresholds)
    shown = [_threshold(m, thr, i) for i in range(len(thr))]
    lines.append(f"policy: {pol.name} {pol.kwargs or ''} thresholds {shown if thr else '-'}")
    ver = m.verification.exit_diffs()
    total = m.full_model_flops or sum(s.flops for s in m.segments)
    lines.append("")
    header = (f"{'seg':>3}  {'head':<16} {'FLOPs':>9} {'params':>8} {'cum FLOPs':>9} {'% full':>6} "
              f"{'threshold':>9} {'max|diff|':>9}")
    extra_cols = m.exits[0].test_accuracy is not None
    if extra_cols:
        header += f" {'test acc':>8}"
    lines.append(header)
    for seg, ex in zip(m.segments, m.exits):
        i = seg.index
        t = shown[i] if i < len(thr) else "final"
        cum = ex.cumulative_flops or 0
        row = (f"{i:>3}  {ex.head_type:<16} {_fmt_int(seg.flops):>9} {_fmt_int(seg.params):>8} "
               f"{_fmt_int(cum):>9} {100 * cum / max(total, 1):>5.1f}% {t:>9} {ver.get(i, float('nan')):>9.2e}")
        if extra_cols:
            row += f" {100 * (ex.test_accuracy if ex.test_accuracy is not None else float('nan')):>7.2f}%"
        lines.append(row)
    v = m.verification
    lines.append("")
    lines.append(f"verification: {'passed' if v.passed else 'FAILED'} at tolerance {v.tolerance:g}, "
                 f"batch sizes {list(v.batch_sizes)}"
                 + (f"; one-graph full model max|diff| {v.full_model_max_abs_diff:.2e}"
                    if v.full_model_max_abs_diff is not None else ""))
    if m.full_model is not None:
        lines.append(f"full model (one graph): {_fmt_int(m.full_model.flops)} FLOPs, "
                     f"{_fmt_int(m.full_model.params)} params")
    lines.extend(_variant_lines(m))
    if m.calibration is not None and m.calibration.chosen is not None:
        lines.extend(_calibration_lines(m.calibration))
    modes = [MODES.get(name) for name in MODES.ordered()]
    supported = [mode for mode in modes if mode.unsupported(m) is None]
    lines.append("")
    lines.append("modes: " + ", ".join(mode.name for mode in supported))
    for mode in supported:
        lines.extend(mode.describe(m))
    lines.append("")
    lines.extend(recommendation_lines(m))
    return "\n".join(lines)


def recommendation_lines(m: Manifest) -> list[str]:
    """The bundle's recommended configuration (its ``deployment`` record) and what it was compared with."""
    dep = m.deployment
    if dep is None:
        return ["recommended: early_exit at the calibrated point (no comparison recorded: convert with a "
                "'calibrate' section, or run `edge-runtime bench` to compare every configuration)"]
    thr = "" if dep.thresholds is None else f", thresholds {[f'{t:.4g}' for t in dep.thresholds]}"
    lines = [f"recommended: {dep.mode} on {dep.variant}{thr} -- {dep.why}"]
    cands = dep.other.get("candidates") or []
    if cands:
        lines.append(f"  compared ({dep.other.get('split', 'calibration')} split, budget "
                     f"{dep.other.get('budget_pts', '?')} point(s) vs {dep.other.get('reference', 'full@onnx/fp32')}):")
        for c in sorted(cands, key=lambda c: (c.get("latency_s") is None, c.get("latency_s") or 0.0)):
            lat = "n/a" if c.get("latency_s") is None else f"{1e3 * c['latency_s']:.3f} ms"
            lines.append(f"    {c['name']:<28} accuracy {_pct(c.get('accuracy'))}  batch-1 latency {lat}"
                         + ("" if c.get("eligible") else f"  (not eligible: {c.get('note')})"))
    return lines


def _threshold(m: Manifest, thr: list[float], i: int, variant: str | None = None) -> str:
    """A threshold as printed: ``off`` when no output can pass it (calibration switched that exit off)."""
    try:
        policy = create_policy(m.policy.name, m.num_exits, thr, **m.policy.kwargs)
    except EdgeRuntimeError:
        policy = None
    if isinstance(policy, ScorePolicy) and policy.exit_disabled(i):
        return "off"
    return f"{thr[i]:.4g}"


def _variant_lines(m: Manifest) -> list[str]:
    """Every file variant the bundle holds: files, verification against PyTorch, its own thresholds."""
    checks: dict[tuple[str, str], dict[str, Any]] = {
        ("onnx", "fp32"): {"exits": list(m.verification.exits), "tolerance": m.verification.tolerance,
                           "passed": m.verification.passed}}
    checks.update({(str(v.get("format")), str(v.get("precision"))): dict(v) for v in m.verification.variants})
    lines = ["", "variants (run one with --backend/--precision; estimate takes the same options):"]
    for fmt, precision in m.held_variants():
        key = f"{fmt}/{precision}"
        files = [f for s in m.segments for f in s.files if f.format == fmt and f.precision == precision]
        sizes = sorted({"dynamic" if f.batch_size is None else str(f.batch_size) for f in files})
        size = sum(f.bytes or 0 for f in files)
        rec = checks.get((fmt, precision)) or {}
        diffs = [float(e["max_abs_diff"]) for e in rec.get("exits", []) if e.get("max_abs_diff") is not None]
        tol = rec.get("tolerance")
        verdict = ("not verified" if not diffs else f"max|diff| {max(diffs):.2e}"
                   + (f" (relative {rec['max_rel_diff']:.2e})" if rec.get("max_rel_diff") is not None else "")
                   + (f", agreement {100 * rec['agreement']:.2f}%" if rec.get("agreement") is not None else "")
                   + (f" <= {tol:g} passed" if rec.get("passed") else f" tolerance {tol:g} FAILED" if tol is not None
                      and rec.get("passed") is False else " (not bounded)"))
        own = m.policy.variants.get(key) or {}
        thr = own.get("thresholds") or list(m.policy.thresholds)
        shown = [_threshold(m, list(thr), i) for i in range(len(thr))]
        acc = f", accuracy at its point {_pct(own['accuracy'])}" if own.get("accuracy") is not None else ""
        lines.append(f"  {key:<20} {len(files)} file(s), batch {'/'.join(sizes)}, {size / 1e6:.2f} MB; {verdict}; "
                     f"thresholds {shown if thr else '-'}{' (own)' if own.get('thresholds') else ''}{acc}")
    return lines


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _speed(p: dict) -> str:
    return f", expected speed-up {p['expected_speedup']:.2f}x" if "expected_speedup" in p else ""


def _calibration_lines(cal: CalibrationRecord) -> list[str]:
    """The chosen operating point, its test-split accuracy, and the oracle bound."""
    chosen = cal.chosen
    assert chosen is not None
    lines = [f"calibrated operating point ({cal.other.get('split', 'calibration')} split, budget "
             f"{cal.max_accuracy_drop if cal.max_accuracy_drop is not None else '?'} point(s) below the final exit's "
             f"{_pct(cal.final_exit_accuracy)}): accuracy {_pct(chosen.accuracy)}, "
             f"mean FLOPs {_pct(chosen.flops_fraction)} of the full model's"
             + _speed(chosen.to_dict())
             + (f" (latency {1e3 * chosen.mean_latency_s:.3f} ms predicted from measured segment latency)"
                if chosen.mean_latency_s is not None else "")]
    if chosen.exit_fractions:
        lines.append("  leaves at exit: "
                     + " ".join(f"{i}:{100 * f:.1f}%" for i, f in enumerate(chosen.exit_fractions)))
    lines.append(describe_guarantee(cal.other))
    test = cal.test
    if test.get("chosen"):
        t = test["chosen"]
        lines.append(f"test split: accuracy at the chosen point {_pct(t.get('accuracy'))} (final exit "
                     f"{_pct(test.get('final_exit_accuracy'))}), mean FLOPs {_pct(t.get('flops_fraction'))}"
                     + _speed(t))
    orc = test.get("oracle") or cal.other.get("oracle")
    if orc:
        lines.append(f"oracle (earliest correct exit, {'test' if test.get('oracle') else 'calibration'} split): "
                     f"accuracy {_pct(orc.get('accuracy'))}, mean FLOPs {_pct(orc.get('flops_fraction'))}"
                     + _speed(orc))
    return lines


def run(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle)
    if args.json:
        print(json.dumps(bundle.manifest.to_dict(), indent=2))
    else:
        print(format_bundle(bundle.manifest))
    return 0
