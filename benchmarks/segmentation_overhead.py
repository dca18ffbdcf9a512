"""Segmentation overhead and "early exit pays": a >= 1 ms CNN split into >= 4 segments vs one ONNX graph.

Prints, from one interleaved run at batch 1:
  * segmented model with policy ``never`` vs the same model as one onnxruntime session (target <= 1.10x);
  * time per sample by exit index against the executed fraction of FLOPs.

Usage: python benchmarks/segmentation_overhead.py [--threads 1] [--repeats 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402


def build_bundle(out: Path) -> Path:
    import torch

    from converters import create_model, export_bundle

    torch.manual_seed(0)
    model = create_model("tiny_cnn", image_size=32, widths=[48, 48, 96, 96, 128, 128, 192, 192],
                         exits_after=[1, 3, 5], head="pool_linear")
    return export_bundle(model, torch.randn(1, 1, 32, 32), out, name="overhead_cnn", policy="entropy",
                         thresholds=1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=2000, help="timed calls per configuration")
    ap.add_argument("--warmup", type=int, default=200, help="untimed calls per configuration first")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)

    import edge_runtime

    with tempfile.TemporaryDirectory() as tmp:
        path = build_bundle(Path(tmp) / "bundle")
        rt = edge_runtime.load_bundle(path, threads=args.threads)
        m = rt.manifest
        x = np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32)
        feeds = rt.feeds(x)  # checked once: "segmented_never" times the executor alone
        never = edge_runtime.create_policy("never", rt.num_exits)
        times = interleaved(
            {
                "one_graph": lambda: rt.infer(x, mode="full"),
                "segmented_never": lambda: rt.decide(feeds, never),
                "segmented_never_infer": lambda: rt.infer(x, policy=never),
            },
            warmup=args.warmup, repeats=args.repeats,
        )
        stats = {k: latency_stats(v, scale=1e3) for k, v in times.items()}   # ms
        ratio = stats["segmented_never"]["p50"] / stats["one_graph"]["p50"]
        ratio_infer = stats["segmented_never_infer"]["p50"] / stats["one_graph"]["p50"]

        # early exit pays: force each sample out at exit k with a policy that leaves exactly there
        per_exit = []
        total_flops = m.full_model_flops or 1
        for k in range(rt.num_exits):
            thr = [1e9 if i == k else -1.0 for i in range(rt.num_exits - 1)]  # entropy < 1e9 at k only
            pol = edge_runtime.create_policy("entropy", rt.num_exits, thr)
            t = interleaved({"k": lambda pol=pol: rt.decide(feeds, pol)}, warmup=args.warmup // 4,
                            repeats=args.repeats // 4)["k"]
            assert rt.decide(feeds, pol).exit_index[0] == k
            per_exit.append({"exit": k, "p50_ms": latency_stats(t, scale=1e3)["p50"],
                             "flops_fraction": (m.exits[k].cumulative_flops or 0) / total_flops})

    hdr = header()
    print(f"machine: {hdr['machine']}")
    print(f"model: {len(m.segments)} segments, full model {total_flops / 1e6:.1f} MFLOPs, "
          f"threads={args.threads}, batch 1, {args.repeats} interleaved calls each")
    print(f"{'configuration':<24} {'p50 ms':>8} {'mean ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for k, s in stats.items():
        print(f"{k:<24} {s['p50']:>8.3f} {s['mean']:>8.3f} {s['p95']:>8.3f} {s['p99']:>8.3f}")
    verdict = "PASS" if ratio <= 1.10 else "MISS"
    print(f"segmentation overhead (executor, p50): {ratio:.3f}x the one-graph model (target <= 1.10x: {verdict})")
    print(f"segmentation overhead (infer() incl. input checks, p50): {ratio_infer:.3f}x")
    print(f"{'exit':>4} {'p50 ms':>8} {'x one-graph':>11} {'FLOPs frac':>10}")
    base = stats["one_graph"]["p50"]
    for r in per_exit:
        print(f"{r['exit']:>4} {r['p50_ms']:>8.3f} {r['p50_ms'] / base:>11.3f} {r['flops_fraction']:>10.3f}")
    if args.json:
        write_json_atomic(args.json, {"header": hdr, "latency_ms": stats, "overhead_ratio_p50": ratio,
                                      "overhead_ratio_infer_p50": ratio_infer, "per_exit": per_exit})
    return 0


if __name__ == "__main__":
    sys.exit(main())
