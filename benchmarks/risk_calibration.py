"""Does the accuracy budget hold on unseen data? Repeated random calibration/test splits on the shipped recipes.

For each bundle (converted from a shipped recipe with a ``calibrate`` section, or given with --bundle), the
calibration and test splits recorded in its manifest are pooled; then, ``--splits`` times, the pool is cut at random
into a calibration part of the recipe's size and a test part (the rest). Thresholds are chosen on the calibration
part twice, with the same search and budget (``calibrate.max_accuracy_drop``):

  * ``point``: the cheapest point whose drop on the calibration part is within the budget (``confidence: null``);
  * ``guarantee``: risk-controlled (``confidence``, default 0.9; Learn-then-Test over a Pareto front, see
    ``edge_runtime/calibration/risk.py``).

On the test part it reports the drop against the final exit (labels), the fraction of splits whose drop exceeds
the budget (target <= 1 - confidence for ``guarantee``), and the expected speed-up over the one-graph model from
the per-segment latencies measured at conversion (``calibration.latency``; FLOPs when absent); target: the
guarantee keeps >= 80% of the point estimate's speed-up.

Usage: PYTHONPATH=. python benchmarks/risk_calibration.py [--bundle DIR ...] [--recipes a,b] [--splits 50]
           [--confidence 0.9] [--bound binomial] [--selection-fraction 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("branchynet_lenet", "branchynet_resnet", "vit_linear", "lgvit_vit")


def _bundle(name: str, cache: Path) -> Path:
    out = cache / name
    if not (out / "manifest.json").is_file():
        from converters import convert

        print(f"converting {name} into {out} (once) ...", flush=True)
        convert(REPO / "converters/recipes" / f"{name}.yaml", out, progress=False)
    return out


def _pool(bundle: Path, remeasure: int) -> tuple[list[np.ndarray], np.ndarray, int, dict]:
    """Every exit's outputs on calibration + test (preprocessed as the device does), labels, the calibration size."""
    import edge_runtime
    from edge_runtime.datasets import build_split

    rt = edge_runtime.load_bundle(bundle, threads=1)
    m = rt.manifest
    if m.data is None or m.calibration is None:
        raise SystemExit(f"{bundle}: needs a bundle converted with 'data' and 'calibrate' sections")
    split = build_split(m.data)
    xc, yc = split.arrays("calibration")
    xt, yt = split.arrays("test")
    x = rt.preprocess(np.concatenate([xc, xt]))
    y = np.concatenate([yc, yt])
    parts = [rt.exit_outputs(x[i:i + 256]) for i in range(0, len(x), 256)]
    outs = [np.concatenate([p[k] for p in parts]) for k in range(rt.num_exits)]
    cal = m.calibration
    latency = cal.other.get("latency") or {}
    if remeasure:  # the conversion's figures can carry a load spike; re-measure interleaved (medians)
        from edge_runtime.calibration import measure_segment_latency

        seg, full = measure_segment_latency(rt, x[:64], repeats=remeasure)
        latency = {"segment_s": seg, "full_model_s": full, "source": f"re-measured here, {remeasure} repeats"}
    info = {"name": m.name, "policy": m.policy.name, "policy_kwargs": dict(m.policy.kwargs),
            "flops": [int(f or 0) for f in m.cumulative_flops], "full_flops": m.full_model_flops,
            "budget": float(cal.max_accuracy_drop if cal.max_accuracy_drop is not None else 1.0),
            "cost": cal.cost or "flops", "latency": latency}
    return outs, y, len(yc), info




def run_bundle(bundle: Path, args: argparse.Namespace) -> dict:
    from edge_runtime.calibration import calibrate, evaluate_point

    outs, y, n_cal, info = _pool(bundle, args.remeasure)
    lat = info["latency"]
    cost = dict(flops=info["flops"], latency=lat.get("segment_s"), full_latency=lat.get("full_model_s"),
                full_flops=info["full_flops"])
    budget = info["budget"] if args.budget is None else args.budget
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[dict]] = {"point": [], "guarantee": []}
    started = time.perf_counter()
    for s in range(args.splits):
        perm = rng.permutation(len(y))
        ci, ti = perm[:n_cal], perm[n_cal:]
        oc, ot = [o[ci] for o in outs], [o[ti] for o in outs]
        final_test = float((ot[-1].argmax(-1) == y[ti]).mean())
        for label, conf in (("point", None), ("guarantee", args.confidence)):
            cal = calibrate(oc, y[ci], info["policy"], info["policy_kwargs"], max_accuracy_drop=budget,
                            cost=info["cost"], confidence=conf, bound=args.bound, risk=args.risk,
                            selection_fraction=args.selection_fraction, seed=s, ramp_steps=args.ramp_steps, **cost)
            pt = evaluate_point(ot, y[ti], info["policy"], cal.policy_kwargs, cal.chosen.thresholds, **cost)
            drop = 100.0 * (final_test - pt.accuracy)
            g = cal.extra.get("guarantee") or {}
            rows[label].append({"split": s, "drop_pts": drop, "violated": drop > budget + 1e-9,
                                "speedup": pt.expected_speedup or 1.0 / pt.flops_fraction,
                                "flops_speedup": 1.0 / pt.flops_fraction,
                                "certified": g.get("certified"), "upper_bound_pts": 100.0 * g["upper_bound"]
                                if "upper_bound" in g else None})
        if args.progress:
            print(f"  {info['name']}: split {s + 1}/{args.splits} ({time.perf_counter() - started:.0f} s)",
                  end="\r", flush=True)
    summary = {}
    for label, rs in rows.items():
        drops = np.array([r["drop_pts"] for r in rs])
        speed = np.array([r["speedup"] for r in rs])
        fspeed = np.array([r["flops_speedup"] for r in rs])
        summary[label] = {"violation_rate": float(np.mean([r["violated"] for r in rs])),
                          "flops_speedup_mean": float(fspeed.mean()),
                          "drop_mean_pts": float(drops.mean()), "drop_p90_pts": float(np.percentile(drops, 90)),
                          "speedup_mean": float(speed.mean()), "speedup_median": float(np.median(speed)),
                          "certified_rate": float(np.mean([bool(r["certified"]) for r in rs]))
                          if label == "guarantee" else None}
    kept = summary["guarantee"]["speedup_mean"] / summary["point"]["speedup_mean"]
    kept_flops = summary["guarantee"]["flops_speedup_mean"] / summary["point"]["flops_speedup_mean"]
    ok = summary["guarantee"]["violation_rate"] <= 1.0 - args.confidence + 1e-12 and kept >= 0.8
    return {"bundle": str(bundle), "name": info["name"], "policy": info["policy"], "budget_pts": budget,
            "n_calibration": n_cal, "n_test": int(len(y) - n_cal), "speedup_from": "latency" if lat else "flops",
            "summary": summary, "speedup_kept": kept, "flops_speedup_kept": kept_flops, "pass": ok,
            "latency": lat, "splits": rows,
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", default=[], help="a converted bundle (repeatable)")
    ap.add_argument("--recipes", default=",".join(RECIPES),
                    help=f"shipped recipes to convert when no --bundle is given (default {','.join(RECIPES)})")
    ap.add_argument("--cache", default=str(REPO / "out" / "risk_bundles"), help="where converted bundles are kept")
    ap.add_argument("--splits", type=int, default=50, help="random calibration/test splits per bundle (default 50)")
    ap.add_argument("--confidence", type=float, default=0.9, help="guarantee confidence (default 0.9)")
    ap.add_argument("--bound", default="binomial", help="p-value: binomial | hoeffding_bentkus | wsr")
    ap.add_argument("--risk", default="label_drop", help="label_drop | disagreement")
    ap.add_argument("--selection-fraction", type=lambda v: None if v == "auto" else float(v), default=None,
                    help="share of the calibration part that finds the candidates (default auto: the test part gets "
                         "risk.holdout_size samples)")
    ap.add_argument("--ramp-steps", type=int, default=24, help="steps between neighbouring tested settings")
    ap.add_argument("--budget", type=float, default=None, help="accuracy budget in points (default: the bundle's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    ap.add_argument("--remeasure", type=int, default=300,
                    help="re-measure per-segment and one-graph latency here (repeats; 0 uses the manifest's)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no per-split progress line")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)
    bundles = [Path(b) for b in args.bundle] or [_bundle(r, Path(args.cache)) for r in args.recipes.split(",") if r]
    results = [run_bundle(b, args) for b in bundles]
    print(f"\n# risk_calibration: {args.splits} random calibration/test splits per bundle; guarantee: "
          f"confidence {args.confidence}, bound {args.bound}, risk {args.risk}, selection fraction "
          f"{args.selection_fraction or 'auto'}, ramp steps {args.ramp_steps}")
    print(f"{'bundle':<18} {'cal/test':>8} {'budget':>6} | {'point: viol':>11} {'drop':>5} {'speed-up':>8} "
          f"{'FLOPs':>6} | {'guarantee: viol':>15} {'drop':>5} {'speed-up':>8} {'FLOPs':>6} {'cert.':>5} | "
          f"{'kept':>5} {'FLOPs':>5}")
    for r in results:
        p, g = r["summary"]["point"], r["summary"]["guarantee"]
        print(f"{r['name']:<18} {r['n_calibration']:>3}/{r['n_test']:<4} {r['budget_pts']:>6.2f} | "
              f"{100 * p['violation_rate']:>10.0f}% {p['drop_mean_pts']:>5.2f} {p['speedup_mean']:>7.2f}x "
              f"{p['flops_speedup_mean']:>5.2f}x | {100 * g['violation_rate']:>14.0f}% {g['drop_mean_pts']:>5.2f} "
              f"{g['speedup_mean']:>7.2f}x {g['flops_speedup_mean']:>5.2f}x {100 * g['certified_rate']:>4.0f}% | "
              f"{100 * r['speedup_kept']:>4.0f}% {100 * r['flops_speedup_kept']:>4.0f}%  "
              f"{'PASS' if r['pass'] else 'MISS'}")
    print(f"(viol: share of splits whose test drop exceeds the budget, target <= {100 * (1 - args.confidence):.0f}% "
          "for the guarantee; drop: mean test drop in points; speed-up: mean expected batch-1 speed-up vs the "
          "one-graph model on the test part, from per-segment latency (" + ", ".join(sorted({
              str(r['latency'].get('source', 'manifest')) for r in results})) + "); FLOPs: mean FLOPs reduction; "
          "cert.: splits where a setting certified; kept: guarantee / point speed-up, target >= 80%)")
    if args.json:
        write_json_atomic(args.json, {"header": header(), "settings": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
