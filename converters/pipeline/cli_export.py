"""``edge-runtime export RECIPE --trained WEIGHTS --out DIR``: export, verify and calibrate again from trained weights.

A conversion whose export failed after training (a head that does not export, a variant over its tolerance)
keeps the trained weights in ``<out>.train/trained.pt`` (``convert --keep-trained`` keeps them after a success
too); this command writes the bundle from them without retraining, with other export settings if asked
(``--set export.fp16_tolerance=0.02``, ``--set "export.quantize=[onnx/int8]"``).
"""

from __future__ import annotations

import argparse
from typing import Any

from converters.pipeline.cli_convert import require_workstation
from edge_runtime.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a bundle from trained weights kept by convert, without retraining (needs the 'convert' extra)",
        description="Rebuild the recipe's model, load the trained weights convert kept (<out>.train/trained.pt), "
                    "then export, verify and calibrate as convert does; --set changes recipe keys first (e.g. "
                    "export tolerances or variants).",
    )
    p.add_argument("recipe", help="path of the YAML recipe the weights were trained with")
    p.add_argument("--trained", required=True, help="trained weights kept by convert (<out>.train/trained.pt)")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (dotted; the value is read as YAML), e.g. export.fp16_tolerance=0.02")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle directory")
    p.add_argument("--allow-code", action="store_true",
                   help="let the recipe's model.factory import your Python module (it runs your code)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["export.tolerance=1e-3"]`` -> ``{"export.tolerance": 0.001}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (a dotted recipe key, e.g. export.tolerance=1e-3)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def run(args: argparse.Namespace) -> int:
    require_workstation("export")
    from converters import convert
    from converters.recipe import load_recipe

    recipe = load_recipe(args.recipe, parse_overrides(args.set))
    out = convert(recipe, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                  allow_code=args.allow_code, trained=args.trained)
    print(f"wrote bundle {out}")
    return 0
