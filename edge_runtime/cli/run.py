"""``edge-runtime run BUNDLE --input X.npy`` (``--text ...`` / ``--text-file F`` for a bundle with a tokenizer): run
a batch and print each sample's answer and exit."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, InputError

#: the most input ``--random`` generates (a smoke test, not a load test: 10,000,000 samples were OOM-killed)
MAX_RANDOM_BYTES = 256 << 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a bundle on a .npy batch",
                       description="Run the bundle's segments in sequence, leaving early per sample.")
    p.add_argument("bundle", help="bundle directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help=".npy file holding one batch (N, ...) of model-ready inputs")
    src.add_argument("--random", type=int, metavar="N",
                     help="run N random inputs (a smoke test): raw values drawn uniformly in the input spec's declared "
                          "range and preprocessed, else standard normal")
    src.add_argument("--text", action="append", metavar="TEXT",
                     help="a text to classify (a bundle with a tokenizer); repeat for a batch")
    src.add_argument("--text-file", metavar="FILE", help="UTF-8 file with one text per line (empty lines skipped)")
    p.add_argument("--policy", help="exit policy name (default: the bundle's)")
    p.add_argument("--thresholds", help="comma-separated per-exit thresholds, or one number")
    p.add_argument("--mode",
                   help="inference mode: early_exit, full, or a mode the bundle adds (inspect lists them); default: "
                        "the bundle's recommended mode (early_exit when --policy or --thresholds is given)")
    p.add_argument("--backend", help="inference backend (default: the profile's, else onnxruntime)")
    p.add_argument("--threads", type=int, help="backend threads")
    p.add_argument("--profile",
                   help="device profile (name, YAML path or 'auto'): its threads/backend apply unless given")
    p.add_argument("--meter", help="energy meter spec (auto, estimate, powercap, jetson, ina219:bus=1,...); "
                                   "prints the energy and its source")
    p.add_argument("--precision", help="file precision to run: fp32 (default), fp16, int8, int8_dynamic "
                                       "(the bundle's variants; thresholds re-calibrated per variant)")
    p.add_argument("--preprocess", action="store_true",
                   help="the --input file holds raw inputs: check them against the declared raw range and apply the "
                        "manifest's preprocessing first (--input only: --random preprocesses its own raw draws)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="run a bundle whose export verification did not pass (refused by default)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=run)


def parse_thresholds(text: str | None) -> float | list[float] | None:
    """'0.5' -> 0.5; '0.5,0.2' -> [0.5, 0.2]."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--thresholds: expected numbers separated by commas, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(f"--thresholds: expected finite numbers, got {text!r}")
    return values[0] if len(values) == 1 else values


def load_npy(path: str) -> np.ndarray:
    """Load a .npy file without pickles; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: input file not found")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{p}: not a readable .npy array ({exc})") from None


def random_inputs(rt: Any, n: int) -> np.ndarray:
    """``n`` random model inputs: raw values uniform in the declared raw range, preprocessed; else standard normal."""
    shape = [n] + [d or 1 for d in rt.input_spec.shape[1:]]
    rng = np.random.default_rng(0)
    pre = rt.input_spec.preprocessing
    if pre is not None and pre.input_range is not None:
        lo, hi = pre.input_range
        raw = rng.uniform(lo, hi, size=tuple(shape))
        if pre.input_dtype is not None and np.dtype(pre.input_dtype).kind in "iu":
            raw = np.round(raw).astype(pre.input_dtype)
        return rt.preprocess(raw)
    return rng.standard_normal(shape).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    from edge_runtime import load_bundle

    if args.preprocess and args.input is None:
        raise ConfigError("--preprocess applies to an --input file of raw inputs only (--random draws raw inputs and "
                          "preprocesses them itself; --text/--text-file are tokenized)")

    rt = load_bundle(args.bundle, backend=args.backend, threads=args.threads, precision=args.precision,
                     profile=args.profile, meter=args.meter, allow_unverified=args.allow_unverified)
    try:
        return _run(rt, args)
    finally:
        rt.close()


def _run(rt: Any, args: argparse.Namespace) -> int:
    if args.text is not None or args.text_file is not None:
        texts = args.text if args.text is not None else read_text_file(args.text_file)
        result = rt.infer_text(texts, policy=args.policy, thresholds=parse_thresholds(args.thresholds), mode=args.mode)
        return _print(rt, result, args.json)
    if args.random is not None:
        sample = [d or 1 for d in rt.input_spec.shape[1:]]
        most = max(1, MAX_RANDOM_BYTES // (4 * math.prod(sample)))
        if not 1 <= args.random <= most:
            raise InputError(f"--random: expected a sample count from 1 to {most} (at most "
                             f"{MAX_RANDOM_BYTES >> 20} MiB of input for this bundle), got {args.random}")
        x = random_inputs(rt, args.random)
    else:
        x = load_npy(args.input)
        if args.preprocess:
            x = rt.preprocess(x)
    result = rt.infer(x, policy=args.policy, thresholds=parse_thresholds(args.thresholds), mode=args.mode)
    return _print(rt, result, args.json)


def read_text_file(path: str) -> list[str]:
    """One text per non-empty line of a UTF-8 file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: text file not found")
    try:
        lines = p.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise InputError(f"{p}: no texts (every line is empty)")
    return texts


def _print(rt: Any, result: Any, as_json: bool) -> int:
    bad = ~np.isfinite(result.outputs.reshape(len(result), -1)).all(axis=1)
    if bad.any():
        raise InputError(f"the model's output is not finite for sample(s) {np.flatnonzero(bad)[:10].tolist()}: the "
                         "input is outside the range the model computes in")
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{'sample':>6}  {'prediction':>10}  {'label':>10}  {'exit':>4}  {'latency ms':>10}")
    truncated = result.info.get("truncated") or []
    for i in range(len(result)):
        pred = int(result.predictions[i])
        note = "  (text truncated to the bundle's max_length)" if i < len(truncated) and truncated[i] else ""
        print(f"{i:>6}  {pred:>10}  {rt.labels[pred]:>10}  {int(result.exit_index[i]):>4}  "
              f"{result.sample_latency_s[i] * 1e3:>10.3f}{note}")
    counts = np.bincount(result.exit_index, minlength=rt.num_exits)
    print(f"batch of {len(result)} in {result.latency_s * 1e3:.3f} ms; samples per exit: {counts.tolist()}")
    if result.energy_j is not None:
        print(f"energy {result.energy_j:.6f} J ({result.energy_source})")
    return 0
