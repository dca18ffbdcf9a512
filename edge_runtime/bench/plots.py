"""The report's PNG plots, drawn from results.json only (matplotlib, Agg; imported on first use)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

_MARKERS = {  # kind -> (marker, colour, size); any other row kind (a method's mode) gets the next of _OTHER
    "full": ("s", "black", 70), "never": ("x", "dimgray", 60), "early_exit": ("*", "crimson", 180),
    "oracle": ("D", "purple", 60), "torch_eager": ("P", "saddlebrown", 70),
}
_OTHER = [("^", "seagreen", 90), ("v", "darkorange", 90), ("<", "teal", 90), (">", "olive", 90)]


def _marker(kind: str, others: dict[str, tuple[str, str, int]]) -> tuple[str, str, int]:
    if kind in _MARKERS:
        return _MARKERS[kind]
    if kind not in others:
        others[kind] = _OTHER[len(others) % len(_OTHER)]
    return others[kind]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rows(results: dict[str, Any], kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    return [r for r in results["configs"] if kinds is None or r["kind"] in kinds]


def _tradeoff(results: dict[str, Any], path: Path, cost: Callable[[dict[str, Any]], float | None], xlabel: str,
              front_key: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.6))
    have = [r for r in results["configs"] if cost(r) is not None]
    if not have:
        ax.text(0.5, 0.5, "not measured in this run\n(see the report's notes)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        sweep = [r for r in have if r["kind"] == "sweep"]
        if sweep:
            ax.scatter([cost(r) for r in sweep], [100 * r["accuracy"] for r in sweep], color="lightsteelblue",
                       s=25, label="threshold sweep", zorder=2)
        by_name = {r["name"]: r for r in have}
        front = [by_name[n] for n in results["pareto_front"].get(front_key) or [] if n in by_name]
        if len(front) > 1:
            ax.plot([cost(r) for r in front], [100 * r["accuracy"] for r in front], color="steelblue", lw=1.5,
                    label="Pareto front", zorder=3)
        others: dict[str, tuple[str, str, int]] = {}
        for r in have:
            if r["kind"] in ("sweep",):
                continue
            marker, colour, size = _marker(r["kind"], others)
            variant = "@" in r["name"]
            ax.scatter([cost(r)], [100 * r["accuracy"]], marker=marker, s=size * (0.6 if variant else 1.0),
                       color=colour, alpha=0.55 if variant else 1.0, zorder=4,
                       label=r["label"] + (f" {r['name'].split('@')[1]}" if variant else ""),
                       facecolors="none" if r["kind"] == "oracle" else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{results['header']['bundle']['name']}: accuracy vs {xlabel.split(' (')[0]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_vs_latency(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs mean batch-1 latency: sweep, Pareto front, calibrated point, full model, methods' modes, oracle."""
    _tradeoff(results, path, lambda r: (r.get("latency_ms") or {}).get("mean"), "mean latency at batch 1 (ms)",
              "latency")


def accuracy_vs_energy(results: dict[str, Any], path: Path) -> None:
    """Accuracy vs energy per inference (batch 1), same markers; a placeholder when energy was not measured."""
    _tradeoff(results, path, lambda r: None if r["energy"]["per_inference_j"] is None
              else 1e3 * r["energy"]["per_inference_j"], "energy per inference (mJ)", "energy")


def exit_histogram(results: dict[str, Any], path: Path) -> None:
    """Fraction of samples answered at each exit: calibrated early exit, the sweep's front, the oracle."""
    import numpy as np

    plt = _pyplot()
    rows = _rows(results, ("early_exit", "oracle", "never"))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    n_exits = len(rows[0]["exit_histogram"]) if rows else 0
    width = 0.8 / max(1, len(rows))
    for k, r in enumerate(rows):
        h = np.asarray(r["exit_histogram"], dtype=float)
        ax.bar(np.arange(n_exits) + k * width, h / max(1.0, h.sum()), width=width, label=r["label"] +
               (f" {r['name'].split('@')[1]}" if "@" in r["name"] else ""))
    ax.set_xticks(np.arange(n_exits) + 0.4 - width / 2)
    ax.set_xticklabels([f"exit {i}" for i in range(n_exits)])
    ax.set_ylabel("fraction of samples")
    ax.set_title("where samples leave", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def segment_latency(results: dict[str, Any], path: Path) -> None:
    """Mean batch-1 latency per row, stacked by segment (or by a method's parts; one-graph rows as one bar)."""
    plt = _pyplot()
    rows = [r for r in results["configs"] if r["kind"] != "sweep" and r.get("latency_ms")]
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(rows) + 1.6))
    cmap = plt.get_cmap("viridis")
    n_seg = results["header"]["bundle"].get("num_segments") or 1
    labels, seen = [], set()

    def once(name: str) -> str | None:
        if name in seen:
            return None
        seen.add(name)
        return name

    for y, r in enumerate(rows):
        labels.append(r["name"])
        hatch = None if r["measured"] else "//"
        if r.get("per_segment_ms"):
            pieces = [(f"segment {i}", v, cmap(i / max(1, n_seg - 1)), hatch)
                      for i, v in enumerate(r["per_segment_ms"])]
        else:  # a method's mode: its parts in the order they ran
            pieces = [(part, v, ("tab:orange", "tab:green", "tab:red")[k % 3], None)
                      for k, (part, v) in enumerate((r.get("per_part_ms") or {}).items())]
        if pieces:
            left = 0.0
            for name, v, color, h in pieces:
                ax.barh(y, v, left=left, color=color, hatch=h, label=once(name))
                left += v
            rest = r["latency_ms"]["mean"] - left
            if rest > 0:
                ax.barh(y, rest, left=left, color="lightgray", label=once("outside segments"))
        else:
            ax.barh(y, r["latency_ms"]["mean"], color="gray", alpha=0.7, label=once("not segmented"))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean latency at batch 1 (ms)")
    ax.set_title("per-segment (or per-part) latency; gray: one graph", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speedup_vs_batch(results: dict[str, Any], path: Path) -> None:
    """Throughput speed-up against the one-graph model at each batch size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for r in results["configs"]:
        if r["kind"] in ("sweep", "full", "oracle"):
            continue
        pts = [(t["batch_size"], t["speedup_vs_full"]) for t in r["throughput"] if t["speedup_vs_full"] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=r["name"])
    ax.axhline(1.0, color="black", lw=0.8, ls="--", label="full model (one graph)")
    ax.set_xscale("log", base=2)
    sizes = results["settings"]["batch_sizes"]
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput / full model's")
    ax.set_title("speed-up vs batch size (shrinking batch)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: file name -> (title, drawing function); the report embeds them in this order
PLOTS: dict[str, tuple[str, Callable[[dict[str, Any], Path], None]]] = {
    "accuracy_vs_latency.png": ("Accuracy vs latency", accuracy_vs_latency),
    "accuracy_vs_energy.png": ("Accuracy vs energy", accuracy_vs_energy),
    "exit_histogram.png": ("Exit histogram", exit_histogram),
    "segment_latency.png": ("Per-segment latency", segment_latency),
    "speedup_vs_batch.png": ("Speed-up vs batch size", speedup_vs_batch),
}


def draw_all(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw every plot into ``out_dir``; returns the file names written."""
    written = []
    for name, (_, fn) in PLOTS.items():
        fn(results, out_dir / name)
        written.append(name)
    return written
