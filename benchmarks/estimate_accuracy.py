"""CostEstimate honesty: calibrate a profile on this machine, then predict every segment's latency of the
shipped bundles on this machine and compare with the measured latency.

Steps (one run): ``edge-runtime profile calibrate`` into a temp profile; convert each recipe in
``converters/recipes/`` (or take ``--bundle`` directories); run each bundle at batch 1 with an
entropy policy that never exits early (every segment runs, the exit decision is paid as on a device)
and take the median of each segment's latency; predict with :func:`edge_runtime.estimate.estimate_bundle`.
Target (issue 3): median absolute error <= 30 % over all segments.

Usage: python benchmarks/estimate_accuracy.py [--threads 1] [--calls 1000] [--recipes a.yaml ...]
       [--bundle DIR ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def measure_segments(path: Path, threads: int, calls: int) -> tuple[np.ndarray, str]:
    """Median per-segment latency (s) at batch 1 with every segment running, and the bundle's name."""
    import edge_runtime

    rt = edge_runtime.load_bundle(path, threads=threads)
    shape = [1] + [d or 1 for d in rt.input_spec.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    policy = edge_runtime.create_policy("entropy", rt.num_exits, -1.0)  # entropy is never < -1: no early exit
    for _ in range(max(20, calls // 10)):
        rt.infer(x, policy=policy)
    lat = np.array([rt.infer(x, policy=policy).segment_latency_s for _ in range(calls)])
    return np.median(lat, axis=0), rt.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="backend threads for calibration and measurement")
    ap.add_argument("--calls", type=int, default=1000, help="measured calls per bundle")
    ap.add_argument("--recipes", nargs="*", help="recipes to convert (default: every converters/recipes/*.yaml)")
    ap.add_argument("--bundle", nargs="*", default=[], help="already-built bundle directories to include")
    ap.add_argument("--seconds-per-graph", type=float, default=0.15, help="calibration budget per micro-graph")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)

    from edge_runtime.estimate import estimate_bundle
    from edge_runtime.profile_fit import FitSettings, fit_profile
    from edge_runtime.profiles import load_profile

    recipes = [Path(r) for r in args.recipes] if args.recipes is not None else sorted(
        (REPO / "converters" / "recipes").glob("*.yaml"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prof_path = fit_profile(tmp / "this_machine.yaml", settings=FitSettings(
            threads=args.threads, seconds_per_graph=args.seconds_per_graph),
            progress=lambda m: print(f"calibrating: {m}", flush=True))
        profile = load_profile(prof_path)
        bundles = [Path(b) for b in args.bundle]
        if recipes:
            from converters import convert

            for r in recipes:
                print(f"converting {r.name} ...", flush=True)
                bundles.append(convert(r, tmp / r.stem, progress=False))
        for path in bundles:
            measured, name = measure_segments(path, args.threads, args.calls)
            pred = estimate_bundle(path, profile)
            for seg, m in zip(pred.segments, measured):
                err = (seg.latency_s - m) / m
                rows.append({"bundle": name, "segment": seg.index, "mflops": seg.flops / 1e6,
                             "nodes": sum(seg.nodes_by_kind.values()), "predicted_ms": seg.latency_s * 1e3,
                             "measured_ms": float(m) * 1e3, "error": err})
        lat = profile.latency
        assert lat is not None
        fitted = {"call_overhead_us": lat.call_overhead_s * 1e6, "conv_gflops": lat.gflops["conv"],
                  "matmul_gflops": lat.gflops["matmul"], "other_op_us": lat.op_s.get("other", 0.0) * 1e6,
                  "first_us": (lat.first_s or 0.0) * 1e6, "decision_us": lat.decision_s * 1e6,
                  "final_us": lat.final_s * 1e6}

    errors = np.abs([r["error"] for r in rows])
    med = float(np.median(errors))
    hdr = header()
    print(f"machine: {hdr['machine']}")
    print("calibrated here: " + ", ".join(f"{k} {v:.3g}" for k, v in fitted.items()))
    print(f"batch 1, threads={args.threads}, median of {args.calls} calls per bundle, every segment running")
    print(f"{'bundle':<20} {'seg':>3} {'MFLOPs':>8} {'nodes':>5} {'predicted ms':>12} {'measured ms':>11} {'error':>7}")
    for r in rows:
        print(f"{r['bundle']:<20} {r['segment']:>3} {r['mflops']:>8.3f} {r['nodes']:>5} {r['predicted_ms']:>12.4f} "
              f"{r['measured_ms']:>11.4f} {100 * r['error']:>+6.1f}%")
    verdict = "PASS" if med <= 0.30 else "MISS"
    print(f"median absolute error over {len(rows)} segments: {100 * med:.1f}% (target <= 30%: {verdict}); "
          f"max {100 * errors.max():.1f}%")
    if args.json:
        write_json_atomic(args.json, {"header": hdr, "profile": fitted, "rows": rows, "median_abs_error": med})
    return 0


if __name__ == "__main__":
    sys.exit(main())
