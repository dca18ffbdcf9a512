"""CBNet's table for each shipped CNN: full model vs BranchyNet (calibrated) vs CBNet (vs CBNet fine-tuned).

For each recipe (``branchynet_lenet``, ``branchynet_resnet``) a bundle with CBNet parts is converted
(or reused from ``--work``), then on the digits test split, batch 1, onnxruntime, 1 thread, the rows are
timed round-robin per sample (``_common.interleaved``) so machine drift hits all equally:

  * ``full``: the one-graph model;  * ``branchynet``: early exit at the bundle's calibrated thresholds;
  * ``cbnet``: autoencoder -> lightweight classifier with shared weights (segment 0 + head 0);
  * ``cbnet_finetuned``: the same with the classifier fine-tuned on converted inputs.

Columns: accuracy, mean and p95 latency, estimated energy per inference (active CPU energy from the
device profile's power model times the process CPU time, ``edge_runtime.meters`` estimator, measured
in a separate block per row), speed-up of the mean latency vs full. Targets (ResNet-style CNN):
CBNet accuracy within 1 point of full; CBNet mean latency >= 3x lower than full and lower than BranchyNet.

Usage: python benchmarks/cbnet_table.py [--work out/cbnet_bench] [--rebuild] [--passes 3] [--json out.json]
       python benchmarks/cbnet_table.py --bundle resnet=out/my_bundle   # an existing bundle with CBNet parts
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"lenet": "branchynet_lenet", "resnet": "branchynet_resnet"}
#: CBNet settings used when a shipped recipe has no ``cbnet`` section (fine-tuning on: both rows)
DEFAULT_CBNET = {"finetune": True}


def build(key: str, work: Path, rebuild: bool) -> Path:
    """Convert the shipped recipe (with CBNet, fine-tuning on) into ``work/key`` unless it is there."""
    out = work / key
    if out.is_dir() and not rebuild:
        return out
    from converters import convert
    from converters.recipe import load_recipe

    path = REPO / "converters" / "recipes" / f"{RECIPES[key]}.yaml"
    recipe = load_recipe(path)
    cbnet = dict(recipe.get("cbnet") or {})
    overrides = {"cbnet": {**{k: v for k, v in cbnet.items() if k != "autoencoder"},
                           "autoencoder": cbnet.get("autoencoder", {"name": "dense", "kwargs": {}}),
                           **DEFAULT_CBNET}}
    print(f"converting {path.name} with CBNet into {out} ...", flush=True)
    return convert(load_recipe(path, overrides), out, overwrite=True)


def rows_for(rt: Any) -> dict[str, Callable[[np.ndarray], Any]]:
    """Row name -> call answering one model-ready batch (each goes through the same input checks)."""
    from edge_runtime.methods.cbnet import CBNetRunner

    rows: dict[str, Callable[[np.ndarray], Any]] = {
        "full": lambda x: rt.infer(x, mode="full"),
        "branchynet": lambda x: rt.infer(x, mode="early_exit"),
    }
    parts = rt.manifest.parts["cbnet"].graphs
    if "classifier_base" in parts:  # fine-tuned bundle: 'classifier' is the fine-tuned one
        base = CBNetRunner(rt, classifier_part="classifier_base")
        rows["cbnet"] = lambda x: base.run(rt.check_input(x))
        rows["cbnet_finetuned"] = lambda x: rt.infer(x, mode="cbnet")
    else:
        rows["cbnet"] = lambda x: rt.infer(x, mode="cbnet")
    return rows


def measure(bundle: Path, passes: int, warmup: int, profile: str | None) -> dict[str, Any]:
    import edge_runtime
    from edge_runtime.datasets import load_split
    from edge_runtime.meters import create_meter

    rt = edge_runtime.load_bundle(bundle, backend="onnxruntime", threads=1, precision="fp32")
    x_raw, y = load_split(bundle, "test")
    x = rt.preprocess(x_raw)
    n = x.shape[0]
    rows = rows_for(rt)
    preds: dict[str, np.ndarray] = {k: np.full(n, -1) for k in rows}
    exits: dict[str, np.ndarray] = {k: np.zeros(n, dtype=np.int64) for k in rows}
    cursor = {k: 0 for k in rows}

    def call(name: str) -> Callable[[], None]:
        fn = rows[name]

        def run() -> None:
            i = cursor[name] % n
            cursor[name] += 1
            res = fn(x[i:i + 1])
            preds[name][i] = res.predictions[0]
            exits[name][i] = res.exit_index[0]

        return run

    times = interleaved({k: call(k) for k in rows}, warmup=warmup, repeats=passes * n)
    # energy: the estimator's active CPU energy over one block of n calls per row (not interleaved)
    meter = create_meter("estimate", profile=profile, subtract_idle=True)
    energy = {}
    for name, fn in rows.items():
        token = meter.start_window()
        for i in range(n):
            fn(x[i:i + 1])
        joules, _ = meter.window_energy(token)
        energy[name] = joules / n
    stats = {k: latency_stats(v, scale=1e3) for k, v in times.items()}   # ms
    full_mean = stats["full"]["mean"]
    table = {}
    for k in rows:
        table[k] = {"accuracy": float((preds[k] == y).mean()), "latency_ms": stats[k], "energy_mj": energy[k] * 1e3,
                    "speedup_vs_full": full_mean / stats[k]["mean"],
                    "exit_histogram": np.bincount(exits[k], minlength=rt.num_exits).tolist()}
    m = rt.manifest
    info = m.parts["cbnet"].info
    return {"bundle": str(bundle), "test_samples": n, "energy_source": meter.source, "table": table,
            "flops": {"full": m.full_model_flops, **{f"cbnet_{k}": v for k, v in info["cost"].items()
                                                     if k.endswith("flops")}},
            "thresholds": list(m.policy.thresholds), "cbnet_training": {
                k: v for k, v in info["training"].items() if k.endswith("accuracy")}}


def print_table(key: str, res: dict[str, Any]) -> None:
    print(f"\n{key}: {res['bundle']} — digits test split ({res['test_samples']} samples), batch 1, "
          f"onnxruntime 1 thread; energy {res['energy_source']} (active CPU energy)")
    f = res["flops"]
    print(f"FLOPs: full {f['full'] / 1e6:.3f}M; CBNet autoencoder {f['cbnet_autoencoder_flops'] / 1e6:.3f}M + "
          f"classifier {f['cbnet_classifier_flops'] / 1e6:.3f}M = {f['cbnet_cbnet_flops'] / 1e6:.3f}M "
          f"(saves {f['cbnet_saved_flops'] / 1e6:.3f}M of the full model); thresholds {res['thresholds']}")
    print(f"{'row':<16} {'accuracy':>9} {'mean ms':>8} {'p95 ms':>8} {'energy mJ':>10} {'speed-up':>9}  exits")
    for name, r in res["table"].items():
        print(f"{name:<16} {100 * r['accuracy']:>8.2f}% {r['latency_ms']['mean']:>8.3f} {r['latency_ms']['p95']:>8.3f} "
              f"{r['energy_mj']:>10.4f} {r['speedup_vs_full']:>8.2f}x  {r['exit_histogram']}")
    t = res["table"]
    if key == "resnet":
        acc_ok = t["cbnet"]["accuracy"] >= t["full"]["accuracy"] - 0.01
        fast_ok = t["cbnet"]["speedup_vs_full"] >= 3.0
        beats = t["cbnet"]["latency_ms"]["mean"] < t["branchynet"]["latency_ms"]["mean"]
        print(f"targets (CBNet, shared weights): accuracy within 1 pt of full: {'PASS' if acc_ok else 'MISS'}; "
              f">= 3x faster than full: {'PASS' if fast_ok else 'MISS'}; faster than BranchyNet: "
              f"{'PASS' if beats else 'MISS'}")
        if "cbnet_finetuned" in t:
            ft = t["cbnet_finetuned"]
            print(f"targets (CBNet fine-tuned): accuracy within 1 pt: "
                  f"{'PASS' if ft['accuracy'] >= t['full']['accuracy'] - 0.01 else 'MISS'}; >= 3x: "
                  f"{'PASS' if ft['speedup_vs_full'] >= 3.0 else 'MISS'}; faster than BranchyNet: "
                  f"{'PASS' if ft['latency_ms']['mean'] < t['branchynet']['latency_ms']['mean'] else 'MISS'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "out" / "cbnet_bench"),
                    help="where the converted bundles are kept and reused (default out/cbnet_bench)")
    ap.add_argument("--rebuild", action="store_true", help="convert the bundles again even if present")
    ap.add_argument("--bundle", action="append", default=[], metavar="KEY=PATH",
                    help="use an existing bundle with CBNet parts for KEY (lenet or resnet) instead of converting")
    ap.add_argument("--models", default="lenet,resnet", help="comma-separated subset of: lenet, resnet")
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the test split per row")
    ap.add_argument("--warmup", type=int, default=100, help="untimed calls per row first")
    ap.add_argument("--profile", default=None,
                    help="device profile for the energy estimate (default: detect this machine's)")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)

    given = dict(b.split("=", 1) for b in args.bundle)
    results: dict[str, Any] = {"header": header(), "models": {}}
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        if key not in RECIPES:
            ap.error(f"--models: unknown {key!r}; known: {', '.join(RECIPES)}")
        t0 = time.perf_counter()
        bundle = Path(given[key]) if key in given else build(key, Path(args.work), args.rebuild)
        results["models"][key] = res = measure(bundle, args.passes, args.warmup, args.profile)
        res["seconds"] = time.perf_counter() - t0
    print(f"machine: {results['header']['machine']}")
    for key, res in results["models"].items():
        print_table(key, res)
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
