"""Synthetic bundles built with numpy alone (no torch, no onnx package): for device-side tests and micro-benchmarks.

The graphs are written by :mod:`edge_runtime._onnx_proto`. Each segment is ``hidden = Relu(prev @ W_i)`` with
an exit head ``exit = hidden @ H_i``, so every exit output is known in closed form (:func:`reference_exits`)
and a test can check the executor, the policies and the daemon against numpy on any machine — a Pi included.

Options exercise what real exports produce: ``skip=True`` makes every cut carry two named tensors (``hidden_i``
and ``skip_i``, a projection of the previous hidden state that the next segment adds in); ``aux_input=True``
adds a second model input ``aux`` that only the final segment reads (so the executor must carry a model input
across every cut); ``batch_sizes`` adds fixed-batch files and ``dynamic_batch=False`` leaves the dynamic one
out (so a batch runs as chunks of the fixed sizes).

Example:
    >>> import tempfile, numpy as np
    >>> root = write_synthetic_bundle(tempfile.mkdtemp() + "/b", num_exits=3)
    >>> import edge_runtime
    >>> rt = edge_runtime.load_bundle(root)
    >>> rt.infer(np.zeros((2, 8), np.float32)).exit_index.shape
    (2,)
    >>> x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    >>> ref = reference_exits(x, synthetic_weights(3, 8, 4))
    >>> bool(np.allclose(rt.exit_outputs(x)[2], ref[2], atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import _onnx_proto as P
from edge_runtime.files import replace_dir, sha256_file, staging_dir
from edge_runtime.manifest import EXIT_OUTPUT, FORMAT_NAME, FORMAT_VERSION, write_manifest

#: the model inputs' names: the main input, and the optional one only the final segment reads
INPUT, AUX = "input", "aux"


@dataclass(frozen=True)
class SegmentWeights:
    """One segment's weights: backbone ``w`` (F, F), exit head ``head`` (F, C), and ``skip`` (F, F) when the cuts
    carry a second tensor (``skip_i = hidden_{i-1} @ skip``; segment 0 projects the input)."""

    w: np.ndarray
    head: np.ndarray
    skip: np.ndarray | None = None


def synthetic_weights(num_exits: int, features: int, classes: int, seed: int = 0, *,
                      skip: bool = False) -> list[SegmentWeights]:
    """Per segment, the weights a synthetic bundle of these settings holds (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    scale = np.float32(1.0 / np.sqrt(features))  # float32 throughout: the arrays are the files' exact weights
    pairs = [(rng.standard_normal((features, features)).astype(np.float32) * scale,
              rng.standard_normal((features, classes)).astype(np.float32)) for _ in range(num_exits)]
    skip_rng = np.random.default_rng([seed, 1])  # its own stream: W and H do not depend on ``skip``
    return [SegmentWeights(w, head, skip_rng.standard_normal((features, features)).astype(np.float32) * scale
                           if skip else None) for w, head in pairs]


def reference_exits(inputs: np.ndarray | Mapping[str, np.ndarray],
                    weights: Sequence[SegmentWeights]) -> list[np.ndarray]:
    """Every exit's output, computed with numpy (what the bundle's graphs must give).

    Args:
        inputs: the ``input`` array, or the named model inputs (``input``, and ``aux`` for an ``aux_input`` bundle).
        weights: :func:`synthetic_weights` of the bundle's settings.
    """
    named = dict(inputs) if isinstance(inputs, Mapping) else {INPUT: inputs}
    x = np.asarray(named[INPUT], np.float32)
    aux = named.get(AUX)
    out: list[np.ndarray] = []
    h, s = x, None
    for i, seg in enumerate(weights):
        pre = h @ seg.w
        if s is not None:
            pre = pre + s
        new_h = np.maximum(pre, 0.0).astype(np.float32)
        s = (h @ seg.skip).astype(np.float32) if seg.skip is not None else None
        h = new_h
        if i == len(weights) - 1 and aux is not None:
            h = (h + np.asarray(aux, np.float32)).astype(np.float32)
        out.append((h @ seg.head).astype(np.float32))
    return out


def _segment_graph(i: int, seg: SegmentWeights, last: bool, aux: bool, names: Mapping[str, str], *, prefix: str = "",
                   with_exit: bool = True) -> tuple[list[bytes], list[bytes], list[str], dict[str, str]]:
    """Segment i as ONNX nodes: reads ``names`` (``hidden``, and ``skip`` when the cut carries it: the previous cut's
    tensors, or the model input) and returns (nodes, initializers, op types, the names it writes). ``prefix`` keeps
    the one-graph model's intermediate names apart; ``with_exit=False`` leaves the exit head out."""
    nodes: list[bytes] = []
    ops: list[str] = []
    inits = [P.tensor(f"{prefix}w{i}", seg.w)]

    def add(op: str, inputs: list[str], output: str) -> str:
        nodes.append(P.node(op, inputs, [output]))
        ops.append(op)
        return output

    h_in, s_in = names["hidden"], names.get("skip")
    pre = add("MatMul", [h_in, f"{prefix}w{i}"], f"{prefix}pre{i}")
    if s_in is not None:
        pre = add("Add", [pre, s_in], f"{prefix}pre{i}_skip")
    hidden = add("Relu", [pre], f"{prefix}hidden_{i}")
    written = {"hidden": hidden}
    if seg.skip is not None and not last:
        inits.append(P.tensor(f"{prefix}skipw{i}", seg.skip))
        written["skip"] = add("MatMul", [h_in, f"{prefix}skipw{i}"], f"{prefix}skip_{i}")
    if last and aux:
        hidden = add("Add", [hidden, AUX], f"{prefix}hidden_{i}_aux")
    if with_exit:
        inits.append(P.tensor(f"{prefix}head{i}", seg.head))
        add("MatMul", [hidden, f"{prefix}head{i}"], EXIT_OUTPUT)
    return nodes, inits, ops, written


def write_synthetic_bundle(out: str | Path, *, num_exits: int = 3, features: int = 8, classes: int = 4,
                           seed: int = 0, policy: str = "entropy", policy_kwargs: dict[str, Any] | None = None,
                           thresholds: Sequence[float] | None = None, full_model: bool = True,
                           name: str = "synthetic", overwrite: bool = False, skip: bool = False,
                           aux_input: bool = False, batch_sizes: Sequence[int] = (),
                           dynamic_batch: bool = True) -> Path:
    """Write a valid bundle of ``num_exits`` segments (float32 input of ``features``).

    Args:
        out: the bundle directory to create (atomically).
        num_exits: segments = exits.
        features: input and hidden width; classes: exit output width.
        seed: the weights' seed (:func:`synthetic_weights`).
        policy, policy_kwargs, thresholds: the manifest's policy (thresholds default: one per non-final exit,
            entropy 0.5).
        full_model: also write the one-graph model.
        skip: every cut carries two tensors, ``hidden_i`` and ``skip_i``.
        aux_input: a second model input ``aux`` (N, features), read by the final segment only (needs 2+ exits).
        batch_sizes: also write fixed-batch files of these sizes for every graph.
        dynamic_batch: write the dynamic-batch file of every graph (False needs ``batch_sizes``).

    Raises:
        ValueError: ``aux_input`` with one exit, or no file at all (``dynamic_batch=False`` without sizes).
    """
    if aux_input and num_exits < 2:
        raise ValueError("aux_input needs at least 2 exits (the final segment reads it, not the first)")
    if not dynamic_batch and not batch_sizes:
        raise ValueError("dynamic_batch=False needs batch_sizes (every graph needs a file)")
    weights = synthetic_weights(num_exits, features, classes, seed, skip=skip)
    thr = list(thresholds) if thresholds is not None else ([0.5] * (num_exits - 1) if policy == "entropy" else [])
    variants: list[int | None] = ([None] if dynamic_batch else []) + [int(b) for b in batch_sizes]
    with staging_dir(out) as root:
        (root / "segments").mkdir()
        segments: list[dict[str, Any]] = []
        exits: list[dict[str, Any]] = []
        names = {"hidden": INPUT}
        for i, seg in enumerate(weights):
            last = i == num_exits - 1
            nodes, inits, ops, written = _segment_graph(i, seg, last, aux_input, names)
            in_names = [n for n in (names["hidden"], names.get("skip")) if n is not None]
            if last and aux_input:
                in_names.append(AUX)
            out_names = [] if last else [n for n in (written["hidden"], written.get("skip")) if n is not None]
            out_names.append(EXIT_OUTPUT)
            widths = {EXIT_OUTPUT: classes}
            files = [_write_graph(root, f"segments/segment_{i}", nodes, inits, in_names, out_names, widths,
                                  features, b) for b in variants]
            carries_skip = seg.skip is not None and not last
            flops = 2 * features * (features + classes) + (2 * features * features if carries_skip else 0)
            segments.append({"index": i, "files": files, "inputs": [_spec(n, features) for n in in_names],
                             "outputs": [_spec(n, widths.get(n, features)) for n in out_names], "flops": flops,
                             "params": int(seg.w.size + seg.head.size) + (features * features if carries_skip else 0),
                             "op_counts": {op: ops.count(op) for op in sorted(set(ops))},
                             "flops_by_op": {"conv": 0, "matmul": flops}})
            exits.append({"index": i, "segment": i, "head_type": "linear", "output_kind": "logits",
                          "cumulative_flops": sum(s["flops"] for s in segments)})
            names = written
        inputs = [_spec(INPUT, features)] + ([_spec(AUX, features)] if aux_input else [])
        inputs[0]["layout"] = "N..."
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name, "inputs": inputs,
            "labels": [f"class_{k}" for k in range(classes)], "segments": segments, "exits": exits,
            "policy": {"name": policy, "kwargs": dict(policy_kwargs or {}), "thresholds": thr},
            "verification": {"tolerance": 1e-5, "batch_sizes": [1], "passed": True,
                             "exits": [{"index": i, "max_abs_diff": 0.0} for i in range(num_exits)]},
            "created": {"tool_version": "synthetic"},
        }
        if full_model:
            nodes, inits, names = [], [], {"hidden": INPUT}
            for i, seg in enumerate(weights):
                last = i == num_exits - 1
                # the one-graph model has the final exit only
                seg_nodes, seg_inits, _, written = _segment_graph(i, seg, last, aux_input, names, prefix="f_",
                                                                  with_exit=last)
                nodes += seg_nodes
                inits += seg_inits
                names = written
            in_names = [INPUT] + ([AUX] if aux_input else [])
            files = [_write_graph(root, "full_model", nodes, inits, in_names, [EXIT_OUTPUT], {EXIT_OUTPUT: classes},
                                  features, b) for b in variants]
            manifest["full_model"] = {
                "files": files, "flops": sum(s["flops"] for s in segments) - 2 * features * classes * (num_exits - 1),
                "params": sum(s["params"] for s in segments) - sum(int(w.head.size) for w in weights[:-1]),
                "output": EXIT_OUTPUT}
        write_manifest(root, manifest)
        replace_dir(root, out, overwrite=overwrite)
    return Path(out)


def _spec(name: str, width: int) -> dict[str, Any]:
    return {"name": name, "shape": [None, width], "dtype": "float32"}


def _write_graph(root: Path, stem: str, nodes: list[bytes], inits: list[bytes], in_names: Sequence[str],
                 out_names: Sequence[str], widths: Mapping[str, int], features: int,
                 batch: int | None) -> dict[str, Any]:
    """Write one file of a graph (dynamic batch when ``batch`` is None) and return its manifest entry."""
    dim: int | str = "N" if batch is None else batch
    path = root / (f"{stem}.onnx" if batch is None else f"{stem}_b{batch}.onnx")
    path.write_bytes(P.model(nodes, [P.value_info(n, [dim, features]) for n in in_names],
                             [P.value_info(n, [dim, widths.get(n, features)]) for n in out_names], inits))
    return {"format": "onnx", "path": path.relative_to(root).as_posix(), "sha256": sha256_file(path),
            "batch_size": batch, "precision": "fp32", "bytes": path.stat().st_size}
