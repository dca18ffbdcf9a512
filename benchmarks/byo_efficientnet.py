"""EfficientNet-Lite0 with its real ImageNet weights: exits attached to the frozen backbone, trained by
self-distillation on unlabelled images, exported, verified, calibrated, measured.

Data: no ImageNet here, so the images are random crops (scale, aspect, flips) of the natural photos that ship
offline with scikit-learn and matplotlib (``china.jpg``, ``flower.jpg``, ``grace_hopper.jpg``,
``Minduka_Present_Blue_Pack.png``), 224x224 RGB uint8, unlabelled: "accuracy" is agreement with the full
model's own predictions. Train, calibration and test crops are drawn with different seeds from the same photos
(the report says so: held-out crops, not held-out photos).

Reported from one run: per exit, agreement with the final exit and the latency speed-up of answering there;
the calibration curve evaluated on the test split (agreement vs expected speed-up); the speed-up at >= 99%
agreement; and the calibrated policy measured at batch 1 against the one-graph model, interleaved.

Usage: python benchmarks/byo_efficientnet.py [--out out/byo_efficientnet] [--images 900] [--epochs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.files import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("example_efficientnet_lite0", REPO / "examples" /
                                                  "efficientnet_lite0.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo_paths() -> list[Path]:
    """Natural photos that ship offline with scikit-learn and matplotlib."""
    import matplotlib
    import sklearn.datasets

    sk = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    mpl = Path(os.path.dirname(matplotlib.__file__)) / "mpl-data" / "sample_data"
    paths = [sk / "china.jpg", sk / "flower.jpg", mpl / "grace_hopper.jpg", mpl / "Minduka_Present_Blue_Pack.png"]
    return [p for p in paths if p.is_file()]


def random_crops(paths: list[Path], n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` random-resized crops (area 10-100%, aspect 3/4-4/3, random flip) as uint8 (n, 3, size, size)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.open(p).convert("RGB") for p in paths]
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        im = images[int(rng.integers(len(images)))]
        w, h = im.size
        area = rng.uniform(0.1, 1.0) * w * h
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop, np.uint8).transpose(2, 0, 1)
    return out


def write_images(path: Path, n: int) -> Path:
    """Unlabelled train/calibration/test crops (50/25/25 %) as an npz with the user's own split."""
    paths = photo_paths()
    n_tr, n_cal = n // 2, n // 4
    np.savez(path, x_train=random_crops(paths, n_tr, 1), x_calibration=random_crops(paths, n_cal, 2),
             x_test=random_crops(paths, n - n_tr - n_cal, 3))
    return path


def recipe(npz: Path, args: argparse.Namespace) -> dict:
    ex = _example()
    at = args.at if args.at.startswith("auto:") else args.at.split(",")
    return {
        "name": "efficientnet_lite0", "seed": 0,
        "data": {"name": "npz", "kwargs": {"path": str(npz)}},
        "model": {"factory": str(REPO / "examples" / "efficientnet_lite0.py") + ":build_efficientnet_lite0",
                  "weights": ex.weights_path(),
                  "exits": {"at": at, "heads": args.head, "freeze_backbone": True}},
        "input": {"preprocessing": {"scale": 1 / 255, "mean": list(ex.MEAN), "std": list(ex.STD),
                                    "input_range": [0.0, 255.0], "input_dtype": "uint8",
                                    "description": "RGB pixels in [0, 255]; EfficientNet-Lite's (x - 127) / 128"}},
        "train": {"threads": args.threads, "stages": [
            {"name": "self_distill", "loss": {"name": "self_distill", "kwargs": {"temperature": 2.0}},
             "epochs": args.epochs, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4}]},
        "policy": {"name": "entropy"},
        "calibrate": {"max_accuracy_drop": 1.0, "cost": "latency", "measure_latency": True, "latency_repeats": 30},
        "export": {"tolerance": args.tolerance, "verify_batch_sizes": [1, 3]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/byo_efficientnet", help="data, bundle, results.json/.md and the plot")
    ap.add_argument("--images", type=int, default=900, help="crops in all (train 50%%, calibration/test 25%% each)")
    ap.add_argument("--epochs", type=int, default=3, help="self-distillation epochs (frozen backbone)")
    ap.add_argument("--at", default="_blocks.5,_blocks.8,_blocks.11,_blocks.14",
                    help="cut points: module names, comma-separated, or auto:K")
    ap.add_argument("--head", default="auto", help="exit-head type (auto: pool + linear)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="export verification tolerance per exit")
    ap.add_argument("--threads", type=int, default=2, help="torch threads while training")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the test split")
    ap.add_argument("--reuse", action="store_true", help="reuse the bundle under --out")
    args = ap.parse_args(argv)

    import edge_runtime
    from converters import convert
    from edge_runtime.calibration import evaluate_point

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    bundle = root / "bundle"
    if not (args.reuse and bundle.is_dir()):
        npz = write_images(root / "crops.npz", args.images)
        t0 = time.perf_counter()
        convert(recipe(npz, args), bundle, overwrite=True, allow_code=True, progress=True)
        print(f"converted in {time.perf_counter() - t0:.0f} s")
    rt = edge_runtime.load_bundle(bundle, threads=1)
    m = rt.manifest
    with np.load(root / "crops.npz") as f:
        x = rt.preprocess(f["x_test"])
    outs = rt.exit_outputs(x)
    y = outs[-1].argmax(-1)                                      # the full model's own answers
    flops = [int(e.cumulative_flops) for e in m.exits]
    lat = m.calibration.other.get("latency", {}) if m.calibration else {}
    cost = (flops, lat.get("segment_s"), lat.get("full_model_s"), m.full_model_flops)
    # measured at batch 1, interleaved per sample: the one-graph model, every sample forced out at exit i, and the
    # calibrated policy (entropy: leave when H < t; t = 1e30 lets every sample leave, -1 none)
    n = rt.num_exits
    configs = {"one_graph": dict(mode="full"), "calibrated": {}}
    for i in range(n - 1):
        configs[f"exit_{i}"] = dict(policy="entropy", thresholds=[-1.0] * i + [1e30] + [-1.0] * (n - 2 - i))
    configs[f"exit_{n - 1}"] = dict(policy="never")
    times: dict[str, list[float]] = {k: [] for k in configs}
    agree: list[int] = []
    for _ in range(args.repeats):
        for i in range(len(x)):
            xi = x[i:i + 1]
            for k, kw in configs.items():
                t0 = time.perf_counter()
                res = rt.infer(xi, **kw)
                times[k].append(time.perf_counter() - t0)
                if k == "calibrated":
                    agree.append(int(res.predictions[0] == y[i]))
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    per_exit = [{"exit": i, "agreement": float((o.argmax(-1) == y).mean()),
                 "flops_fraction": flops[i] / max(1, m.full_model_flops or flops[-1]),
                 "speedup_if_all_leave_here": mean["one_graph"] / mean[f"exit_{i}"]} for i, o in enumerate(outs)]
    curve = []
    for p in m.calibration.curve:   # expected speed-ups from the segment latencies measured while converting
        t = evaluate_point(outs, y, m.policy.name, m.policy.kwargs, p.thresholds, *cost)
        curve.append({"thresholds": p.thresholds, "calibration_agreement": p.accuracy,
                      "test_agreement": t.accuracy, "expected_speedup": t.expected_speedup,
                      "flops_fraction": t.flops_fraction})
    ok = [c for c in curve if c["test_agreement"] >= 0.99 and c["expected_speedup"]]
    best99 = max(ok, key=lambda c: c["expected_speedup"]) if ok else None
    measured = {"latency_ms": {k: latency_stats(v, scale=1e3) for k, v in times.items()},
                "speedup": mean["one_graph"] / mean["calibrated"], "agreement": float(np.mean(agree)),
                "thresholds": list(m.policy.thresholds)}
    results = {"header": header(), "command": " ".join(["python", "benchmarks/byo_efficientnet.py",
                                                        *(argv if argv is not None else sys.argv[1:])]),
               "data": {"photos": [p.name for p in photo_paths()], "crops": args.images,
                        "test_crops": int(len(x)), "labels": "none (agreement with the full model)"},
               "verification": {"tolerance": m.verification.tolerance,
                                "max_abs_diff": m.verification.exit_diffs(), "passed": m.verification.passed},
               "cuts": (m.extra or {}).get("model_source", {}).get("exits", {}).get("cuts"),
               "per_exit": per_exit, "curve_on_test": curve, "best_at_99_agreement": best99,
               "calibrated_measured": measured, "training": (m.extra or {}).get("training")}
    write_json_atomic(root / "results.json", results)
    _plot(root / "agreement_vs_speedup.png", per_exit, curve, measured)
    lines = ["| exit | after | FLOPs fraction | agreement with full model | speed-up if every sample left here "
             "(measured) |", "|---|---|---|---|---|"]
    cuts = results["cuts"] or []
    for e in per_exit:
        where = cuts[e["exit"]]["at"] if e["exit"] < len(cuts) else "(final)"
        lines.append(f"| {e['exit']} | {where} | {100 * e['flops_fraction']:.1f}% | {100 * e['agreement']:.2f}% | "
                     f"{e['speedup_if_all_leave_here']:.2f}x |")
    lines.append("")
    lines.append(f"speed-up at >= 99% agreement (calibration front evaluated on the test split, expected from "
                 f"measured segment latencies): {best99['expected_speedup']:.2f}x at "
                 f"{100 * best99['test_agreement']:.2f}%" if best99 else
                 "no curve point reaches 99% agreement on the test split with a speed-up")
    lines.append(f"calibrated policy measured at batch 1: {measured['speedup']:.2f}x faster than the one-graph model, "
                 f"{100 * measured['agreement']:.2f}% agreement")
    (root / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def _plot(path: Path, per_exit: list[dict], curve: list[dict], measured: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = sorted((c["expected_speedup"], 100 * c["test_agreement"]) for c in curve if c["expected_speedup"])
    if pts:
        ax.plot(*zip(*pts), "o-", label="calibration front, evaluated on test")
    ex = [(e["speedup_if_all_leave_here"], 100 * e["agreement"]) for e in per_exit]
    ax.plot(*zip(*ex), "s", label="every sample at exit i (measured)")
    ax.plot([measured["speedup"]], [100 * measured["agreement"]], "*", markersize=14, label="calibrated, measured")
    ax.axhline(99, ls=":", c="grey")
    ax.set_xlabel("speed-up vs the one-graph model (batch 1)")
    ax.set_ylabel("agreement with the full model (%)")
    ax.set_title("EfficientNet-Lite0, self-distilled exits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
