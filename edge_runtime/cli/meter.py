"""``edge-runtime meter list|read``: which energy meters work on this machine (and why not), and a live reading."""

from __future__ import annotations

import argparse
import json
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("meter", help="energy meters: which work here, and a live reading",
                       description="List the registered energy meters with whether each can work on this "
                                   "machine and why not, or read one for a few seconds.")
    msub = p.add_subparsers(dest="meter_command", metavar="ACTION")
    ls = msub.add_parser("list", help="probe every meter and show which can work here")
    ls.add_argument("--json", action="store_true", help="print the probe results as JSON")
    ls.add_argument("--profile", help="profile for the estimator when auto-selection falls back to it")
    ls.set_defaults(func=run_list)
    rd = msub.add_parser("read", help="measure the energy over a few idle seconds with one meter")
    rd.add_argument("meter", help="meter spec: NAME or NAME:key=value,... (e.g. ina219:bus=1,shunt_ohms=0.1), or auto")
    rd.add_argument("--seconds", type=float, default=2.0, help="how long to measure (default 2)")
    rd.add_argument("--profile", help="device profile for the estimator (default: EDGE_RUNTIME_PROFILE or detected)")
    rd.set_defaults(func=run_read)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_list(args: argparse.Namespace) -> int:
    from edge_runtime.meters import auto_meter, meter_status

    status = meter_status()
    best = auto_meter(profile=args.profile)
    try:
        if args.json:
            print(json.dumps({"meters": [s.__dict__ for s in status], "auto": best.name,
                              "auto_source": best.source}, indent=2))
            return 0
        print(f"{'meter':<10} {'kind':<9} {'works here':<10} why")
        for s in status:
            kind = "measured" if s.measured else "estimate"
            print(f"{s.name:<10} {kind:<9} {'yes' if s.available else 'no':<10} {s.reason}")
        print(f"auto-selection: {best.name} ({best.source})")
    finally:
        best.stop()
    return 0


def run_read(args: argparse.Namespace) -> int:
    from edge_runtime.meters import create_meter

    meter = create_meter(args.meter, profile=args.profile).start()
    try:
        token = meter.start_window()
        time.sleep(args.seconds)
        energy, _ = meter.window_energy(token)
    finally:
        meter.stop()
    rate = f"{meter.rate_hz:g} Hz" if meter.rate_hz else "read at the window's ends"
    print(f"{energy:.4f} J over {args.seconds:g} s = {energy / args.seconds:.3f} W mean  [{meter.source}, {rate}]")
    return 0
