"""``edge-runtime convert RECIPE.yaml --out DIR``: build, train, calibrate, export and verify a bundle."""

from __future__ import annotations

import argparse

from edge_runtime.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="turn a YAML recipe into a verified early-exit bundle (needs the 'convert' extra: torch)",
        description="Build the recipe's model, train and calibrate its exits when the recipe says so, "
                    "export every segment to ONNX, verify it against PyTorch and write the bundle atomically.",
    )
    p.add_argument("recipe", help="path of the YAML recipe")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    p.add_argument("--resume", action="store_true", help="resume interrupted training from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--allow-code", action="store_true",
                   help="let the recipe's model.factory import your Python module (it runs your code)")
    p.add_argument("--keep-trained", action="store_true",
                   help="keep the trained weights (<out>.train/trained.pt) for 'edge-runtime export' afterwards")
    p.set_defaults(func=run)


def require_workstation(command: str, extras: str = "convert") -> None:
    """Raise a one-line ConfigError naming the extra to install when torch (the workstation side) is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{command!r} needs the workstation extras ({exc}); install them with: "
                          f"pip install -e \".[{extras}]\" (in a checkout) or pip install \"edge-runtime[{extras}]\"") \
            from None


def run(args: argparse.Namespace) -> int:
    require_workstation("convert")
    from converters import convert
    out = convert(args.recipe, args.out, overwrite=args.overwrite, resume=args.resume,
                  progress=not args.no_progress, allow_code=args.allow_code, keep_trained=args.keep_trained)
    if out is not None:  # None: a torchrun rank other than 0 (rank 0 writes the bundle)
        print(f"wrote bundle {out}")
    return 0
