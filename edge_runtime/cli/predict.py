"""``edge-runtime predict BUNDLE --profile NAME``: latency and energy per segment/exit on a device, before copying."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict a bundle's latency and energy on a device profile",
                       description="Predict per-segment and per-exit latency and energy from the bundle's FLOPs and "
                                   "op mix and the profile's figures, and the expectation at the calibrated point.")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--profile", help="profile name or YAML path (default: EDGE_RUNTIME_PROFILE or detected)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per call (default 1)")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_runtime.errors import InputError
    from edge_runtime.predict import format_prediction, predict_bundle

    if args.batch_size < 1:
        raise InputError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    pred = predict_bundle(args.bundle, args.profile, batch_size=args.batch_size)
    print(json.dumps(pred.to_dict(), indent=2) if args.json else format_prediction(pred))
    return 0
