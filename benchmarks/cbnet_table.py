"""CBNet side by side on every shipped recipe with a ``cbnet`` section: full model vs BranchyNet early exit
(calibrated) vs CBNet ungated (the paper's) vs CBNet gated (the shipped default when the recipe has a gate).

For each recipe (``branchynet_lenet``, ``branchynet_resnet``: the shipped recipes with a ``cbnet`` section) the
bundle is converted from the recipe as shipped (or reused from ``--work``; ``--bundle KEY=PATH`` takes one you
have), then on its test split, batch 1, onnxruntime, 1 thread, the rows are timed round-robin per sample
(``_common.interleaved``) so machine drift hits all equally:

  * ``full``: the one-graph model;  * ``early_exit``: BranchyNet at the bundle's calibrated thresholds;
  * ``cbnet_ungated``: autoencoder -> lightweight classifier for every sample (the paper's CBNet);
  * ``cbnet_gated``: the ``cbnet`` mode with the bundle's confidence gate — the converted path answers where
    its calibrated score passes, the rest continue through early exit on their original input.

Every row goes through ``Runtime.infer`` (mode ``full``, ``early_exit``, ``cbnet_ungated``, ``cbnet``), so each
pays the same input check and dispatch.

Columns: accuracy, mean and p95 latency, energy per inference (ESTIMATED: active CPU energy from the device
profile's power model times the process CPU time, the ``estimate`` meter, measured in a separate block of calls
per row), speed-up of the mean latency vs full, the share answered by the converted path, exit histogram.
Targets (issue 19), for the shipped default (``cbnet``: gated when the bundle has a gate): accuracy within
1 point of full, batch-1 latency >= 4x lower than full and lower than early exit's (judged on the mean, as the
report's targets, and on the median: on a busy machine preemptions put a heavy tail on every row's mean).

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

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]   # this checkout's packages, not an install's
from _common import build_recipe, header, interleaved  # noqa: E402

from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402
from edge_runtime.methods.cbnet import SPEEDUP_GOAL  # noqa: E402

RECIPES = {"lenet": "branchynet_lenet", "resnet": "branchynet_resnet"}
LABELS = {"full": "full model (one graph)", "early_exit": "BranchyNet early exit (calibrated)",
          "cbnet_ungated": "CBNet ungated (paper)", "cbnet_gated": "CBNet gated"}


def build(key: str, work: Path, rebuild: bool) -> Path:
    """Convert the shipped recipe as it is into ``work/key`` unless it is there."""
    return build_recipe(REPO / "converters" / "recipes" / f"{RECIPES[key]}.yaml", work / key, rebuild, progress=False)


def rows_for(rt: Any) -> dict[str, Callable[[np.ndarray], Any]]:
    """Row name -> call answering one model-ready batch (each goes through the same input checks)."""
    from edge_runtime.methods.cbnet import GATE, UNGATED

    rows: dict[str, Callable[[np.ndarray], Any]] = {
        "full": lambda x: rt.infer(x, mode="full"),
        "early_exit": lambda x: rt.infer(x, mode="early_exit"),
    }
    if GATE in rt.manifest.parts["cbnet"].info:   # every row through rt.infer: the same dispatch cost
        rows["cbnet_ungated"] = lambda x: rt.infer(x, mode=UNGATED)
        rows["cbnet_gated"] = lambda x: rt.infer(x, mode="cbnet")
    else:
        rows["cbnet_ungated"] = lambda x: rt.infer(x, mode="cbnet")
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
    converted: dict[str, np.ndarray] = {k: np.zeros(n) for k in rows}
    cursor = {k: 0 for k in rows}

    def call(name: str) -> Callable[[], None]:
        fn = rows[name]

        def run() -> None:
            i = cursor[name] % n
            cursor[name] += 1
            res = fn(x[i:i + 1])
            preds[name][i] = res.predictions[0]
            exits[name][i] = res.exit_index[0]
            converted[name][i] = res.info.get("converted_fraction", 0.0)

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
        table[k] = {"accuracy": float((preds[k] == y).mean()), "latency_ms": stats[k],
                    "energy_mj": energy[k] * 1e3, "speedup_vs_full": full_mean / stats[k]["mean"],
                    "converted_fraction": float(converted[k].mean()),
                    "exit_histogram": np.bincount(exits[k], minlength=rt.num_exits).tolist()}
    m = rt.manifest
    info = m.parts["cbnet"].info
    gate = info.get("gate")
    return {"bundle": str(bundle), "test_samples": n, "energy_source": meter.source, "table": table,
            "default_row": "cbnet_gated" if gate else "cbnet_ungated",
            "deployment": None if m.deployment is None else {"mode": m.deployment.mode, "why": m.deployment.why},
            "flops": {"full": m.full_model_flops, **{f"cbnet_{k}": v for k, v in info["cost"].items()
                                                     if k.endswith("flops")}},
            "thresholds": list(m.policy.thresholds),
            "gate": None if gate is None else {k: gate[k] for k in ("policy", "method", "max_accuracy_drop",
                                                                     "converted_fraction", "accuracy")},
            "settings": {k: info["training"]["settings"][k] for k in ("autoencoder", "autoencoder_kwargs",
                                                                      "exemplars", "shift", "finetune")},
            "cbnet_training": {k: v for k, v in info["training"].items() if k.endswith("accuracy")}}


def targets(res: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(goal, met, figure) for the shipped default row; speed judged on the mean (as the report's targets) and,
    separately, on the median (a busy machine's preemptions put a heavy tail on every row's mean)."""
    t = res["table"]
    row, full, ee = t[res["default_row"]], t["full"], t["early_exit"]
    drop = 100 * (full["accuracy"] - row["accuracy"])
    out = [("accuracy within 1 point of full", drop <= 1.0, f"{drop:+.2f} points below full")]
    for stat in ("mean", "p50"):
        speed = full["latency_ms"][stat] / row["latency_ms"][stat]
        ratio = ee["latency_ms"][stat] / row["latency_ms"][stat]
        out += [(f">= {SPEEDUP_GOAL:g}x faster than full ({stat}, batch 1)", speed >= SPEEDUP_GOAL, f"{speed:.2f}x"),
                (f"faster than early exit ({stat}, batch 1)", ratio > 1.0, f"early exit / CBNet = {ratio:.2f}x")]
    return out


def print_table(key: str, res: dict[str, Any]) -> None:
    print(f"\n{key}: {res['bundle']} — test split ({res['test_samples']} samples), batch 1, onnxruntime 1 thread; "
          f"energy ESTIMATED ({res['energy_source']}, active CPU energy)")
    f, s = res["flops"], res["settings"]
    print(f"FLOPs: full {f['full'] / 1e6:.3f}M; CBNet autoencoder {f['cbnet_autoencoder_flops'] / 1e6:.3f}M + "
          f"classifier {f['cbnet_classifier_flops'] / 1e6:.3f}M = {f['cbnet_cbnet_flops'] / 1e6:.3f}M; "
          f"early-exit thresholds {[round(v, 4) for v in res['thresholds']]}")
    print(f"CBNet: autoencoder {s['autoencoder']} {s['autoencoder_kwargs']}, exemplars {s['exemplars']}, "
          f"shift {s['shift']}, fine-tuned classifier {s['finetune']}")
    g = res["gate"]
    if g:
        print(f"gate: {g['policy']['name']} >= {g['policy']['threshold']:.4g} ({g['method']}, "
              f"{g['max_accuracy_drop']:g}-point budget vs the final exit); calibration split: "
              f"{100 * g['converted_fraction']:.1f}% converted, gated {100 * g['accuracy']['gated']:.2f}% vs "
              f"final exit {100 * g['accuracy']['final_exit']:.2f}%")
    if res.get("deployment"):
        d = res["deployment"]
        print(f"bundle's recommended mode (Runtime.infer's default, issue 18): {d['mode']} — {d['why']}")
    print(f"{'row':<36} {'accuracy':>9} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7} {'energy mJ':>10} "
          f"{'speed-up':>9} {'p50 x':>6} {'converted':>9}  exits")
    p50_full = res["table"]["full"]["latency_ms"]["p50"]
    for name, r in res["table"].items():
        label = LABELS[name] + (" [shipped]" if name == res["default_row"] else "")
        lat = r["latency_ms"]
        print(f"{label:<36} {100 * r['accuracy']:>8.2f}% {lat['mean']:>8.3f} {lat['p50']:>7.3f} {lat['p95']:>7.3f} "
              f"{r['energy_mj']:>10.4f} {r['speedup_vs_full']:>8.2f}x {p50_full / lat['p50']:>5.2f}x "
              f"{100 * r['converted_fraction']:>8.1f}%  {r['exit_histogram']}")
    print("targets (" + LABELS[res["default_row"]] + "): " + "; ".join(
        f"{goal}: {'PASS' if ok else 'MISS'} ({fig})" for goal, ok, fig in targets(res)))


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
        res["targets"] = [{"goal": g, "met": ok, "value": v} for g, ok, v in targets(res)]
    print(f"machine: {results['header']['machine']}")
    for key, res in results["models"].items():
        print_table(key, res)
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
