"""Shared benchmark helpers: interleaved timing, percentiles, machine header, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def machine_header() -> dict[str, Any]:
    """What ran the benchmark, for the report header."""
    import onnxruntime

    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.uname().processor,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int) -> dict[str, np.ndarray]:
    """Time each function ``repeats`` times, round-robin so drift hits all equally; seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    clock = time.perf_counter
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def summarize(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    return {
        "mean_ms": float(a.mean() * 1e3),
        "p50_ms": float(np.percentile(a, 50) * 1e3),
        "p95_ms": float(np.percentile(a, 95) * 1e3),
        "p99_ms": float(np.percentile(a, 99) * 1e3),
        "n": int(a.size),
    }


def write_json(path: str | Path | None, data: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
