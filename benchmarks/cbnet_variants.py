"""CBNet's variants side by side (issue 19): where the accuracy goes, and what each paper-faithful choice changes.

For each shipped recipe with a ``cbnet`` section (``--models lenet,resnet``) the recipe is converted once as
shipped (the bundle and the trained BranchyNet's weights are kept in ``--work``). Then, on that one BranchyNet,
for each variant (the recipe's ``cbnet`` section with a few keys changed) and each seed, ``train_cbnet`` trains
the converting autoencoder on the train split with the bundle's calibrated policy — the library's own code — and
the variant is evaluated on the calibration and test splits:

* ``ungated``: the classifier the ``cbnet`` mode runs, on the autoencoder's output (PyTorch: the same modules
  the bundle exports, verified against onnxruntime within the recipe's tolerance);
* ``gated``: the confidence gate calibrated on the calibration split by
  :func:`edge_runtime.methods.cbnet.choose_gate` (the function the converter calls; the recipe's gate policy,
  ``confidence`` when it has none, and its ``calibrate.max_accuracy_drop``), in front of the bundle's early exit
  (onnxruntime, calibrated thresholds), evaluated on the test split: accuracy and the share converted.

Diagnosis for the first variant and seed: the learning curve (train / calibration / test accuracy of the
autoencoder + classifier every ``--curve-every`` epochs: capacity vs generalisation), per-class accuracy (full,
exit 0 on the original input, early exit, CBNet) on the test split, and the test inputs CBNet gets wrong sorted
into: the full model misses them too | hard (exit 0 on the original input misses them) | easy ones the conversion
breaks (exit 0 on the original input gets them right), with the classifier's confidence.

Usage: python benchmarks/cbnet_variants.py [--models resnet] [--variants shipped,nearest] [--seeds 0,1,2]
                                           [--work out/cbnet_variants] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]   # this checkout's packages, not an install's
from _common import header  # noqa: E402

from converters.training.trainer import TrainCallback  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402

RECIPES = {"lenet": "branchynet_lenet", "resnet": "branchynet_resnet"}
#: variant -> keys of the recipe's cbnet section it changes ("shipped": none). The shipped recipes fine-tune the
#: classifier; the other variants set ``finetune`` themselves, so each compares with the paper's setting
#: (``no_finetune``) on one change.
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "no_finetune": {"finetune": False},                                  # the paper's CBNet (shared weights)
    "nearest": {"exemplars": "nearest", "finetune": False},
    "medoids8": {"exemplars": "medoids", "exemplar_kwargs": {"k": 8}, "finetune": False},
    "conv": {"autoencoder": {"name": "conv", "kwargs": {"widths": [4, 8], "code": 16}},   # ~ the dense one's FLOPs
             "finetune": False},
    "paper_dense": {"autoencoder": {"name": "dense", "kwargs": {}}, "finetune": False},   # 784-512-256-32-784
    "no_shift": {"shift": 0, "finetune": False},
    "shift3": {"shift": 3, "finetune": False},
    "epochs600": {"epochs": 600, "finetune": False},
    "finetune_shift": {"finetune": True, "finetune_shift": 2},
}
DEFAULT_VARIANTS = "no_finetune,shipped,nearest,medoids8,conv,no_shift"


def prepare(key: str, work: Path) -> tuple[Path, Path]:
    """Convert the shipped recipe into ``work/key/bundle`` keeping the trained model's weights (``model.pt``)."""
    import torch

    from converters import convert
    out, weights = work / key / "bundle", work / key / "model.pt"
    if out.is_dir() and weights.is_file():
        return out, weights

    class KeepWeights(TrainCallback):
        def on_train_end(self, trainer: Any) -> None:
            weights.parent.mkdir(parents=True, exist_ok=True)
            torch.save(trainer.model.state_dict(), weights)

    path = REPO / "converters" / "recipes" / f"{RECIPES[key]}.yaml"
    print(f"converting {path.name} into {out} ...", flush=True)
    convert(path, out, overwrite=True, progress=False, callbacks=[KeepWeights()])
    return out, weights


class Curve(TrainCallback):
    """A trainer hook recording the converted path's accuracy on each split every ``every`` epochs."""

    def __init__(self, every: int, clf: Any, data: dict[str, tuple[Any, np.ndarray]]) -> None:
        self.every, self.clf, self.data = every, clf, data
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, trainer: Any, stage: int, epoch: int, metrics: dict[str, Any]) -> None:
        if (epoch + 1) % self.every:
            return
        ae = trainer.model
        was = ae.training
        ae.eval()
        self.rows.append({"epoch": epoch + 1, **{k: _acc(_logits(ae, self.clf, x), y) for k, (x, y) in
                                                 self.data.items()}})
        ae.train(was)


def _logits(ae: Any, clf: Any, x: Any) -> np.ndarray:
    import torch

    from converters.methods.cbnet.train import batched

    with torch.no_grad():
        return torch.cat(batched(lambda b: clf(ae(b)), x)).numpy()


def _acc(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(-1) == y).mean())


def run_model(key: str, work: Path, variants: list[str], seeds: list[int], curve_every: int) -> dict[str, Any]:
    import torch

    import edge_runtime
    from converters.methods.cbnet import CBNetSettings, train_cbnet
    from converters.methods.cbnet.core import parse_cbnet_section
    from converters.pipeline.convert import build_model
    from converters.recipe import load_recipe
    from converters.training.evaluation import exit_logits
    from edge_runtime.datasets import load_split
    from edge_runtime.methods.cbnet import choose_gate
    from edge_runtime.policies.base import softmax

    bundle, weights = prepare(key, work)
    recipe = load_recipe(REPO / "converters" / "recipes" / f"{RECIPES[key]}.yaml")
    model = build_model(recipe)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    rt = edge_runtime.load_bundle(bundle, threads=1)
    data: dict[str, tuple[Any, np.ndarray]] = {}
    ref: dict[str, dict[str, np.ndarray]] = {}
    for split in ("train", "calibration", "test"):
        raw, y = load_split(bundle, split)
        x = rt.preprocess(raw)
        data[split] = (torch.from_numpy(x), np.asarray(y))
        ee = rt.infer(x, mode="early_exit")
        logits = exit_logits(model, torch.from_numpy(x), batch_size=512)
        ref[split] = {"full": logits[-1], "exit0": logits[0], "early_exit": ee.outputs, "ee_exit": ee.exit_index}
    onnx_final = rt.exit_outputs(data["test"][0].numpy())[-1]
    same = float(np.abs(onnx_final - ref["test"]["full"]).max())   # the weights are the bundle's
    assert same < 1e-3, f"{weights} does not match {bundle} (max abs diff {same})"
    cbnet = recipe["cbnet"]
    gate = cbnet["gate"] or {"policy": "confidence", "kwargs": {}, "max_accuracy_drop": None}
    budget = gate["max_accuracy_drop"] if gate["max_accuracy_drop"] is not None else \
        recipe["calibrate"]["max_accuracy_drop"]
    out: dict[str, Any] = {"bundle": str(bundle), "recipe": recipe.name, "budget_points": budget,
                           "gate_policy": gate["policy"], "splits": {k: int(len(v[1])) for k, v in data.items()},
                           "reference": {k: {m: _acc(ref[k][m], data[k][1]) for m in ("full", "exit0", "early_exit")}
                                         for k in data},
                           "variants": {}}
    x, y = data["train"]
    for vi, name in enumerate(variants):
        spec = {**cbnet, **VARIANTS[name]}
        settings = CBNetSettings.from_section(parse_cbnet_section(spec))
        runs = []
        for si, seed in enumerate(seeds):
            diagnose = vi == 0 and si == 0
            t0 = time.process_time()
            clf_ref = None
            callbacks = []
            if diagnose:
                from converters.methods.cbnet import LightweightClassifier

                clf_ref = LightweightClassifier(model).eval()
                callbacks = [Curve(curve_every, clf_ref, data)]
            res = train_cbnet(model, x, torch.from_numpy(y), rt.default_policy, settings, seed=seed,
                              progress=False, callbacks=callbacks)
            cpu = time.process_time() - t0
            parts = res.parts()
            ae, clf = parts["autoencoder"], parts["classifier"]
            logits = {k: _logits(ae, clf, v[0]) for k, v in data.items()}
            g = choose_gate(logits["calibration"], ref["calibration"]["early_exit"], ref["calibration"]["full"],
                            data["calibration"][1], policy=gate["policy"], policy_kwargs=gate["kwargs"],
                            max_accuracy_drop=budget)
            pol = edge_runtime.create_policy(gate["policy"], 2, [g["policy"]["threshold"]], **gate["kwargs"])
            passed = np.asarray(pol.decide(0, logits["test"], pol.start(len(logits["test"]))), dtype=bool)
            gated = np.where(passed, logits["test"].argmax(-1), ref["test"]["early_exit"].argmax(-1))
            run: dict[str, Any] = {
                "seed": seed, "train_cpu_s": cpu,
                "ungated": {k: _acc(v, data[k][1]) for k, v in logits.items()},
                "gate": {"threshold": g["policy"]["threshold"], "calibration_accuracy": g["accuracy"]["gated"],
                         "calibration_converted": g["converted_fraction"],
                         "test_accuracy": float((gated == data["test"][1]).mean()),
                         "test_converted": float(passed.mean())},
            }
            if diagnose:
                run["diagnosis"] = _diagnose(logits["test"], ref["test"], data["test"][1], softmax)
                run["diagnosis"]["curve"] = callbacks[0].rows
            runs.append(run)
            print(f"  {key} {name} seed {seed}: ungated cal {100 * run['ungated']['calibration']:.2f}% test "
                  f"{100 * run['ungated']['test']:.2f}%; gated test {100 * run['gate']['test_accuracy']:.2f}% "
                  f"({100 * run['gate']['test_converted']:.1f}% converted); {cpu:.0f} s CPU", flush=True)
        from converters.export.onnx import count_flops

        out["variants"][name] = {"changes": VARIANTS[name], "runs": runs,
                                 "autoencoder_flops": count_flops(parts["autoencoder"], x[:1])}
    return out


def _diagnose(logits: np.ndarray, ref: dict[str, np.ndarray], y: np.ndarray, softmax: Any) -> dict[str, Any]:
    pred = logits.argmax(-1)
    conf = softmax(logits.astype(np.float64)).max(-1)
    rows = {"full": ref["full"].argmax(-1), "exit0": ref["exit0"].argmax(-1),
            "early_exit": ref["early_exit"].argmax(-1), "cbnet": pred}
    per_class = {int(c): {k: float((v[y == c] == c).mean()) for k, v in rows.items()} for c in np.unique(y)}
    wrong = []
    for i in np.flatnonzero(pred != y):
        kind = ("full model misses it too" if rows["full"][i] != y[i] else
                "hard: exit 0 misses it" if rows["exit0"][i] != y[i] else "easy: the conversion breaks it")
        wrong.append({"index": int(i), "label": int(y[i]), "cbnet": int(pred[i]), "confidence": float(conf[i]),
                      "kind": kind, "early_exit_right": bool(rows["early_exit"][i] == y[i])})
    return {"per_class": per_class, "wrong": wrong,
            "confidence_right_mean": float(conf[pred == y].mean()),
            "confidence_wrong_mean": float(conf[pred != y].mean()) if len(wrong) else None}


def _ms(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    return f"{a.mean():6.2f}" + (f" ±{a.std(ddof=1):.2f}" if a.size > 1 else "      ")


def print_model(key: str, res: dict[str, Any]) -> None:
    r = res["reference"]
    print(f"\n{key}: {res['bundle']} ({res['splits']}); budget {res['budget_points']:g} points from the full model")
    print("reference accuracy (calibration / test): " + "; ".join(
        f"{m} {100 * r['calibration'][m]:.2f}% / {100 * r['test'][m]:.2f}%" for m in ("full", "exit0", "early_exit")))
    print(f"{'variant':<12} {'AE MFLOPs':>9} {'train':>7} {'calibration':>13} {'test ungated':>13} "
          f"{'test gated':>13} {'converted':>9}  (mean ± sd over seeds, %)")
    for name, v in res["variants"].items():
        runs = v["runs"]
        print(f"{name:<12} {v['autoencoder_flops'] / 1e6:>9.3f} {_ms([x['ungated']['train'] for x in runs]):>7} "
              f"{_ms([x['ungated']['calibration'] for x in runs]):>13} {_ms([x['ungated']['test'] for x in runs]):>13} "
              f"{_ms([x['gate']['test_accuracy'] for x in runs]):>13} "
              f"{100 * np.mean([x['gate']['test_converted'] for x in runs]):>8.1f}%")
    first = next(iter(res["variants"].values()))["runs"][0].get("diagnosis")
    if not first:
        return
    print("learning curve (converted path accuracy %, train / calibration / test):")
    print("  " + "  ".join(f"{c['epoch']}: {100 * c['train']:.1f}/{100 * c['calibration']:.1f}/{100 * c['test']:.1f}"
                           for c in first["curve"]))
    print("per-class test accuracy % (full / exit 0 / early exit / CBNet):")
    print("  " + "  ".join(f"{c}: {100 * a['full']:.0f}/{100 * a['exit0']:.0f}/{100 * a['early_exit']:.0f}/"
                           f"{100 * a['cbnet']:.0f}" for c, a in first["per_class"].items()))
    kinds: dict[str, list[str]] = {}
    for w in first["wrong"]:
        kinds.setdefault(w["kind"], []).append(f"#{w['index']} {w['label']}->{w['cbnet']} ({w['confidence']:.2f})")
    print(f"test inputs CBNet gets wrong ({len(first['wrong'])}; confidence right {first['confidence_right_mean']:.3f}"
          f" vs wrong {first['confidence_wrong_mean']:.3f}):")
    for kind, items in kinds.items():
        print(f"  {kind}: {len(items)}: " + ", ".join(items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "out" / "cbnet_variants"),
                    help="where the converted bundles and model weights are kept and reused")
    ap.add_argument("--models", default="resnet,lenet", help="comma-separated subset of: lenet, resnet")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (autoencoder init, order, augmentation)")
    ap.add_argument("--curve-every", type=int, default=25, help="learning-curve step in epochs")
    ap.add_argument("--json", help="also write raw results to this JSON file")
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for n in names:
        if n not in VARIANTS:
            ap.error(f"--variants: unknown {n!r}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: dict[str, Any] = {"header": header(), "models": {}}
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        if key not in RECIPES:
            ap.error(f"--models: unknown {key!r}; known: {', '.join(RECIPES)}")
        results["models"][key] = run_model(key, Path(args.work), names, seeds, args.curve_every)
        if args.json:
            write_json_atomic(args.json, results)
    for key, res in results["models"].items():
        print_model(key, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
