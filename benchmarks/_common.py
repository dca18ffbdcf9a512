"""Benchmark-only helpers: the round-robin timer and the results header. Statistics, machine and package
records and JSON writing come from the library (``edge_runtime.bench``, ``edge_runtime.files``), so a
benchmark's JSON has the same keys as ``edge-runtime bench``'s results.json."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench.results import machine_info, package_versions


def header() -> dict[str, Any]:
    """What ran the benchmark and when: ``machine`` and ``packages`` as in results.json's header, ``created``."""
    return {"machine": machine_info(), "packages": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


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


def build_recipe(recipe: Path, out: Path, rebuild: bool, **convert_kwargs: Any) -> Path:
    """Convert ``recipe`` as it is into ``out`` unless a bundle is there already (or ``rebuild``); prints the time."""
    if out.is_dir() and not rebuild:
        return out
    from converters import convert

    print(f"converting {recipe.name} into {out} ...", flush=True)
    start = time.perf_counter()
    convert(recipe, out, overwrite=True, **convert_kwargs)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return out
