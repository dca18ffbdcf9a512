"""DeeDiff on the device: sampling speed and quality of early-exit vs full-depth DDIM sampling, both variants.

For each diffusion bundle (default: the shipped ``deediff_paper`` and ``deediff_probe`` recipes, converted into
``--work`` unless already there), through the public API (``Runtime.sample``), onnxruntime, ``--threads`` threads:

* **speed**: ``Runtime.sample(b, steps, seed)`` at the bundle's chosen threshold and at full depth (the one-graph
  model at every step), batch 1 and batch 16, the same seeds for every row, rows timed round-robin within each
  repeat (every variant's early exit and full depth interleaved in one run, so machine drift hits all alike);
  speed-up = the full model's median seconds per call / early exit's, per variant and batch size;
* **quality**: ``--quality-samples`` samples (classes in turn) from one seed, early exit at each threshold of the
  sweep and at full depth, scored by FID in the bundle's digits classifier's feature space against the test
  split, class accuracy and per-sample MSE to the full-depth samples from the same noise;
  the real-data floor (FID of the calibration split itself against the test split) is reported too;
* **pictures**: the quality-vs-layers curve of both variants, and per variant a grid of full-depth samples next to
  the early-exit samples from the same noise.

Writes ``report.md``, ``results.json``, ``curve.png`` and ``grid_<variant>.png`` into ``--out``.

Usage: python benchmarks/deediff_sampling.py --out out/deediff_report [--work out/deediff] [--rebuild]
       python benchmarks/deediff_sampling.py --bundle paper=out/p --bundle probe=out/q --out out/r
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench.measure import latency_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_recipe, header  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"paper": "deediff_paper", "probe": "deediff_probe"}


def build(key: str, work: Path, rebuild: bool) -> Path:
    """Convert the shipped recipe as it is into ``work/key`` unless it is there."""
    return build_recipe(REPO / "converters" / "recipes" / f"{RECIPES[key]}.yaml", work / key, rebuild)


def chosen_threshold(rt: Any) -> float:
    """The bundle's threshold (one for every block, as the deediff stage sets it)."""
    thr = sorted(set(rt.manifest.policy.thresholds))
    return float(thr[0]) if thr else 0.0


def time_sampling(runtimes: dict[str, Any], *, batch: int, steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Seconds per ``Runtime.sample`` call for every (variant, full | early exit | segments) row, round-robin per
    repeat; the same seed for every row within a repeat. ``segments`` runs every segment with nobody leaving (the
    ``never`` policy): the cost of the segmented path itself against the fused one-graph model."""
    from edge_runtime.policies import create_policy

    rows = {}
    for key, rt in runtimes.items():
        thr = chosen_threshold(rt)
        rows[f"{key}/full"] = (rt, {"mode": "full"})
        rows[f"{key}/early_exit"] = (rt, {"threshold": thr})
        rows[f"{key}/segments"] = (rt, {"threshold": create_policy("never", rt.num_exits)})
    times: dict[str, list[float]] = {name: [] for name in rows}
    layers: dict[str, list[float]] = {name: [] for name in rows}
    clock = time.perf_counter
    for r in range(warmup + repeats):
        for name, (rt, kw) in rows.items():
            t0 = clock()
            res = rt.sample(batch, steps=steps, seed=1000 + r, **kw)
            dt = clock() - t0
            if r >= warmup:
                times[name].append(dt)
                layers[name].append(res.mean_layers)
    out: dict[str, Any] = {}
    for name in rows:
        out[name] = {"latency_ms": latency_stats(times[name], scale=1e3), "median_s": float(np.median(times[name])),
                     "mean_layers": float(np.mean(layers[name]))}
    for key in runtimes:
        full, ee, seg = out[f"{key}/full"], out[f"{key}/early_exit"], out[f"{key}/segments"]
        ee["speedup_vs_full"] = full["median_s"] / ee["median_s"]
        seg["slowdown_vs_full"] = seg["median_s"] / full["median_s"]
    return out


def quality(runtimes: dict[str, Any], x_test: np.ndarray, x_cal: np.ndarray, *, n: int, steps: int,
            seed: int, thresholds: list[float] | None) -> dict[str, Any]:
    """The quality sweep of every variant on the test split (plus its chosen threshold)."""
    from edge_runtime.methods.deediff.quality import classify, frechet_distance, quality_sweep

    out: dict[str, Any] = {}
    for key, rt in runtimes.items():
        sweep_thr = thresholds or list((rt.manifest.parts["deediff"].info.get("sweep") or {}).get(
            "curve_thresholds") or [p["threshold"] for p in rt.manifest.parts["deediff"].info["sweep"]["curve"]])
        thr = sorted(set(sweep_thr) | {chosen_threshold(rt)})
        print(f"{key}: quality sweep over {len(thr)} thresholds, {n} samples, {steps} steps ...", flush=True)
        sweep = quality_sweep(rt, x_test, thr, n=n, steps=steps, seed=seed)
        at = next(p for p in sweep["curve"] if p["threshold"] == chosen_threshold(rt))
        _, f_test = classify(rt, x_test)
        _, f_cal = classify(rt, x_cal)
        out[key] = {**sweep, "chosen_threshold": chosen_threshold(rt), "at_chosen": at,
                    "real_data_fid": frechet_distance(f_cal, f_test)}
    return out


def exit_diagnostics(runtimes: dict[str, Any], x_cal: np.ndarray, y_cal: np.ndarray, *, seed: int,
                     timesteps: tuple[int, ...] = (999, 789, 578, 368, 158, 53)) -> dict[str, Any]:
    """Per block and timestep, on calibration images noised at t: the head's eps MSE, the pseudo-label
    uhat = mean tanh|g_i - eps| and the UEM's u (means over the images) — how good each exit is, and whether u
    tracks it."""
    from edge_runtime.methods.deediff import NoiseSchedule

    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for key, rt in runtimes.items():
        abar = NoiseSchedule.from_dict(rt.manifest.parts["deediff"].info["schedule"]).alphas_cumprod()
        x0 = rt.preprocess(x_cal)
        rows = []
        for t in timesteps:
            eps = rng.standard_normal(x0.shape).astype(np.float32)
            xt = (np.sqrt(abar[t]) * x0 + np.sqrt(1 - abar[t]) * eps).astype(np.float32)
            outs = rt.segment_outputs({"x_t": xt, "t": np.full(len(xt), t, np.int64), "y": y_cal.astype(np.int64)})
            err = [np.abs(o["exit"] - eps).reshape(len(xt), -1) for o in outs]
            rows.append({"t": int(t), "mse": [float((e ** 2).mean()) for e in err],
                         "uhat": [float(np.tanh(e).mean()) for e in err],
                         "u": [float(o["u"].mean()) for o in outs[:-1]]})
        out[key] = rows
    return out


def grids(runtimes: dict[str, Any], out: Path, *, steps: int, seed: int, n: int = 40) -> dict[str, str]:
    """Per variant: full-depth samples | early-exit samples from the same noise, one PNG."""
    from edge_runtime.methods.deediff.grid import write_grid

    files = {}
    for key, rt in runtimes.items():
        full = rt.sample(n, steps=steps, seed=seed, mode="full")
        ee = rt.sample(n, steps=steps, seed=seed, threshold=chosen_threshold(rt))
        path = write_grid(out / f"grid_{key}.png", [full.images, ee.images], columns=10)
        files[key] = path.name
    return files


def plot_curve(q: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, rec in q.items():
        xs = [p["layer_fraction"] * 100 for p in rec["curve"]]
        ys = [p["fid_ratio"] for p in rec["curve"]]
        ax.plot(xs, ys, "o-", label=f"{key} (early exit)")
        at = rec["at_chosen"]
        ax.plot([at["layer_fraction"] * 100], [at["fid_ratio"]], "k*", markersize=12)
    ax.axhline(1.0, color="gray", lw=1)
    ax.axhline(1.1, color="gray", lw=1, ls="--", label="FID +10%")
    ax.set_xlabel("blocks run per sample per step (% of full depth)")
    ax.set_ylabel("FID / full-depth FID (test split)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(res: dict[str, Any]) -> str:
    lines = ["# DeeDiff: early-exit vs full-depth DDIM sampling", "",
             f"{res['steps']} DDIM steps, onnxruntime, {res['threads']} thread(s); machine: "
             f"{res['header']['machine'].get('cpu')}, {res['header']['machine'].get('logical_cpus')} CPUs; "
             f"{res['header']['created']}.",
             f"Command: `{res['command']}`", "", "## Speed (median seconds per `Runtime.sample` call)", "",
             "| variant | batch | full depth (s) | early exit (s) | speed-up | blocks per step (of "
             f"{res['num_layers']}) | segments, nobody leaving (s) | its cost vs full |",
             "|---|---|---|---|---|---|---|---|"]
    for b, rows in res["timing"].items():
        for key in res["variants"]:
            full, ee, seg = rows[f"{key}/full"], rows[f"{key}/early_exit"], rows[f"{key}/segments"]
            lines.append(f"| {key} | {b} | {full['median_s']:.4f} | {ee['median_s']:.4f} | "
                         f"**{ee['speedup_vs_full']:.2f}x** | {ee['mean_layers']:.2f} | {seg['median_s']:.4f} | "
                         f"{seg['slowdown_vs_full']:.2f}x |")
    lines += ["", f"## Quality ({res['quality_samples']} samples, test split, classifier feature space)", "",
              "| variant | threshold | blocks used | FID | full-depth FID | FID ratio | class accuracy (full) | "
              "MSE to full |", "|---|---|---|---|---|---|---|---|"]
    for key, rec in res["quality"].items():
        at, full = rec["at_chosen"], rec["full"]
        lines.append(f"| {key} | {rec['chosen_threshold']:g} | {100 * at['layer_fraction']:.1f}% | {at['fid']:.2f} | "
                     f"{full['fid']:.2f} | {at['fid_ratio']:.3f} | {100 * at.get('class_accuracy', float('nan')):.1f}% "
                     f"({100 * full.get('class_accuracy', float('nan')):.1f}%) | {at['mse_vs_full']:.4f} |")
    floor = ", ".join(f"{k} {v['real_data_fid']:.2f}" for k, v in res["quality"].items())
    lines += ["", f"Real-data floor (calibration split vs test split, same feature space): {floor}.", "",
              "## The curve", "", "![quality vs layers](curve.png)", ""]
    for key, rec in res["quality"].items():
        lines += [f"### {key}", "", "| threshold | blocks used | FID ratio | class accuracy | MSE to full |",
                  "|---|---|---|---|---|"]
        for p in rec["curve"]:
            lines.append(f"| {p['threshold']:g} | {100 * p['layer_fraction']:.1f}% | {p['fid_ratio']:.3f} | "
                         f"{100 * p.get('class_accuracy', float('nan')):.1f}% | {p['mse_vs_full']:.4f} |")
        lines += ["", f"Full depth (left) vs early exit at u < {rec['chosen_threshold']:g} (right), same noise:", "",
                  f"![{key}]({res['grids'][key]})", ""]
    lines += ["## How good is each exit (calibration images noised at t)", "",
              "Per block: the head's eps MSE (the final layer's last), the pseudo-label uhat and the UEM's u, means "
              "over the images.", ""]
    for key, rows in res["exit_diagnostics"].items():
        lines += [f"### {key}", "", "| t | eps MSE per block | uhat per block | u per block |", "|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['t']} | {' '.join(f'{v:.3f}' for v in r['mse'])} | "
                         f"{' '.join(f'{v:.3f}' for v in r['uhat'][:-1])} | {' '.join(f'{v:.3f}' for v in r['u'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--work", default="out/deediff", help="where the shipped recipes' bundles are (converted if absent)")
    p.add_argument("--rebuild", action="store_true", help="convert the shipped recipes again")
    p.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR", help="use this bundle (repeatable)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=15, help="timed calls per row and batch size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quality-samples", type=int, default=360, help="samples per quality point (default 360)")
    p.add_argument("--thresholds", type=float, nargs="*", help="the sweep's thresholds (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import edge_runtime
    from edge_runtime.datasets import load_split
    from edge_runtime.files import write_json_atomic, write_text_atomic

    if args.bundle:
        paths = {k: Path(v) for k, v in (b.split("=", 1) for b in args.bundle)}
    else:
        paths = {k: build(k, Path(args.work), args.rebuild) for k in RECIPES}
    runtimes = {k: edge_runtime.load_bundle(v, threads=args.threads) for k, v in paths.items()}
    first = next(iter(paths.values()))
    x_test, _ = load_split(first, "test")
    x_cal, y_cal = load_split(first, "calibration")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"header": header(), "command": " ".join(["python", *sys.argv]),
                           "steps": args.steps, "threads": args.threads, "variants": list(runtimes),
                           "bundles": {k: str(v) for k, v in paths.items()},
                           "num_layers": next(iter(runtimes.values())).num_exits,
                           "quality_samples": args.quality_samples, "timing": {}}
    for b in args.batch_sizes:
        print(f"timing batch {b} ...", flush=True)
        res["timing"][str(b)] = time_sampling(runtimes, batch=b, steps=args.steps, repeats=args.repeats,
                                              warmup=args.warmup)
    res["quality"] = quality(runtimes, x_test, x_cal, n=args.quality_samples, steps=args.steps, seed=args.seed,
                             thresholds=args.thresholds)
    res["grids"] = grids(runtimes, out, steps=args.steps, seed=args.seed)
    res["exit_diagnostics"] = exit_diagnostics(runtimes, x_cal, y_cal, seed=args.seed)
    plot_curve(res["quality"], out / "curve.png")
    write_json_atomic(out / "results.json", res)
    write_text_atomic(out / "report.md", report(res))
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
