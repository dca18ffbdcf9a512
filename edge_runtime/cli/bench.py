"""``edge-runtime bench BUNDLE --data SPEC --report OUT/``: the benchmark report; ``--compare A.json B.json``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark a bundle against its one-graph model and write a report",
        description="Measure, interleaved in one run: the full model as one ONNX graph, the segmented model "
                    "(policy never), early exit at the calibrated point and along a threshold sweep, a method's own "
                    "mode where present, the oracle bound (estimated), and every backend x precision the bundle holds. "
                    "Writes report.md, report.html, PNG plots, results.json and results.csv.")
    p.add_argument("bundle", nargs="?", help="bundle directory (not needed with --compare or --render)")
    p.add_argument("--data", help="NAME:SPLIT of a registered dataset (e.g. digits:test) or a .npz with x and y")
    p.add_argument("--report", metavar="OUT", help="directory to write the report into")
    p.add_argument("--profile", help="device profile (power model for the energy estimator, defaults)")
    p.add_argument("--meter", help="energy meter name (default: auto-select; 'none' to turn energy off)")
    p.add_argument("--backend", help="primary inference backend (default onnxruntime)")
    p.add_argument("--threads", type=int, help="backend threads (default: the profile's / backend's)")
    p.add_argument("--batch-sizes", default="1,8,32", help="throughput batch sizes, comma-separated (default 1,8,32)")
    p.add_argument("--sweep-points", type=int, default=8, help="threshold-sweep rows (default 8; 0 turns it off)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per row before each batch size (default 20)")
    p.add_argument("--repeats", type=int, default=1, help="passes over the data at batch 1 (default 1)")
    p.add_argument("--min-batches", type=int, default=16,
                   help="at larger batch sizes, time at least this many batches per row (default 16)")
    p.add_argument("--max-samples", type=int, help="use only the first N samples of the data")
    p.add_argument("--preprocess", choices=("auto", "yes", "no"), default="auto",
                   help="apply the manifest's preprocessing (raw data outside the declared range is refused): "
                        "auto = yes for NAME:SPLIT data; for .npz, yes when x is not of the bundle's dtype "
                        "(e.g. uint8 pixels)")
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="measure only the primary backend/precision, not every variant the bundle holds")
    p.add_argument("--torch-checkpoint", metavar="PT",
                   help="optional: a PyTorch state_dict of the source model to add a PyTorch-eager row (needs torch)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="benchmark a bundle whose export verification did not pass (refused by default)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"),
                   help="print the differences between two results.json files and exit")
    p.add_argument("--render", metavar="RESULTS.json",
                   help="re-render the report from an existing results.json into --report and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.errors import ConfigError

    if args.compare:
        from edge_runtime.bench import compare_results, load_results

        a, b = (load_results(p) for p in args.compare)
        print(compare_results(a, b, names=tuple(args.compare)))
        return 0
    if args.render:
        from edge_runtime.bench import render_report

        if not args.report:
            raise ConfigError("--render needs --report OUT (where to write the report)")
        print(f"report: {render_report(args.render, args.report)}")
        return 0
    missing = [flag for flag, v in (("BUNDLE", args.bundle), ("--data", args.data), ("--report", args.report))
               if not v]
    if missing:
        raise ConfigError(f"bench needs {', '.join(missing)} (or --compare A.json B.json)")
    from edge_runtime.bench import BenchSettings, run_bench, summary_lines, write_report
    from edge_runtime.bench.results import check_batch_sizes

    for flag, value, low in (("--sweep-points", args.sweep_points, 0), ("--warmup", args.warmup, 0),
                             ("--repeats", args.repeats, 1), ("--min-batches", args.min_batches, 1),
                             ("--threads", args.threads, 1), ("--max-samples", args.max_samples, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag}: expected an integer >= {low}, got {value}")
    settings = BenchSettings(
        data=args.data, backend=args.backend, threads=args.threads, profile=args.profile, meter=args.meter,
        batch_sizes=check_batch_sizes(args.batch_sizes), sweep_points=args.sweep_points, warmup=args.warmup,
        repeats=args.repeats, min_batches=args.min_batches, max_samples=args.max_samples, variants=args.variants,
        preprocess={"auto": None, "yes": True, "no": False}[args.preprocess],
        torch_checkpoint=args.torch_checkpoint, progress=args.progress, allow_unverified=args.allow_unverified)
    results = run_bench(args.bundle, settings)
    report = write_report(results, args.report)
    print(f"report: {report} (also report.html, results.json, results.csv, plots in {report.parent})")
    for line in summary_lines(results):
        print(line)
    return 0
