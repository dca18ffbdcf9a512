"""Your own model: the worked examples (examples/*.yaml) converted from their recipes and measured.

For each example: the recipe is converted (``convert(..., allow_code=True)``, the same as
``edge-runtime convert RECIPE --allow-code``), then on its test split at batch 1, interleaved per sample in one run:
  * the one-graph model (``mode="full"``), the segmented model with policy ``never`` and the calibrated early exit;
  * verification: max |ONNX - PyTorch| per exit (target <= 1e-4);
  * ``never`` / one-graph mean latency (target <= 1.10x); one-graph / early-exit mean latency (the speed-up) and
    accuracy of each, with the recipe's accuracy budget (ResNet target: >= 2x within the budget).

Usage: python benchmarks/byo_examples.py [--examples resnet_digits,cnn1d_signal] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ALL = ("resnet_digits", "mobilenetv2_digits", "cnn1d_signal", "mlp_tabular")


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(name: str, root: Path) -> dict[str, str]:
    """The recipe overrides that point an example at its data (written here when the example makes its own)."""
    if name == "cnn1d_signal":
        return {"data.kwargs.path": str(_example(name).write_signals(root / "signals.npz"))}
    if name == "mlp_tabular":
        return {"data.kwargs.path": str(_example(name).write_breast_cancer_csv(root / "breast_cancer.csv"))}
    return {}


def measure(bundle: Path, *, repeats: int, threads: int) -> dict:
    import edge_runtime
    from edge_runtime.datasets import load_split

    rt = edge_runtime.load_bundle(bundle, threads=threads)
    m = rt.manifest
    x_raw, y = load_split(bundle, "test")
    x = rt.preprocess(x_raw)
    never = edge_runtime.create_policy("never", rt.num_exits)
    modes = {"one_graph": lambda xi: rt.infer(xi, mode="full"), "never": lambda xi: rt.infer(xi, policy=never),
             "early_exit": lambda xi: rt.infer(xi)}
    times = {k: [] for k in modes}
    preds = {k: np.zeros(len(y), np.int64) for k in modes}
    exits = np.zeros(len(y), np.int64)
    for i in range(min(20, len(y))):   # warm-up
        for fn in modes.values():
            fn(x[i:i + 1])
    for _ in range(repeats):
        for i in range(len(y)):
            xi = x[i:i + 1]
            for k, fn in modes.items():
                t0 = time.perf_counter()
                res = fn(xi)
                times[k].append(time.perf_counter() - t0)
                preds[k][i] = res.predictions[0]
                if k == "early_exit":
                    exits[i] = res.exit_index[0]
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    acc = {k: float((p == y).mean()) for k, p in preds.items()}
    budget = (m.calibration.max_accuracy_drop if m.calibration else None)
    drop = 100 * (acc["one_graph"] - acc["early_exit"])
    return {
        "bundle": str(bundle), "test_samples": int(len(y)), "repeats": repeats, "threads": threads,
        "verification_max_abs_diff": {str(k): v for k, v in m.verification.exit_diffs().items()},
        "verification_tolerance": m.verification.tolerance,
        "latency_ms": {k: latency_stats(v, scale=1e3) for k, v in times.items()},
        "never_over_one_graph": mean["never"] / mean["one_graph"],
        "speedup_early_exit": mean["one_graph"] / mean["early_exit"],
        "accuracy": acc, "accuracy_drop_points": drop, "accuracy_budget_points": budget,
        "within_budget": None if budget is None else bool(drop <= budget + 1e-9),
        "exit_fractions": (np.bincount(exits, minlength=rt.num_exits) / len(y)).tolist(),
        "cuts": (m.extra or {}).get("model_source", {}).get("exits", {}).get("cuts"),
        "flops": {"full_model": m.full_model_flops, "exits": m.cumulative_flops},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", default=",".join(ALL), help=f"comma-separated, from {', '.join(ALL)}")
    ap.add_argument("--out", default="out/byo_examples", help="bundles, data and results.json/results.md go here")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the test split per configuration")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already converted under --out")
    args = ap.parse_args(argv)

    from converters import convert
    from converters.recipe import load_recipe

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", "benchmarks/byo_examples.py", *(argv if argv is not None else sys.argv[1:])])
    results: dict = {"header": header(), "command": command, "examples": {}}
    for name in args.examples.split(","):
        bundle = root / name
        if not (args.reuse and bundle.is_dir()):
            t0 = time.perf_counter()
            convert(load_recipe(EXAMPLES / f"{name}.yaml", make_data(name, root)), bundle, overwrite=True,
                    allow_code=True, progress=False)
            print(f"{name}: converted in {time.perf_counter() - t0:.0f} s")
        r = measure(bundle, repeats=args.repeats, threads=args.threads)
        results["examples"][name] = r
        print(f"{name}: max|diff| {max(r['verification_max_abs_diff'].values()):.2e}, never/one-graph "
              f"{r['never_over_one_graph']:.3f}x, early exit {r['speedup_early_exit']:.2f}x faster at "
              f"{100 * r['accuracy']['early_exit']:.2f}% vs {100 * r['accuracy']['one_graph']:.2f}% "
              f"(budget {r['accuracy_budget_points']} point(s)), exits {np.round(r['exit_fractions'], 3).tolist()}")
    write_json_atomic(root / "results.json", results)
    lines = ["| example | max abs diff (exits) | never / one-graph | early-exit speed-up | accuracy early / full |",
             "|---|---|---|---|---|"]
    for name, r in results["examples"].items():
        lines.append(f"| {name} | {max(r['verification_max_abs_diff'].values()):.1e} | "
                     f"{r['never_over_one_graph']:.3f}x | {r['speedup_early_exit']:.2f}x | "
                     f"{100 * r['accuracy']['early_exit']:.2f}% / {100 * r['accuracy']['one_graph']:.2f}% |")
    (root / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
