"""``edge-runtime demo``: train (or reuse) the demo bundles on digits, benchmark them, write the reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from converters.pipeline.cli_convert import require_workstation
from edge_runtime.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="train/reuse the demo bundles on digits, benchmark them and write the report",
        description="Trains (or reuses cached copies of) the demo models (converters/recipes/demo/models.yaml) on "
                    "the built-in digits data, benchmarks each against its one-graph model and writes the reports. "
                    "Needs the workstation extras: pip install -e \".[convert,bench]\".")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument("--force", action="store_true", help="retrain even when cached bundles exist")
    p.add_argument("--threads", type=int, default=1,
                   help="backend threads for the benchmark (default 1; 0 = the backend's default)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one epoch per training stage and 64 benchmark samples (numbers mean nothing)")
    p.add_argument("--models", help="comma-separated subset of the demo models (default: all)")
    p.add_argument("--jobs", type=int,
                   help="conversions to run in parallel, one core each (default: one per core; 1: one after "
                        "another, with progress bars)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_workstation("demo", "convert,bench")
    from converters.pipeline.demo import DemoSettings, run_demo

    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads: expected an integer >= 0, got {args.threads}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    kwargs: dict[str, Any] = {}
    if args.models:
        kwargs["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    settings = DemoSettings(out=Path(args.out), force=args.force, threads=args.threads or None, quick=args.quick,
                            jobs=args.jobs, progress=args.progress, **kwargs)
    result = run_demo(settings)
    print(f"report: {result.summary_path} (per model: " + ", ".join(str(p) for p in result.reports.values()) + ")")
    for line in result.summary:
        print(line)
    return 0
