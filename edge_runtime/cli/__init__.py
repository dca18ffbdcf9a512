"""The ``edge-runtime`` command: a thin argparse layer over library functions.

Each subcommand lives in its own module with a ``register(subparsers)`` function listed in
:data:`COMMAND_MODULES`; workstation commands come through the ``edge_runtime.commands`` entry point and a
method's mode adds its own through :meth:`edge_runtime.modes.Mode.register_commands`. Project errors
become one-line messages and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edge_runtime import __version__
from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.modes import MODES
from edge_runtime.plugins import COMMAND_GROUP, entry_points

COMMAND_MODULES = [
    "edge_runtime.cli.run",
    "edge_runtime.cli.inspect",
    "edge_runtime.cli.bench",
    "edge_runtime.cli.estimate",
    "edge_runtime.cli.profile",
    "edge_runtime.cli.meter",
    "edge_runtime.cli.serve",
    "edge_runtime.cli.service",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Convert PyTorch models into early-exit bundles and run them on edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in entry_points(COMMAND_GROUP):  # workstation commands (convert, demo, ...) come first, when installed
        try:
            register = ep.load()
        except ImportError as exc:  # declared, but its package is not importable here (a device without it)
            _register_unavailable(sub, ep.name, exc)
            continue
        register(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for mode in MODES.ordered():  # a method's mode may bring its own commands (e.g. sample, generate)
        MODES.get(mode).register_commands(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, command: str, exc: ImportError) -> None:
    """A stand-in for a workstation command whose plug-in cannot be imported: it fails with a one-line message."""
    why = f"{command!r} needs the workstation side, which is not importable here ({exc}); install it with: " \
          "pip install \"edge-runtime[convert]\""
    p = sub.add_parser(command, help=f"(unavailable here: {exc})", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)

    def unavailable(args: argparse.Namespace) -> int:
        raise ConfigError(why)

    p.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-runtime`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeRuntimeError as exc:
        print(f"edge-runtime {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-runtime {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
