"""Synthetic bundles built with numpy alone (no torch, no onnx package): for device-side tests and micro-benchmarks.

The graphs are written by :mod:`edge_runtime._onnx_proto`. Each segment is ``hidden = Relu(prev @ W_i)`` with
an exit head ``exit = hidden @ H_i``, so every exit output is known in closed form (:func:`reference_exits`)
and a test can check the executor, the policies and the daemon against numpy on any machine — a Pi included.

Example:
    >>> import tempfile, numpy as np
    >>> root = write_synthetic_bundle(tempfile.mkdtemp() + "/b", num_exits=3)
    >>> import edge_runtime
    >>> rt = edge_runtime.load_bundle(root)
    >>> rt.infer(np.zeros((2, 8), np.float32)).exit_index.shape
    (2,)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import _onnx_proto as P
from edge_runtime.files import replace_dir, sha256_file, staging_dir
from edge_runtime.manifest import EXIT_OUTPUT, FORMAT_NAME, FORMAT_VERSION, write_manifest


def synthetic_weights(num_exits: int, features: int, classes: int,
                      seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per segment, ``(W, H)``: the backbone matrix (features x features) and the exit head (features x classes)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((features, features)).astype(np.float32) / np.sqrt(features),
             rng.standard_normal((features, classes)).astype(np.float32)) for _ in range(num_exits)]


def reference_exits(x: np.ndarray, weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Every exit's output for ``x``, computed with numpy (what the bundle's graphs must give)."""
    out, h = [], np.asarray(x, np.float32)
    for w, head in weights:
        h = np.maximum(h @ w, 0.0).astype(np.float32)
        out.append((h @ head).astype(np.float32))
    return out


def write_synthetic_bundle(out: str | Path, *, num_exits: int = 3, features: int = 8, classes: int = 4,
                           seed: int = 0, policy: str = "entropy", policy_kwargs: dict[str, Any] | None = None,
                           thresholds: Sequence[float] | None = None, full_model: bool = True,
                           name: str = "synthetic", overwrite: bool = False) -> Path:
    """Write a valid bundle of ``num_exits`` segments (dynamic batch, float32 input of ``features``).

    Args:
        out: the bundle directory to create (atomically).
        num_exits: segments = exits.
        features: input and hidden width; classes: exit output width.
        seed: the weights' seed (:func:`synthetic_weights`).
        policy, policy_kwargs, thresholds: the manifest's policy (thresholds default: one per non-final exit,
            entropy 0.5).
        full_model: also write the one-graph model.
    """
    weights = synthetic_weights(num_exits, features, classes, seed)
    thr = list(thresholds) if thresholds is not None else ([0.5] * (num_exits - 1) if policy == "entropy" else [])
    with staging_dir(out) as root:
        (root / "segments").mkdir()
        segments, exits = [], []
        prev = "input"
        for i, (w, head) in enumerate(weights):
            last = i == num_exits - 1
            hidden = f"hidden_{i}"
            nodes = [P.node("MatMul", [prev, f"w{i}"], [f"pre{i}"]), P.node("Relu", [f"pre{i}"], [hidden]),
                     P.node("MatMul", [hidden, f"head{i}"], [EXIT_OUTPUT])]
            outs = [P.value_info(EXIT_OUTPUT, ["N", classes])]
            tensors = [{"name": EXIT_OUTPUT, "shape": [None, classes], "dtype": "float32"}]
            if not last:
                outs.insert(0, P.value_info(hidden, ["N", features]))
                tensors.insert(0, {"name": hidden, "shape": [None, features], "dtype": "float32"})
            graph = P.model(nodes, [P.value_info(prev, ["N", features])], outs,
                            [P.tensor(f"w{i}", w), P.tensor(f"head{i}", head)])
            path = root / "segments" / f"segment_{i}.onnx"
            path.write_bytes(graph)
            flops = 2 * features * (features + classes)
            segments.append({"index": i, "files": [_entry(path, root)],
                             "inputs": [{"name": prev, "shape": [None, features], "dtype": "float32"}],
                             "outputs": tensors, "flops": flops, "params": int(w.size + head.size),
                             "op_counts": {"MatMul": 2, "Relu": 1}, "flops_by_op": {"conv": 0, "matmul": flops}})
            exits.append({"index": i, "segment": i, "head_type": "linear", "output_kind": "logits",
                          "cumulative_flops": flops * (i + 1)})
            prev = hidden
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name,
            "inputs": [{"name": "input", "shape": [None, features], "dtype": "float32", "layout": "N..."}],
            "labels": [f"class_{k}" for k in range(classes)], "segments": segments, "exits": exits,
            "policy": {"name": policy, "kwargs": dict(policy_kwargs or {}), "thresholds": thr},
            "verification": {"tolerance": 1e-5, "batch_sizes": [1], "passed": True,
                             "exits": [{"index": i, "max_abs_diff": 0.0} for i in range(num_exits)]},
            "created": {"tool_version": "synthetic"},
        }
        if full_model:
            nodes, h = [], "input"
            for i in range(num_exits):
                nodes += [P.node("MatMul", [h, f"w{i}"], [f"pre{i}"]), P.node("Relu", [f"pre{i}"], [f"h{i}"])]
                h = f"h{i}"
            nodes.append(P.node("MatMul", [h, f"head{num_exits - 1}"], [EXIT_OUTPUT]))
            inits = [P.tensor(f"w{i}", w) for i, (w, _) in enumerate(weights)]
            inits.append(P.tensor(f"head{num_exits - 1}", weights[-1][1]))
            path = root / "full_model.onnx"
            path.write_bytes(P.model(nodes, [P.value_info("input", ["N", features])],
                                     [P.value_info(EXIT_OUTPUT, ["N", classes])], inits))
            manifest["full_model"] = {"files": [_entry(path, root)], "flops": 2 * features * features * num_exits
                                      + 2 * features * classes, "params": sum(w.size for w, _ in weights)
                                      + int(weights[-1][1].size), "output": EXIT_OUTPUT}
        write_manifest(root, manifest)
        replace_dir(root, out, overwrite=overwrite)
    return Path(out)


def _entry(path: Path, root: Path) -> dict[str, Any]:
    return {"format": "onnx", "path": path.relative_to(root).as_posix(), "sha256": sha256_file(path),
            "batch_size": None, "precision": "fp32", "bytes": path.stat().st_size}
