"""PALBERT's Q-exit against the classic exit rules on one fine-tuned text bundle (issue 13).

Five rules on the same bundle (same backbone, same exits, same data): the one-graph model (no exit), DeeBERT-style
entropy exits, PABEE patience, max-softmax confidence, PALBERT's Q-exit (and PonderNet's sampling exit for
reference). Each rule's parameter is swept on the bundle's calibration split with the device's own decision loop
(``simulate_exits`` over the exported graphs' outputs); the operating point per rule is the cheapest (fewest mean
layers) within ``--budget`` accuracy points of the one-graph model on the calibration split; the test split then
gives accuracy, macro-F1 and mean layers, and the latency of those points is measured on the device runtime at
batch 1 and batch 16, interleaved with the one-graph model in the same run. Also: the oracle (each text leaves at
the earliest right layer), accuracy at equal mean layers (rules' test curves interpolated), a Pareto plot.

Usage:
    python benchmarks/palbert_rules.py out/palbert_minilm --out out/palbert_report [--latency-samples 120]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, interleaved  # noqa: E402

import edge_runtime  # noqa: E402
from edge_runtime.bench.measure import latency_stats  # noqa: E402
from edge_runtime.calibration import oracle  # noqa: E402
from edge_runtime.calibration.bounds import pareto_front  # noqa: E402
from edge_runtime.datasets import load_split  # noqa: E402
from edge_runtime.executor import simulate_exits  # noqa: E402
from edge_runtime.files import write_bytes_atomic, write_json_atomic  # noqa: E402
from edge_runtime.methods.palbert import text_segment_outputs  # noqa: E402
from edge_runtime.policies import create_policy  # noqa: E402

#: rule -> (policy name, the swept values, how a value becomes policy arguments)
RULES: dict[str, tuple[str, list[float], Any]] = {
    "entropy (DeeBERT)": ("entropy", [], lambda v: {"thresholds": v}),
    "patience (PABEE)": ("patience", [1, 2, 3, 4, 5], lambda v: {"patience": int(v)}),
    "confidence": ("confidence", [], lambda v: {"thresholds": v}),
    "Q-exit (PALBERT)": ("q_exit", [float(q) for q in np.round(np.linspace(0.05, 0.95, 19), 3)],
                         lambda v: {"thresholds": v}),
}


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    f1 = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def evaluate(outs: list[dict[str, np.ndarray]], y: np.ndarray, policy: Any, n_classes: int) -> dict[str, float]:
    idx = simulate_exits(outs, policy)
    preds = np.stack([o["exit"].argmax(-1) for o in outs])[idx, np.arange(len(y))]
    return {"accuracy": float((preds == y).mean()), "macro_f1": macro_f1(preds, y, n_classes),
            "mean_layers": float((idx + 1).mean()), "exit_fractions": np.bincount(idx, minlength=len(outs)).tolist()}


def quantile_values(outs: list[dict[str, np.ndarray]], policy: str) -> list[float]:
    """Thresholds to sweep for a score policy: quantiles of its score over the early exits."""
    probe = create_policy(policy, len(outs), 0.5)
    scores = np.concatenate([probe.score(o["exit"]) for o in outs[:-1]])
    return sorted({float(v) for v in np.quantile(scores, np.linspace(0, 1, 41))})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--out", required=True, help="report directory (report.md, results.json, pareto.png)")
    ap.add_argument("--budget", type=float, default=1.0, help="accuracy points below the one-graph model allowed")
    ap.add_argument("--latency-samples", type=int, default=120, help="test texts timed at batch 1 (per rule)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over those texts")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    rt = edge_runtime.load_bundle(args.bundle, threads=args.threads)
    xc, yc = load_split(args.bundle, "calibration")
    xt, yt = load_split(args.bundle, "test")
    k = len(rt.labels)
    n_exits = rt.num_exits
    print(f"exit outputs: {len(xc)} calibration, {len(xt)} test texts, {n_exits} exits", flush=True)
    oc, ot = text_segment_outputs(rt, xc), text_segment_outputs(rt, xt)
    never = create_policy("never", n_exits)
    full_c, full_t = evaluate(oc, yc, never, k), evaluate(ot, yt, never, k)
    floor = full_c["accuracy"] - args.budget / 100 - 1e-12

    rows: dict[str, Any] = {"one-graph MiniLM": {"policy": "full", "value": None, "calibration": full_c,
                                                 "test": full_t, "curve": []}}
    for rule, (name, values, kw) in RULES.items():
        values = values or quantile_values(oc, name)
        curve = []
        for v in values:
            c = evaluate(oc, yc, create_policy(name, n_exits, **kw(v)), k)
            t = evaluate(ot, yt, create_policy(name, n_exits, **kw(v)), k)
            curve.append({"value": v, "calibration": c, "test": t})
        ok = [p for p in curve if p["calibration"]["accuracy"] >= floor]
        pick = min(ok, key=lambda p: (p["calibration"]["mean_layers"], -p["calibration"]["accuracy"])) if ok \
            else max(curve, key=lambda p: p["calibration"]["accuracy"])
        rows[rule] = {"policy": name, "value": pick["value"], "kwargs": kw(pick["value"]), **{
            s: pick[s] for s in ("calibration", "test")}, "curve": curve}
        print(f"{rule:>20}: value {pick['value']:.4g}  test acc {100 * pick['test']['accuracy']:.2f}%  "
              f"layers {pick['test']['mean_layers']:.2f}", flush=True)
    sample = evaluate(ot, yt, create_policy("ponder_sample", n_exits, seed=0), k)
    rows["sampling exit (PonderNet)"] = {"policy": "ponder_sample", "value": None, "kwargs": {"seed": 0},
                                         "test": sample, "calibration": None, "curve": []}

    exits_t = [o["exit"] for o in ot]
    flops = [float(e.cumulative_flops or 0) for e in rt.manifest.exits]
    orc = oracle(exits_t, yt, flops)
    orc["mean_layers"] = float(np.dot(orc["exit_fractions"], np.arange(1, n_exits + 1)))

    # latency, measured: every rule's chosen point and the one-graph model, interleaved, batch 1 and batch 16
    rng = np.random.default_rng(0)
    picks = rng.choice(len(xt), size=min(args.latency_samples, len(xt)), replace=False)
    timed = {r: row for r, row in rows.items() if r != "sampling exit (PonderNet)"}

    def runner(row: dict[str, Any], feeds: dict[str, np.ndarray]) -> Any:
        if row["policy"] == "full":
            return lambda: rt.infer(feeds, mode="full")
        pol = create_policy(row["policy"], n_exits, **row["kwargs"])
        return lambda: rt.infer(feeds, policy=pol)

    lat: dict[int, dict[str, list[float]]] = {1: {r: [] for r in timed}, 16: {r: [] for r in timed}}
    for b in (1, 16):
        groups = [picks[i:i + b] for i in range(0, len(picks) - b + 1, b)] if b > 1 else [[i] for i in picks]
        for g in groups:
            feeds = rt.encode_text(list(xt[g])).feeds
            times = interleaved({r: runner(row, feeds) for r, row in timed.items()}, warmup=1, repeats=args.repeats)
            for r, tt in times.items():
                lat[b][r].extend((tt / b).tolist())
    for r in timed:
        for b in (1, 16):
            rows[r][f"latency_b{b}_ms"] = latency_stats(lat[b][r], scale=1e3)
            rows[r][f"speedup_b{b}"] = float(np.mean(lat[b]["one-graph MiniLM"]) / np.mean(lat[b][r]))

    # accuracy at equal mean layers: each rule's test Pareto curve, interpolated at Q-exit's mean layers; past the
    # front's last point the rule's best accuracy (reached with fewer layers); below its first, out of reach
    q_layers = rows["Q-exit (PALBERT)"]["test"]["mean_layers"]
    at_equal: dict[str, float | None] = {}
    for rule in RULES:
        pts = pareto_front([p["test"] for p in rows[rule]["curve"]], lambda p: p["mean_layers"],
                           lambda p: p["accuracy"])
        xs = [p["mean_layers"] for p in pts]
        at_equal[rule] = float(np.interp(q_layers, xs, [p["accuracy"] for p in pts])) \
            if xs and xs[0] <= q_layers else None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"header": header(), "bundle": str(args.bundle), "test_texts": len(xt), "calibration_texts": len(xc),
               "exits": n_exits, "budget_points": args.budget, "threads": args.threads,
               "latency_samples": len(picks), "repeats": args.repeats, "rules": rows, "oracle_test": orc,
               "accuracy_at_q_exit_layers": {"mean_layers": q_layers, "accuracy": at_equal}}
    write_json_atomic(out / "results.json", results)
    write_bytes_atomic(out / "report.md", report(results).encode())
    plot(results, out / "pareto.png")
    print(report(results))
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"# PALBERT Q-exit vs exit rules — {r['bundle']}", "",
             f"{r['test_texts']} test texts ({r['calibration_texts']} calibration); each rule's point: fewest mean "
             f"layers within {r['budget_points']:g} point(s) of the one-graph model on the calibration split. "
             f"Latency: {r['latency_samples']} test texts x {r['repeats']} passes, onnxruntime, {r['threads']} "
             "thread(s), interleaved with the one-graph model; per text (batch 16: batch time / 16).", "",
             "| rule | setting | test accuracy | macro-F1 | mean layers | batch-1 ms | speed-up b1 | batch-16 ms/text "
             "| speed-up b16 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in r["rules"].items():
        t = row["test"]
        setting = "" if row["value"] is None else f"{row['value']:.4g}"
        l1, l16 = row.get("latency_b1_ms"), row.get("latency_b16_ms")
        lines.append(f"| {name} | {setting} | {100 * t['accuracy']:.2f}% | {100 * t['macro_f1']:.2f} | "
                     f"{t['mean_layers']:.2f} | {l1['mean']:.2f} | {row['speedup_b1']:.2f}x | {l16['mean']:.2f} | "
                     f"{row['speedup_b16']:.2f}x |" if l1 else
                     f"| {name} | {setting} | {100 * t['accuracy']:.2f}% | {100 * t['macro_f1']:.2f} | "
                     f"{t['mean_layers']:.2f} | | | | |")
    o = r["oracle_test"]
    lines += ["", f"Oracle (earliest right layer): {100 * o['accuracy']:.2f}% at {o['mean_layers']:.2f} mean layers.",
              "",
              f"Accuracy at Q-exit's mean layers ({r['accuracy_at_q_exit_layers']['mean_layers']:.2f}), each rule's "
              "test curve interpolated:"]
    for name, acc in r["accuracy_at_q_exit_layers"]["accuracy"].items():
        lines.append(f"- {name}: " + ("out of its reach" if acc is None else f"{100 * acc:.2f}%"))
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, row) in enumerate(r["rules"].items()):  # a rule's chosen point (star) in its curve's colour
        color = colors[k % len(colors)]
        if row["curve"]:
            pts = sorted((p["test"]["mean_layers"], p["test"]["accuracy"]) for p in row["curve"])
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", color=color, label=name)
        t = row["test"]
        ax.scatter([t["mean_layers"]], [100 * t["accuracy"]], marker="*", s=120, zorder=3, color=color,
                   label=None if row["curve"] else name)
    o = r["oracle_test"]
    ax.scatter([o["mean_layers"]], [100 * o["accuracy"]], marker="x", s=80, color="black", label="oracle")
    ax.set_xlabel("mean layers executed (test split)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Exit rules on one fine-tuned MiniLM bundle (stars: chosen points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
