"""The one verifier: run exported graphs on the device runtime and compare every output with PyTorch.

``verify_bundle_dir`` checks a bundle's segment chain (every exit) and its one-graph model;
``graph_max_diff`` checks any other graph (a method's extra part) alone against its module.
Both return the max absolute difference (``max_abs_diff``: a NaN or infinity unmatched on the other side is an
infinite difference); the callers compare it with their tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.models.contract import EarlyExitModel, as_tuple
from edge_runtime.backends import create_backend
from edge_runtime.bundle import Bundle
from edge_runtime.errors import ExportError
from edge_runtime.executor import GraphRunner
from edge_runtime.manifest import EXIT_OUTPUT, GraphSpec, Manifest
from edge_runtime.runtime import Runtime


def staged_bundle(root: Path, manifest: Mapping[str, Any]) -> Bundle:
    """A bundle being written (its manifest dict validated and typed, its files in ``root``)."""
    return Bundle(root=root, manifest=Manifest.from_dict(dict(manifest), path=root / "manifest.json"))


def model_feeds(manifest: Mapping[str, Any], x: Any) -> dict[str, np.ndarray]:
    """The bundle's named model inputs for a PyTorch example (tensor or tuple)."""
    names = [i["name"] for i in manifest["inputs"]]
    return {n: t.detach().cpu().numpy() for n, t in zip(names, as_tuple(x))}


def verify_bundle_dir(model: EarlyExitModel, root: Path, manifest: Mapping[str, Any], inputs: Sequence[Any], *,
                      backend: str = "onnxruntime", precision: str = "fp32",
                      stats: dict[str, Any] | None = None) -> tuple[list[float], float | None]:
    """Run the bundle's segment chain (and one-graph model) on ``inputs`` and compare every exit output with
    PyTorch. Returns (max abs diff per exit over all its outputs, full-model max abs diff).

    Args:
        inputs: model inputs (tensors, or tuples of tensors for a model with several inputs).
        stats: filled with ``scale`` (max |PyTorch output| per exit) and ``agreement`` (fraction of samples whose
            argmax matches PyTorch's, per exit; None for an exit whose output is not class scores, e.g. a
            denoiser's noise estimate), what a reduced-precision variant is judged by.
    """
    per_output, full_diff = verify_exit_outputs(model, root, manifest, inputs, backend=backend, precision=precision,
                                                stats=stats)
    return [max(d.values()) for d in per_output], full_diff


def verify_exit_outputs(model: EarlyExitModel, root: Path, manifest: Mapping[str, Any], inputs: Sequence[Any], *,
                        backend: str = "onnxruntime", precision: str = "fp32",
                        stats: dict[str, Any] | None = None) -> tuple[list[dict[str, float]], float | None]:
    """Like :func:`verify_bundle_dir`, per named output of every exit: ``[{"exit": d, <extra>: d, ...}, ...]``
    (a head returning ``(exit, *extras)`` has its extras, e.g. an uncertainty score, checked too).

    Args:
        stats: as in :func:`verify_bundle_dir` (scale and agreement of each exit's ``exit`` output).
    """
    rt = Runtime(staged_bundle(root, manifest), create_backend(backend, threads=1), precision=precision,
                 check_range=False)   # random verification inputs lie outside the data's range on purpose
    diffs: list[dict[str, float]] = [{} for _ in range(model.num_exits)]
    scale = [0.0] * model.num_exits
    same = [0] * model.num_exits
    scores = [True] * model.num_exits   # the exit's output is class scores, (N, classes): agreement is defined
    seen = 0
    full_diff: float | None = 0.0 if rt.has_full_model else None
    with torch.no_grad():
        for x in inputs:
            ref = model(*as_tuple(x))
            feeds = model_feeds(manifest, x)
            got = rt.segment_outputs(feeds)
            seen += len(as_tuple(ref[0])[0])
            for i, (r, g) in enumerate(zip(ref, got)):
                names = model.exit_names(i, r)
                for name, t in zip(names, as_tuple(r)):
                    d = _max_abs(t.numpy(), g[name], f"exit {i} output {name!r}")
                    diffs[i][name] = max(diffs[i].get(name, 0.0), d)
                e = as_tuple(r)[0].numpy()
                scale[i] = max(scale[i], float(np.max(np.abs(e))) if e.size else 0.0)
                scores[i] = scores[i] and e.ndim == 2
                if e.ndim == 2:
                    same[i] += int((e.argmax(-1) == g[names[0]].argmax(-1)).sum())
            if rt.full_model_runner is not None:  # the graph itself: the 'full' mode serves class scores only
                full = rt.full_model_runner.run(feeds)[EXIT_OUTPUT]
                full_diff = max(full_diff or 0.0, _max_abs(as_tuple(ref[-1])[0].numpy(), full, "full model"))
    if stats is not None:
        stats["scale"] = scale
        stats["agreement"] = [s / max(seen, 1) if c else None for s, c in zip(same, scores)]
    return diffs, full_diff


def graph_max_diff(module: nn.Module, root: Path, graph: GraphSpec | Mapping[str, Any], inputs: Sequence[Any],
                   *, fmt: str = "onnx", precision: str = "fp32", field: str = "graph",
                   prepare: Callable[[Any], Any] | None = None) -> float:
    """One graph's files of ``fmt``/``precision`` alone, against ``module`` on ``inputs`` (max abs diff over
    every output the module returns).

    Args:
        module: the PyTorch module the graph was exported from.
        graph: the graph's manifest record.
        inputs: one tensor per case, or a tuple of tensors for a graph with several inputs (in the graph's input
            order, passed to ``module`` positionally).
        prepare: maps each of ``inputs`` to the graph's input(s) (e.g. model inputs to a part's own input).
    """
    spec = graph if isinstance(graph, GraphSpec) else GraphSpec.from_dict(graph)
    be = create_backend({"onnx": "onnxruntime", "tflite": "litert"}[fmt], threads=1)
    files = [f for f in spec.files if f.format == fmt and f.precision == precision]
    if not files:
        raise ExportError(f"{field}: no {fmt}/{precision} file to verify")
    runner = GraphRunner([be.load(root / f.path) for f in files], field)
    worst = 0.0
    names = spec.output_names or runner.output_names
    with torch.no_grad():
        for x in inputs:
            args = as_tuple(prepare(x) if prepare is not None else x)
            ref = as_tuple(module(*args))
            got = runner.run(dict(zip(spec.input_names or runner.input_names, (a.numpy() for a in args))))
            for name, r in zip(names, ref):
                worst = max(worst, _max_abs(r.numpy(), got[name], f"{field} output {name!r}"))
    return worst


def _max_abs(ref: np.ndarray, got: np.ndarray, what: str) -> float:
    if ref.shape != got.shape:
        raise ExportError(f"{what}: exported output shape {got.shape} != PyTorch {ref.shape}")
    return max_abs_diff(ref, got)


def max_abs_diff(ref: Any, got: Any) -> float:
    """The max absolute difference of two same-shape arrays, where a NaN or infinity on one side that the other
    side does not have at the same place (NaN for NaN, the same infinity) counts as an infinite difference, so a
    tolerance check fails on it (a plain ``max`` would read NaN as 0.0, and ``nan > tol`` is False).
    Returns 0.0 for empty arrays."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(got, dtype=np.float64)
    if not a.size:
        return 0.0
    finite = np.isfinite(a) & np.isfinite(b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not np.all(finite | same):
        return float("inf")
    return float(np.max(np.abs(a[finite] - b[finite]))) if finite.any() else 0.0
