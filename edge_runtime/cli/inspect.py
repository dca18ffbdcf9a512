"""``edge-runtime inspect BUNDLE``: a readable table of segments, FLOPs, params, thresholds and verification."""

from __future__ import annotations

import argparse
import json

from edge_runtime.bundle import read_bundle


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


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"


def format_bundle(manifest: dict) -> str:
    """The human-readable summary printed by ``inspect``."""
    m = manifest
    lines = [f"bundle {m['name']!r} (format v{m['format_version']}), input {m['input']['name']} "
             f"{m['input']['shape']} {m['input']['dtype']}, {len(m['labels'])} classes"]
    pol = m["policy"]
    thr = pol["thresholds"]
    lines.append(f"policy: {pol['name']} {pol['kwargs'] or ''} thresholds {['%.4g' % t for t in thr] if thr else '-'}")
    ver = {e["index"]: e["max_abs_diff"] for e in m["verification"]["exits"]}
    full = m.get("full_model")
    total = full["flops"] if full else sum(s["flops"] for s in m["segments"])
    lines.append("")
    header = f"{'seg':>3}  {'head':<16} {'FLOPs':>9} {'params':>8} {'cum FLOPs':>9} {'% full':>6} {'threshold':>9} {'max|diff|':>9}"
    extra_cols = "test_accuracy" in m["exits"][0]
    if extra_cols:
        header += f" {'test acc':>8}"
    lines.append(header)
    for seg, ex in zip(m["segments"], m["exits"]):
        i = seg["index"]
        t = f"{thr[i]:.4g}" if i < len(thr) else "final"
        cum = ex.get("cumulative_flops", 0)
        row = (f"{i:>3}  {ex['head_type']:<16} {_fmt_int(seg['flops']):>9} {_fmt_int(seg['params']):>8} "
               f"{_fmt_int(cum):>9} {100 * cum / max(total, 1):>5.1f}% {t:>9} {ver.get(i, float('nan')):>9.2e}")
        if extra_cols:
            row += f" {100 * ex.get('test_accuracy', float('nan')):>7.2f}%"
        lines.append(row)
    v = m["verification"]
    lines.append("")
    lines.append(f"verification: {'passed' if v['passed'] else 'FAILED'} at tolerance {v['tolerance']:g}, "
                 f"batch sizes {v['batch_sizes']}"
                 + (f"; one-graph full model max|diff| {v['full_model_max_abs_diff']:.2e}"
                    if "full_model_max_abs_diff" in v else ""))
    if full:
        lines.append(f"full model (one graph): {_fmt_int(full['flops'])} FLOPs, {_fmt_int(full['params'])} params")
    cal = m.get("calibration", {})
    chosen = cal.get("chosen")
    if chosen:
        lines.extend(_calibration_lines(cal, chosen))
    if "cbnet" in m:
        cb = m["cbnet"]
        parts = ", ".join(f"{k} {_fmt_int(v['flops'])} FLOPs" for k, v in sorted(cb.get("parts", {}).items()))
        lines.append(f"cbnet (mode 'cbnet'): {parts}")
        cost, train = cb.get("cost", {}), cb.get("training", {})
        if cost:
            lines.append(f"  autoencoder + classifier {_fmt_int(cost['cbnet_flops'])} FLOPs vs full "
                         f"{_fmt_int(cost['full_model_flops'])} ({_times(cost['flops_ratio_full_vs_cbnet'])}); "
                         f"autoencoder {'cheaper' if cost['cheaper_than_saved'] else 'NOT cheaper'} than the "
                         f"{_fmt_int(cost['saved_flops'])} FLOPs it saves")
        accs = {k: v for k, v in train.items() if k.endswith("_accuracy") and isinstance(v, float)}
        if accs:
            lines.append(f"  {train.get('evaluated_on', '')} accuracy: " + ", ".join(
                f"{k.removesuffix('_accuracy')} {100 * v:.2f}%" for k, v in accs.items()))
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _speed(p: dict) -> str:
    return f", expected speed-up {p['expected_speedup']:.2f}x" if "expected_speedup" in p else ""


def _calibration_lines(cal: dict, chosen: dict) -> list[str]:
    """The chosen operating point, its test-split accuracy, and the oracle bound."""
    lines = [f"calibrated operating point ({cal.get('split', 'calibration')} split, budget "
             f"{cal.get('max_accuracy_drop', '?')} point(s) below the final exit's "
             f"{_pct(cal.get('final_exit_accuracy'))}): accuracy {_pct(chosen.get('accuracy'))}, "
             f"mean FLOPs {_pct(chosen.get('flops_fraction'))} of the full model's"
             + _speed(chosen)
             + (f" (latency {1e3 * chosen['mean_latency_s']:.3f} ms predicted from measured segment latency)"
                if "mean_latency_s" in chosen else "")]
    if "exit_fractions" in chosen:
        lines.append("  leaves at exit: " + " ".join(f"{i}:{100 * f:.1f}%" for i, f in enumerate(chosen["exit_fractions"])))
    test = cal.get("test", {})
    if test.get("chosen"):
        t = test["chosen"]
        lines.append(f"test split: accuracy at the chosen point {_pct(t.get('accuracy'))} (final exit "
                     f"{_pct(test.get('final_exit_accuracy'))}), mean FLOPs {_pct(t.get('flops_fraction'))}" + _speed(t))
    orc = test.get("oracle") or cal.get("oracle")
    if orc:
        lines.append(f"oracle (earliest correct exit, {'test' if test.get('oracle') else 'calibration'} split): "
                     f"accuracy {_pct(orc.get('accuracy'))}, mean FLOPs {_pct(orc.get('flops_fraction'))}" + _speed(orc))
    return lines


def run(args: argparse.Namespace) -> int:
    bundle = read_bundle(args.bundle)
    if args.json:
        print(json.dumps(bundle.manifest, indent=2))
    else:
        print(format_bundle(bundle.manifest))
    return 0
