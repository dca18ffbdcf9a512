"""The optional PyTorch-eager row of ``edge-runtime bench``: the source model run by torch itself (needs torch).

Loaded through :func:`converters.pipeline.bench_rows.torch_eager_rows` only when ``--torch-checkpoint`` is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters.models.contract import EarlyExitModel, FullModel
from converters.pipeline.convert import build_model
from converters.recipe import parse_recipe
from edge_runtime.bench.configs import BenchConfig
from edge_runtime.errors import ConfigError
from edge_runtime.manifest import Manifest


@dataclass
class EagerResult:
    """The fields the benchmark reads from an inference result."""

    predictions: np.ndarray
    exit_index: np.ndarray
    segment_latency_s: np.ndarray
    segment_batch_size: np.ndarray
    latency_s: float
    energy_j: float | None = None
    energy_source: str | None = None
    sample_energy_j: np.ndarray | None = None


def load_source_model(manifest: Manifest, checkpoint: str | Path) -> EarlyExitModel:
    """Rebuild the bundle's model from its resolved recipe and load ``checkpoint`` (a state_dict, or a
    training checkpoint holding one under ``model``)."""
    recipe_data = manifest.recipe
    if not recipe_data:
        raise ConfigError("the bundle's manifest has no 'recipe' section: the source model cannot be rebuilt")
    recipe = parse_recipe(recipe_data)
    model = build_model(recipe)
    p = Path(checkpoint)
    if not p.is_file():
        raise ConfigError(f"--torch-checkpoint: {p} is not a file")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"--torch-checkpoint: {p} does not fit the bundle's model ({str(exc).splitlines()[0]})") \
            from None
    return model.eval()


def eager_config(ctx: Any, checkpoint: str | Path) -> BenchConfig:
    """The PyTorch-eager full-model row (same data, same interleaving as the onnxruntime rows)."""
    rt = ctx.primary
    model = FullModel(load_source_model(rt.manifest, checkpoint)).eval()
    threads = ctx.options.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    n_seg = len(rt.segments)
    last = rt.num_exits - 1

    def run(x: np.ndarray) -> EagerResult:
        meter = rt.meter  # the same energy meter as the other rows, when one is attached
        token = meter.start_window() if meter is not None else None
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(torch.from_numpy(x)).numpy()
        dt = time.perf_counter() - t0
        res = EagerResult(out.argmax(axis=-1), np.full(len(x), last), np.zeros(n_seg), np.zeros(n_seg, np.int64), dt)
        if meter is not None:
            meter.finish_window(token, res)
        return res

    return BenchConfig(name="torch_eager", kind="torch_eager", label=f"PyTorch eager {torch.__version__} (optional)",
                       run=run, backend="torch", precision="fp32",
                       notes="the source model in PyTorch eager mode, full model; optional row")
