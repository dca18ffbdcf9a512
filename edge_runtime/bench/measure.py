"""Interleaved measurement: every configuration runs the same inputs, round-robin, so drift hits all equally."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.bench.configs import BenchConfig


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure.

    Attributes:
        batch_sizes: throughput batch sizes (batch 1 is always measured: it gives latency and accuracy).
        warmup: untimed calls per configuration before each batch size's timed calls.
        repeats: passes over the data at batch 1.
        min_batches: at larger batch sizes, repeat passes until each configuration ran at least this many batches.
        progress: show a tqdm progress bar.
    """

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    warmup: int = 20
    repeats: int = 1
    min_batches: int = 16
    progress: bool = True


def latency_stats(seconds_or_ms: Sequence[float], *, scale: float = 1.0) -> dict[str, float]:
    """mean/p50/p95/p99 (and n) of a latency sample, in ms after multiplying by ``scale``."""
    a = np.asarray(seconds_or_ms, dtype=np.float64) * scale
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "n": int(a.size)}


class _Tracker:
    """Accumulates one configuration's calls at one batch size."""

    def __init__(self, n_segments: int) -> None:
        self.times: list[float] = []
        self.samples = 0
        self.preds: list[np.ndarray] = []
        self.exits: list[np.ndarray] = []
        self.seg = np.zeros(n_segments)
        self.parts: dict[str, float] = {}
        self.energy = 0.0
        self.energy_calls = 0
        self.energy_source: str | None = None
        self.rss = 0


def measure(configs: list[BenchConfig], x: np.ndarray, y: np.ndarray, settings: MeasureSettings,
            n_segments: int, n_exits: int) -> dict[str, dict[str, Any]]:
    """Measure every configuration on ``x``; returns per configuration name its results.json fields.

    Batch 1: each sample once per repeat, configurations interleaved per sample (the order rotates), wall
    time around each call: latency percentiles, accuracy, exit histogram, per-segment latency, energy.
    Larger batch sizes: consecutive full batches of the data, interleaved per batch: throughput (and energy).
    """
    import psutil

    proc = psutil.Process()
    sizes = sorted(set([1, *settings.batch_sizes]))
    plan = {b: _batches(len(x), b, settings.repeats if b == 1 else None, settings.min_batches) for b in sizes}
    total = sum(len(configs) * (len(p) + min(settings.warmup, len(p))) for p in plan.values())
    bar = _progress(total, settings.progress)
    per_b: dict[int, dict[str, _Tracker]] = {}
    clock = time.perf_counter
    for b in sizes:
        trackers = {c.name: _Tracker(n_segments) for c in configs}
        batches = plan[b]
        if bar is not None:
            bar.set_description(f"bench batch {b}")
        for j in range(min(settings.warmup, len(batches))):
            for c in configs:
                c.run(x[batches[j]])
                _tick(bar)
        for j, idx in enumerate(batches):
            xb = x[idx]
            k = j % len(configs)
            for c in configs[k:] + configs[:k]:
                t0 = clock()
                res = c.run(xb)
                dt = clock() - t0
                t = trackers[c.name]
                t.times.append(dt)
                t.samples += len(idx)
                if b == 1:
                    t.preds.append(np.asarray(res.predictions))
                    t.exits.append(np.asarray(res.exit_index))
                    if c.segmented:
                        t.seg += np.asarray(res.segment_latency_s, dtype=np.float64)
                    for part, sec in (getattr(res, "part_latency_s", None) or {}).items():  # a method mode's parts
                        t.parts[part] = t.parts.get(part, 0.0) + float(sec)
                if res.energy_j is not None:
                    t.energy += float(res.energy_j)
                    t.energy_calls += 1
                    t.energy_source = res.energy_source
                t.rss = max(t.rss, proc.memory_info().rss)
                _tick(bar)
        per_b[b] = trackers
    if bar is not None:
        bar.close()
    return {c.name: _summarize(c, per_b, plan[1], y, n_exits) for c in configs}


def _batches(n: int, b: int, repeats: int | None, min_batches: int) -> list[np.ndarray]:
    """Index arrays of consecutive full batches; the data is cycled when it holds fewer than ``b`` samples."""
    if b == 1:
        return [np.array([i]) for _ in range(max(1, repeats or 1)) for i in range(n)]
    per_pass = max(1, n // b)
    passes = max(1, -(-min_batches // per_pass))
    out = []
    for _ in range(passes):
        for j in range(per_pass):
            out.append(np.arange(j * b, (j + 1) * b) % n)
    return out


def _summarize(c: BenchConfig, per_b: dict[int, dict[str, _Tracker]], b1_plan: list[np.ndarray], y: np.ndarray,
               n_exits: int) -> dict[str, Any]:
    t1 = per_b[1][c.name]
    preds = np.concatenate(t1.preds)
    exits = np.concatenate(t1.exits)
    labels = np.concatenate([y[i] for i in b1_plan])
    calls = len(t1.times)
    energy = None
    if t1.energy_calls == calls and calls:
        energy = t1.energy / t1.samples
    throughput = []
    for b, trackers in sorted(per_b.items()):
        t = trackers[c.name]
        e = t.energy / t.samples if t.energy_calls == len(t.times) and t.times else None
        throughput.append({"batch_size": b, "samples_per_s": t.samples / float(np.sum(t.times)),
                           "energy_per_inference_j": e})
    return {
        "accuracy": float((preds == labels).mean()),
        "n_samples": int(len(preds)),
        "latency_ms": latency_stats(t1.times, scale=1e3),
        "throughput": throughput,
        "exit_histogram": np.bincount(np.clip(exits, 0, n_exits - 1), minlength=n_exits).tolist(),
        "per_segment_ms": (t1.seg / calls * 1e3).tolist() if c.segmented else None,
        "per_part_ms": {k: v / calls * 1e3 for k, v in t1.parts.items()} or None,
        "energy": {"per_inference_j": energy, "source": t1.energy_source if energy is not None else None},
        "peak_rss_mb": max(t.rss for tr in per_b.values() for n, t in tr.items() if n == c.name) / 2**20,
    }


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="call", leave=False, dynamic_ncols=True)


def _tick(bar: Any) -> None:
    if bar is not None:
        bar.update(1)
