"""``edge-runtime service unit BUNDLE...``: print a systemd unit that runs the daemon."""

from __future__ import annotations

import argparse
import shlex


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="systemd integration for the daemon",
                       description="Helpers for running `edge-runtime serve` as a systemd service.")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION")
    u = ssub.add_parser("unit", help="print a systemd unit (Type=notify, watchdog, hardened)",
                        description="Print a systemd service unit for `edge-runtime serve`. Install with: "
                                    "edge-runtime service unit ... > /etc/systemd/system/edge-runtime.service")
    u.add_argument("bundles", nargs="+", metavar="[NAME=]BUNDLE", help="bundle directories to serve")
    u.add_argument("--user", default="edge-runtime", help="unprivileged user (and group) to run as")
    u.add_argument("--exec", dest="exec_start",
                   help="command that starts edge-runtime (default: this Python with -m edge_runtime)")
    u.add_argument("--host", default="127.0.0.1", help="address the daemon binds (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8080, help="port the daemon listens on (default 8080)")
    u.add_argument("--watchdog", type=int, default=30, help="WatchdogSec in seconds (default 30)")
    u.add_argument("--token-file", help="bearer-token file for the daemon")
    u.add_argument("--serve-args", default="", help="more `serve` flags, quoted as one string")
    u.add_argument("--i2c", action="store_true",
                   help="allow /dev/i2c-* for INA219/INA260 power sensors (instead of PrivateDevices=yes)")
    u.set_defaults(func=unit)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def unit(args: argparse.Namespace) -> int:
    from edge_runtime.cli.serve import parse_models
    from edge_runtime.serve.unit import UnitSettings, unit_text

    models = {name: str(path) for name, path in parse_models(args.bundles).items()}
    print(unit_text(UnitSettings(models=models, user=args.user, exec_start=args.exec_start, host=args.host,
                                 port=args.port, watchdog_s=args.watchdog, token_file=args.token_file,
                                 extra_args=shlex.split(args.serve_args), i2c=args.i2c)), end="")
    return 0
