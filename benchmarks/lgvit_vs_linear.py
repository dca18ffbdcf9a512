"""LGViT heads vs linear heads on the same ViT (issue 7): accuracy-cost curves and measured batch-1 speed-up.

For each bundle (``lgvit_vit`` and ``vit_linear``, converted from their recipes unless given):
  * the calibration split's Pareto front (confidence thresholds swept by ``edge_runtime.calibration``),
    each point re-evaluated on the TEST split: test accuracy vs mean executed FLOPs;
  * both curves read at the same expected costs (accuracy of the best front point whose calibration
    cost is within each budget), so "LGViT beats linear at equal cost" is a printed comparison;
  * the bundle's calibrated point on the test split, and its measured onnxruntime batch-1 latency
    (``Runtime.infer`` with the calibrated policy, every test sample, one at a time) against the
    one-graph full model (``Runtime.infer(x, mode="full")``) timed interleaved in the same run.

With ``--same-backbone`` it also trains ONE backbone (stage 1 of ``lgvit_vit.yaml``) and, on that frozen
backbone, fresh LGViT heads and fresh linear heads (stage 2 each): the heads' effect alone.

Usage:
  python benchmarks/lgvit_vs_linear.py [--lgvit BUNDLE] [--linear BUNDLE] [--out DIR] [--threads 1]
      [--repeats 3] [--same-backbone] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUDGETS = (0.25, 0.275, 0.30, 0.35, 0.40, 0.50, 0.75, 1.00)   # fractions of the one-graph full model's FLOPs


def _bundle(given: str | None, recipe: str, out: Path) -> Path:
    if given:
        return Path(given)
    from converters import convert

    t0 = time.perf_counter()
    path = convert(REPO / "converters" / "recipes" / f"{recipe}.yaml", out / recipe, overwrite=True)
    print(f"converted {recipe} in {time.perf_counter() - t0:.0f} s -> {path}")
    return Path(path)


def front_on_test(oc, yc, ot, yt, flops, policy: str = "confidence", kwargs: dict | None = None) -> list[dict]:
    """The calibration split's Pareto front (thresholds swept), each point re-evaluated on the test split."""
    from edge_runtime.calibration import calibrate, evaluate_point

    cal = calibrate(oc, yc, policy, kwargs or {}, flops=flops, max_accuracy_drop=100.0)
    points = []
    for p in cal.front:
        t = evaluate_point(ot, yt, policy, cal.policy_kwargs, p.thresholds, flops)
        points.append({"cal_mean_mflops": p.mean_flops / 1e6, "cal_accuracy": p.accuracy,
                       "test_mean_mflops": t.mean_flops / 1e6, "test_accuracy": t.accuracy})
    return points


def curve(rt, path: Path) -> dict:
    """A bundle's exits on the calibration and test splits (exported ONNX chain): front, chosen point."""
    from edge_runtime.calibration import evaluate_point
    from edge_runtime.datasets import load_split

    m = rt.manifest
    pol = m.policy
    xc, yc = load_split(path, "calibration")
    xt, yt = load_split(path, "test")
    oc, ot = rt.exit_outputs(rt.preprocess(xc)), rt.exit_outputs(rt.preprocess(xt))
    flops = [float(f or 0) for f in m.cumulative_flops]     # every head on the way included
    chosen = evaluate_point(ot, yt, pol.name, pol.kwargs, list(pol.thresholds), flops)
    return {"full_mflops": float(m.full_model_flops or flops[-1]) / 1e6,
            "exit_test_accuracy": [float((o.argmax(-1) == yt).mean()) for o in ot],
            "front": front_on_test(oc, yc, ot, yt, flops, pol.name, pol.kwargs),
            "chosen": chosen.to_dict(), "x_test": xt, "y_test": yt}


def _cumulative_flops(model, example) -> list[float]:
    from converters.export.bundle import count_flops

    out, total, h = [], 0.0, example
    for segment, head in zip(model.segments, model.heads):
        total += count_flops(segment, h)
        h = segment(h).detach()
        total += count_flops(head, h)
        out.append(total)
    return out


def same_backbone(seed_recipe: str = "lgvit_vit") -> dict:
    """Controlled comparison: stage 1 of the LGViT recipe trains ONE backbone; then fresh LGViT heads and
    fresh linear heads are each trained by stage 2 on that same frozen backbone (PyTorch outputs)."""
    import torch

    from converters import create_model
    from converters.export.bundle import count_flops
    from converters.models.contract import FullModel
    from converters.pipeline.convert import build_model, seed_everything
    from converters.recipe import load_recipe
    from converters.training import StageConfig, Trainer, exit_logits
    from edge_runtime.datasets import apply_preprocessing, build_split

    r = load_recipe(REPO / "converters" / "recipes" / f"{seed_recipe}.yaml")
    seed_everything(r["seed"])
    split = build_split(r["data"])
    norm = split.normalization()
    (x, y), (xc, yc), (xt, yt) = (split.arrays(k) for k in ("train", "calibration", "test"))
    x, xc, xt = (apply_preprocessing(a, norm) for a in (x, xc, xt))
    stages = [StageConfig.from_dict(st) for st in r["train"]["stages"]]
    if r["train"].get("threads"):
        torch.set_num_threads(r["train"]["threads"])
    model = build_model(r)
    Trainer(model, stages[:1], x, y, seed=r["seed"], progress=False).fit()
    last = model.num_exits - 1
    trained = {k: v for k, v in model.state_dict().items() if k.startswith(("segments.", f"heads.{last}."))}
    kwargs = dict(r["model"]["kwargs"])
    out = {}
    for label, builder, extra in (("lgvit", "lgvit_vit", {"exit_heads": r.get("heads")}), ("linear", "vit_linear", {})):
        torch.manual_seed(r["seed"])
        m = create_model(builder, **kwargs, **extra)
        m.load_state_dict(trained, strict=False)
        Trainer(m, stages[1:], x, y, seed=r["seed"], progress=False).fit()
        oc, ot = exit_logits(m, xc), exit_logits(m, xt)
        flops = _cumulative_flops(m.eval(), torch.from_numpy(xt[:1]))
        out[label] = {"exit_test_accuracy": [float((o.argmax(-1) == yt).mean()) for o in ot],
                      "front": front_on_test(oc, yc, ot, yt, flops)}
    full = count_flops(FullModel(model.eval()), torch.from_numpy(xt[:1]))
    for c in out.values():
        c["full_mflops"] = full / 1e6      # the one-graph model: backbone + final head (same for both)
    return out


def at_budget(points: list[dict], budget: float, ref_mflops: float) -> dict | None:
    """The front point (most accurate on the calibration split) whose calibration cost fits the budget."""
    ok = [p for p in points if p["cal_mean_mflops"] <= budget * ref_mflops + 1e-9]
    return max(ok, key=lambda p: p["cal_accuracy"]) if ok else None


def speedup(rt, x: np.ndarray, y: np.ndarray, repeats: int) -> dict:
    """Batch-1 early exit (calibrated policy) vs the one-graph full model, interleaved per sample."""
    xs = rt.preprocess(x)
    for i in range(min(50, len(xs))):                 # warm-up
        rt.infer(xs[i:i + 1], mode="early_exit")
        rt.infer(xs[i:i + 1], mode="full")
    ee, full, correct, exits = 0.0, 0.0, 0, []
    clock = time.perf_counter
    for _ in range(repeats):
        for i in range(len(xs)):
            xi = xs[i:i + 1]
            t0 = clock()
            res = rt.infer(xi, mode="early_exit")
            t1 = clock()
            rt.infer(xi, mode="full")
            t2 = clock()
            ee += t1 - t0
            full += t2 - t1
            correct += int(res.predictions[0] == y[i])
            exits.append(int(res.exit_index[0]))
    n = repeats * len(xs)
    return {"early_exit_ms": 1e3 * ee / n, "full_model_ms": 1e3 * full / n, "speedup": full / ee,
            "accuracy": correct / n, "exit_fractions": (np.bincount(exits, minlength=rt.num_exits) / n).tolist()}


def equal_cost_table(curves: dict, what: str) -> list[dict]:
    """Print (and return) both curves read at the same expected costs."""
    ref = curves["lgvit"]["full_mflops"]
    print(f"\n== test accuracy at equal expected cost ({what}); budget = mean FLOPs / the one-graph model's "
          f"{ref:.2f} MFLOPs; the point is chosen on the calibration split")
    print(f"{'budget':>7} | {'LGViT acc':>9} {'cost':>6} | {'linear acc':>10} {'cost':>6} | winner")
    table = []
    for b in BUDGETS:
        row: dict = {"budget": b}
        cells = []
        for name in ("lgvit", "linear"):
            p = at_budget(curves[name]["front"], b, ref)
            row[name] = p
            cells.append(f"{100 * p['test_accuracy']:>9.2f} {p['test_mean_mflops'] / ref * 100:>5.1f}%" if p
                         else f"{'-':>9} {'-':>6}")
        la, li = (row[k]["test_accuracy"] if row[k] else None for k in ("lgvit", "linear"))
        win = "-" if la is None or li is None else ("LGViT" if la > li else "linear" if li > la else "tie")
        table.append(row)
        print(f"{100 * b:>6.1f}% | {cells[0]} | {cells[1]:>17} | {win}")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lgvit", help="an lgvit_vit bundle (default: convert converters/recipes/lgvit_vit.yaml)")
    ap.add_argument("--linear", help="a vit_linear bundle (default: convert converters/recipes/vit_linear.yaml)")
    ap.add_argument("--out", default="out/bench_lgvit", help="where converted bundles go (default out/bench_lgvit)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the test split for the latency (default 3)")
    ap.add_argument("--same-backbone", action="store_true",
                    help="also train one backbone (stage 1 of lgvit_vit.yaml) and both head kinds on it (stage 2)")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)

    import edge_runtime

    out = Path(args.out)
    paths = {"lgvit": _bundle(args.lgvit, "lgvit_vit", out), "linear": _bundle(args.linear, "vit_linear", out)}
    results: dict = {"header": header(), "threads": args.threads}
    curves = {}
    for name, path in paths.items():
        rt = edge_runtime.load_bundle(path, threads=args.threads)
        c = curve(rt, path)
        s = speedup(rt, c.pop("x_test"), c.pop("y_test"), args.repeats)
        curves[name] = c
        results[name] = {"bundle": str(path), **c, "measured": s}
        ch = c["chosen"]
        print(f"\n== {name}: {path}  (full model {c['full_mflops']:.2f} MFLOPs)")
        print("test accuracy per exit: " + " ".join(f"{100 * a:.2f}" for a in c["exit_test_accuracy"]))
        print(f"calibrated point on test: accuracy {100 * ch['accuracy']:.2f}% (final exit "
              f"{100 * c['exit_test_accuracy'][-1]:.2f}%), mean FLOPs {ch['mean_flops'] / 1e4 / c['full_mflops']:.1f}% "
              "of the one-graph model, "
              "exits " + " ".join(f"{100 * f:.0f}%" for f in ch["exit_fractions"]))
        print(f"measured batch 1 ({args.threads} thread): early exit {s['early_exit_ms']:.3f} ms/sample, "
              f"full model {s['full_model_ms']:.3f} ms/sample -> speed-up {s['speedup']:.2f}x "
              f"(accuracy {100 * s['accuracy']:.2f}%)")
    results["equal_cost"] = equal_cost_table(curves, "exported bundles, each recipe trained end to end")
    if args.same_backbone:
        same = same_backbone()
        for name, c in same.items():
            print(f"\nsame backbone, {name} heads: test accuracy per exit " +
                  " ".join(f"{100 * a:.2f}" for a in c["exit_test_accuracy"]))
        results["same_backbone"] = {"curves": same, "equal_cost": equal_cost_table(
            same, "ONE stage-1 backbone, fresh heads of each kind trained by stage 2 on it frozen (PyTorch)")}
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
