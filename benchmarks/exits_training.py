"""Issue 7's table: trained exits + calibrated thresholds, on the TEST split of each recipe's data, one run.

Per recipe (converted here, timed, unless ``--bundle NAME=DIR`` gives a bundle):
  * final-exit accuracy and the calibrated policy's accuracy (``Runtime.infer``, the device code path);
  * mean executed FLOPs of the calibrated policy as a % of the one-graph full model's FLOPs;
  * measured onnxruntime batch-1 speed-up: every test sample, one at a time, through
    ``infer`` (early exit) and ``infer(mode="full")`` (the one-graph model), interleaved per repeat;
  * the oracle (earliest correct exit) at the same test accuracy, its speed-up predicted from the
    latencies measured in this run (answering at exit k costs the measured exit-0 call plus the
    median latency of segments 1..k), and achieved / oracle (like for like: both predicted;
    the measured ratio is printed too);
  * the per-call overhead that bounds small models: (all segments, nobody leaving) minus (one graph),
    per extra segment call; and the exit-0 bound (one-graph time / time of segment 0 plus its decision);
  * convert wall time and CPU time (the issue's budget: <= 5 min on 2 cores).

Usage:
  python benchmarks/exits_training.py [--recipes branchynet_lenet branchynet_resnet [lgvit_vit vit_linear]]
      [--bundle NAME=DIR ...] [--out out/exits_training] [--threads 1] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = ["branchynet_lenet", "branchynet_resnet", "lgvit_vit", "vit_linear"]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def convert_timed(recipe: str, out: Path) -> tuple[Path, float, float]:
    from converters import convert

    t0, c0 = time.perf_counter(), _cpu_s()
    path = convert(REPO / "converters" / "recipes" / f"{recipe}.yaml", out / recipe, overwrite=True, progress=False)
    return Path(path), time.perf_counter() - t0, _cpu_s() - c0


def _extreme(rt, leave: bool) -> list[float]:
    """Thresholds of the bundle's score policy that make every sample leave at exit 0 (or none leave)."""
    big = 1e30 if rt.default_policy.lower_is_confident == leave else -1e30
    return [big] * (rt.num_exits - 1)


def measure(path: Path, threads: int, repeats: int) -> dict:
    import edge_runtime
    from edge_runtime.calibration import evaluate_point, oracle
    from edge_runtime.datasets import load_split

    rt = edge_runtime.load_bundle(path, threads=threads)
    m = rt.manifest
    x_raw, y = load_split(path, "test")                     # rebuilt and checked against the manifest's sha256
    x = rt.preprocess(x_raw)
    flops = np.array(m.cumulative_flops, dtype=np.float64)
    full_flops = float(m.full_model_flops or flops[-1])
    res = rt.infer(x, mode="early_exit")                     # calibrated policy, whole test split
    outs = rt.exit_outputs(x)
    final_acc = float((outs[-1].argmax(-1) == y).mean())
    acc = float((res.predictions == y).mean())
    mean_flops = float(flops[res.exit_index].mean())
    samples = [x[i:i + 1] for i in range(len(x))]
    never = rt.make_policy(thresholds=_extreme(rt, leave=False))     # built once: no per-call policy cost
    always = rt.make_policy(thresholds=_extreme(rt, leave=True))
    fns = {
        "early_exit": lambda: [rt.infer(s, mode="early_exit") for s in samples],
        "full": lambda: [rt.infer(s, mode="full") for s in samples],
        "all_segments": lambda: [rt.infer(s, policy=never) for s in samples],
        "exit0_only": lambda: [rt.infer(s, policy=always) for s in samples],
    }
    t = {k: float(np.median(v)) / len(samples) for k, v in interleaved(fns, warmup=1, repeats=repeats).items()}
    seg = np.median(np.stack([rt.infer(s, policy=never).segment_latency_s for s in samples]), axis=0)
    # cost of answering at exit k: the measured end-to-end exit-0 call, plus segments 1..k
    step = np.concatenate([[t["exit0_only"]], seg[1:]])
    pol = m.policy
    cost = (flops, step, t["full"], full_flops)
    predicted = evaluate_point(outs, y, pol.name, pol.kwargs, list(pol.thresholds), *cost)
    orc = oracle(outs, y, *cost, accuracy=acc)
    orc_max = oracle(outs, y, *cost)
    n_seg = len(rt.segments)
    return {
        "bundle": str(path), "test_samples": int(len(y)),
        "exit_test_accuracy": [float((o.argmax(-1) == y).mean()) for o in outs],
        "final_accuracy": final_acc, "calibrated_accuracy": acc, "drop_points": 100 * (final_acc - acc),
        "exit_fractions": (np.bincount(res.exit_index, minlength=rt.num_exits) / len(y)).tolist(),
        "mean_flops_pct": 100 * mean_flops / full_flops,
        "latency_ms": {k: 1e3 * v for k, v in t.items()}, "segment_latency_ms": (1e3 * seg).tolist(),
        "measured_speedup": t["full"] / t["early_exit"],
        "predicted_speedup": predicted.expected_speedup,
        "oracle_same_accuracy": orc, "oracle_max": orc_max,
        "achieved_over_oracle": predicted.expected_speedup / orc["expected_speedup"],
        "measured_over_oracle": (t["full"] / t["early_exit"]) / orc["expected_speedup"],
        "per_call_overhead_ms": 1e3 * (t["all_segments"] - t["full"]) / max(1, n_seg - 1),
        "exit0_bound": t["full"] / t["exit0_only"],
        "calibration": {k: (m.calibration.to_dict() if m.calibration else {}).get(k)
                        for k in ("chosen", "final_exit_accuracy", "curve")},
    }


def _table(rows: dict) -> str:
    head = ("| recipe | final acc | calibrated acc | drop | mean FLOPs | measured speed-up | predicted | "
            "oracle@same acc | achieved/oracle | full model | per-call overhead | exit-0 bound | convert wall (cpu) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows.items():
        conv = r.get("convert_s")
        conv_s = f"{conv:.0f} s ({r['convert_cpu_s']:.0f} s)" if conv is not None else "given"
        lines.append(
            f"| {name} | {100 * r['final_accuracy']:.2f}% | {100 * r['calibrated_accuracy']:.2f}% | "
            f"{r['drop_points']:.2f} pt | {r['mean_flops_pct']:.1f}% | {r['measured_speedup']:.2f}x | "
            f"{r['predicted_speedup']:.2f}x | {r['oracle_same_accuracy']['expected_speedup']:.2f}x | "
            f"{100 * r['achieved_over_oracle']:.0f}% (measured {100 * r['measured_over_oracle']:.0f}%) | "
            f"{r['latency_ms']['full']:.3f} ms | {r['per_call_overhead_ms']:.3f} ms | {r['exit0_bound']:.2f}x | "
            f"{conv_s} |")
    return "\n".join(lines)


def _curve_lines(name: str, r: dict) -> list[str]:
    curve = r["calibration"].get("curve") or []
    picks = []
    for budget in (10, 25, 50, 75, 100):
        ok = [p for p in curve if 100 * p["flops_fraction"] <= budget]
        if ok:
            picks.append(f"<={budget}% FLOPs: {100 * max(p['accuracy'] for p in ok):.2f}%")
    return [f"  {name} calibration-split front (best accuracy within a FLOPs budget): " + ", ".join(picks)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=None,
                    help="shipped recipes to convert and measure (default: the BranchyNet ones, plus the ViT "
                         "ones when their recipe files exist)")
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR",
                    help="measure an existing bundle instead of converting recipe NAME")
    ap.add_argument("--out", default="out/exits_training", help="where converted bundles go")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads (batch-1 latency)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds over the test split")
    ap.add_argument("--json", default=None, help="write raw results here")
    args = ap.parse_args(argv)
    given = dict(b.split("=", 1) for b in args.bundle)
    recipes = args.recipes or [r for r in DEFAULT_RECIPES
                               if (REPO / "converters" / "recipes" / f"{r}.yaml").is_file()]
    for name in given:
        if name not in recipes:
            recipes.append(name)
    rows: dict[str, dict] = {}
    for name in recipes:
        if name in given:
            path, wall, cpu = Path(given[name]), None, None
        else:
            path, wall, cpu = convert_timed(name, Path(args.out))
            print(f"converted {name}: {wall:.0f} s wall, {cpu:.0f} s CPU -> {path}", flush=True)
        rows[name] = {**measure(path, args.threads, args.repeats), "convert_s": wall, "convert_cpu_s": cpu}
    hdr = header()
    print(f"\nissue 7: trained exits, calibrated thresholds (test split, batch 1, onnxruntime {args.threads} thread, "
          f"{hdr['machine']['logical_cpus']} CPUs, {hdr['created']})\n")
    print(_table(rows))
    print("\nexits leave (test): " + "; ".join(
        f"{n}: " + " ".join(f"{100 * f:.1f}%" for f in r["exit_fractions"]) for n, r in rows.items()))
    print("per-exit test accuracy: " + "; ".join(
        f"{n}: " + " ".join(f"{100 * a:.2f}%" for a in r["exit_test_accuracy"]) for n, r in rows.items()))
    for name, r in rows.items():
        lat = r["latency_ms"]
        print(f"  {name} batch-1 bound: one graph {lat['full']:.3f} ms; everyone leaving at exit 0 costs "
              f"{lat['exit0_only']:.3f} ms per call (segment 0 + decision + call overhead) -> at most "
              f"{r['exit0_bound']:.2f}x; each further segment call adds {r['per_call_overhead_ms']:.3f} ms of "
              f"overhead beyond its compute")
        for line in _curve_lines(name, r):
            print(line)
    if args.json:
        write_json_atomic(args.json, {"header": hdr, "threads": args.threads, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
