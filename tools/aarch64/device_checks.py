"""Checks run by ``run-device-tests`` on both sides: on the host, and inside the emulated aarch64 board.

Run with whichever Python is the side being checked (the host's, or the board's venv ``bin/python``); it imports
``edge_runtime`` from that Python's environment and prints one JSON document on stdout::

    python tools/aarch64/device_checks.py where
    python tools/aarch64/device_checks.py synthetic OUT_DIR
    python tools/aarch64/device_checks.py batch BUNDLE --out X.npy [--size 8]
    python tools/aarch64/device_checks.py exits BUNDLE --input X.npy --backend onnxruntime --out EXITS.npz
    python tools/aarch64/device_checks.py infer BUNDLE --input X.npy
    python tools/aarch64/device_checks.py probe BUNDLE --backend onnxruntime

Device side only: numpy and ``edge_runtime`` (never torch or converters).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: the packages whose versions a report names (distribution names)
REPORTED = ("edge-runtime", "numpy", "onnxruntime", "ai-edge-litert", "fastapi", "uvicorn")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def where(args: argparse.Namespace) -> dict[str, Any]:
    """Where ``edge_runtime`` is imported from, and this side's machine, Python and package versions."""
    import edge_runtime

    return {"edge_runtime": str(Path(edge_runtime.__file__).resolve().parent), "prefix": sys.prefix,
            "machine": platform.machine(), "python": platform.python_version(),
            "versions": {d: _version(d) for d in REPORTED}}


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    """A numpy-only synthetic bundle (3 exits, entropy thresholds 0.9/0.7)."""
    from edge_runtime.synthetic import write_synthetic_bundle

    out = write_synthetic_bundle(args.out, num_exits=3, features=8, classes=4, thresholds=[0.9, 0.7], overwrite=True)
    return {"bundle": str(out)}


def batch(args: argparse.Namespace) -> dict[str, Any]:
    """A standard-normal input batch of ``--size`` samples shaped like the bundle's input, saved to ``--out``."""
    from edge_runtime.bundle import read_bundle

    spec = read_bundle(args.bundle).manifest.inputs[0]
    shape = [args.size, *[d or 1 for d in spec.shape[1:]]]
    np.save(args.out, np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32))
    return {"input": args.out, "shape": shape}


def exits(args: argparse.Namespace) -> dict[str, Any]:
    """Every exit output of the bundle for ``--input`` on ``--backend`` (fp32, 1 thread), saved to ``--out``."""
    import edge_runtime

    rt = edge_runtime.load_bundle(args.bundle, backend=args.backend, threads=1, precision="fp32")
    outputs = rt.exit_outputs(np.load(args.input, allow_pickle=False))
    np.savez(args.out, **{f"exit_{i}": o for i, o in enumerate(outputs)})
    return {"backend": args.backend, "exits": len(outputs), "shapes": [list(o.shape) for o in outputs],
            "tolerance": rt.manifest.verification.tolerance, "out": args.out, **where(args)}


def infer(args: argparse.Namespace) -> dict[str, Any]:
    """The library's answer for ``--input`` with the bundle's own policy (what ``run``/``serve`` must match)."""
    import edge_runtime

    res = edge_runtime.load_bundle(args.bundle, threads=1).infer(np.load(args.input, allow_pickle=False))
    return {"predictions": res.predictions.tolist(), "exit_index": res.exit_index.tolist(),
            "outputs": np.asarray(res.outputs).tolist()}


def probe(args: argparse.Namespace) -> dict[str, Any]:
    """Import the backend and run the bundle once (the wheel probe: a bad wheel dies here, e.g. with SIGILL)."""
    import edge_runtime

    rt = edge_runtime.load_bundle(args.bundle, backend=args.backend, threads=1)
    x = np.zeros([2, *[d or 1 for d in rt.input_spec.shape[1:]]], np.float32)
    return {"exit_index": rt.infer(x).exit_index.tolist(), **where(args)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("where", help="edge_runtime's location, the machine and package versions").set_defaults(func=where)
    s = sub.add_parser("synthetic", help="write a synthetic bundle and an input batch")
    s.add_argument("out")
    s.set_defaults(func=synthetic)
    b = sub.add_parser("batch", help="write a random input batch for a bundle")
    b.add_argument("bundle")
    b.add_argument("--out", required=True, help=".npy to write")
    b.add_argument("--size", type=int, default=8, help="samples (default 8)")
    b.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    b.set_defaults(func=batch)
    for name, func, helptext in (("exits", exits, "save every exit output"), ("infer", infer, "the library's answer"),
                                 ("probe", probe, "import a backend and run the bundle once")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("bundle")
        if name != "probe":
            c.add_argument("--input", required=True, help=".npy input batch")
        if name != "infer":
            c.add_argument("--backend", default="onnxruntime", help="onnxruntime (default) or litert")
        if name == "exits":
            c.add_argument("--out", required=True, help=".npz to write, one array per exit")
        c.set_defaults(func=func)
    args = p.parse_args(argv)
    print(json.dumps(args.func(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
