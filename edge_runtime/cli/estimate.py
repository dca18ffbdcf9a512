"""``edge-runtime estimate BUNDLE --profile NAME``: latency and energy per segment/exit on a device, before copying."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", aliases=["predict"],
                       help="estimate a bundle's latency and energy on a device profile ('predict' is the old "
                            "spelling, kept for one release)",
                       description="Estimate per-segment and per-exit latency and energy from the bundle's FLOPs and "
                                   "op mix and the profile's figures, the expectation at the calibrated point, and "
                                   "the one-graph model's figure (the baseline of the speed-up).")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--profile", help="profile name or YAML path (default: EDGE_RUNTIME_PROFILE or detected)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per call (default 1)")
    p.add_argument("--backend", help="backend the device would run (default: the profile's): onnxruntime, litert")
    p.add_argument("--precision", help="file precision the device would run (fp32, fp16, int8, int8_dynamic): its own "
                                       "re-calibrated operating point")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.errors import InputError
    from edge_runtime.estimate import estimate_bundle, format_estimate

    if args.batch_size < 1:
        raise InputError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    est = estimate_bundle(args.bundle, args.profile, batch_size=args.batch_size, backend=args.backend,
                          precision=args.precision)
    print(json.dumps(est.to_dict(), indent=2) if args.json else format_estimate(est))
    return 0
