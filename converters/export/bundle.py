"""Export an :class:`EarlyExitModel` to a verified, self-describing bundle of per-exit ONNX segments.

Each (segment i + head i) becomes one ONNX file with a dynamic batch axis and outputs
``hidden`` and ``exit`` (the last: ``exit`` only); the unsplit model is exported too,
as the one-graph baseline. Every file passes ``onnx.checker`` (full check), then the
chain of ONNX segments runs in onnxruntime against PyTorch at batch 1 and an odd batch;
the export fails, leaving nothing behind, if any exit differs by more than the tolerance.
The bundle is written into a temporary directory and renamed into place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import edge_runtime
from converters.export.onnx import (
    DEFAULT_OPSET,
    count_flops,
    count_flops_by_kind,
    count_params,
    export_onnx,
    file_entry,
    onnx_input_names,
    onnx_op_counts,
    tensor_spec,
)
from converters.export.scores import ScoredSegment, score_graph, score_max_diffs
from converters.export.variants import variant_exporters
from converters.export.verify import verify_exit_outputs
from converters.models.contract import EarlyExitModel, FullModel, SegmentWithExit, as_tuple, call_with
from edge_runtime.errors import ConfigError, ExportError
from edge_runtime.files import check_output_dir, replace_dir, staging_dir
from edge_runtime.manifest import EXIT_OUTPUT, FORMAT_NAME, FORMAT_VERSION, SCORE_OUTPUT, write_manifest
from edge_runtime.policies import create_policy


def _verify_inputs(example: Any, batch_sizes: Sequence[int], seed: int) -> list[Any]:
    """Random inputs of each batch size shaped like ``example``: float tensors standard normal; integer and
    boolean tensors (token ids, masks) as rows drawn from the example itself, so they stay valid."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in batch_sizes:
        parts = []
        for t in as_tuple(example):
            if t.is_floating_point():
                parts.append(torch.randn((b, *t.shape[1:]), generator=g, dtype=t.dtype))
            else:
                parts.append(t[torch.randint(0, t.shape[0], (b,), generator=g)])
        out.append(tuple(parts) if isinstance(example, tuple) else parts[0])
    return out


def export_bundle(
    model: EarlyExitModel,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    out_dir: str | Path,
    *,
    name: str,
    policy: str = "entropy",
    policy_kwargs: dict[str, Any] | None = None,
    thresholds: float | Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    tolerance: float = 1e-4,
    verify_batch_sizes: Sequence[int] = (1, 3),
    verify_inputs: torch.Tensor | None = None,
    include_full_model: bool = True,
    sections: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    seed: int = 0,
    extra_parts: Sequence[Callable[[Path, dict[str, Any]], None]] = (),
    backends: Sequence[str] = ("onnx",),
    tflite_batch_sizes: Sequence[int] = (1,),
    quantize: Sequence[str] = (),
    calibration_inputs: Any = None,
    calibration_labels: Any = None,
    fp16_tolerance: float = 1e-2,
    in_graph_score: bool = True,
) -> Path:
    """Export, check and verify ``model`` into a bundle directory, atomically.

    Args:
        model: the early-exit model (put in eval mode here).
        example_input: one input batch, shape (B, *sample_shape), float32.
        out_dir: the bundle directory to create.
        name: the model name recorded in the manifest.
        policy: exit policy name; ``policy_kwargs`` and ``thresholds`` go with it.
        labels: class labels (default "0".."C-1").
        preprocessing: what to apply to raw inputs (scale, mean, std), recorded for the device.
        tolerance: max abs difference allowed between PyTorch and ONNX per exit.
        verify_batch_sizes: random-input batch sizes to verify on (keep one odd).
        verify_inputs: real inputs to verify on as well (e.g. calibration samples).
        include_full_model: also export the unsplit model as one graph (the baseline).
        sections: extra manifest sections (``calibration``, ``data``, ``recipe``, ``extra``).
        overwrite: replace an existing bundle directory (only after the new one verified).
        extra_parts: exporters of extra graphs (a method's parts, e.g. its ``exporter(...)`` hook), each
            called as ``hook(bundle_tmp_dir, manifest)`` after the segments verified and before the
            manifest is validated and written: it writes its files inside the directory, adds its own
            manifest section (files via :func:`file_entry`) and raises ExportError if its own
            verification fails (then nothing is left behind). A hook with a ``graphs(manifest)``
            method (a list of :class:`converters.export.tflite.Graph`) gets TFLite/quantized files too.
        backends: file formats to write: ``("onnx",)`` (default) or ``("onnx", "tflite")``.
        tflite_batch_sizes: one ``.tflite`` file per graph and batch size (TFLite has no dynamic batch).
        quantize: ``format/precision`` variants to add, e.g. ``("onnx/int8", "tflite/int8")``
            (see :mod:`converters.export.quantize`); each is verified and gets re-calibrated thresholds.
        calibration_inputs: the recipe's calibration split (model inputs, an array), for static int8
            and for re-calibrating each variant's thresholds; ``calibration_labels`` optionally.
        in_graph_score: every non-final segment also outputs its exit's decision score (``exit.score``) by the
            policy's own formula when the policy has one in :data:`converters.export.scores.SCORE_GRAPHS`, so the
            device compares one number per sample (verified against the policy's numpy score).

    Returns:
        The bundle directory.

    Raises:
        ExportError: export, check or verification failed; no bundle is left behind.
        ConfigError: bad arguments (policy, thresholds, labels, existing output).

    Example:
        >>> from converters.models import create_model
        >>> m = create_model("tiny_cnn")
        >>> export_bundle(m, torch.randn(1, 1, 16, 16), "out/tiny", name="tiny")   # doctest: +SKIP
    """
    out = check_output_dir(out_dir, overwrite=overwrite)
    for t in as_tuple(example_input):
        if t.is_floating_point() and t.dtype != torch.float32:
            raise ConfigError(f"example_input: float inputs must be float32, got {t.dtype}")
    model = model.eval()
    first = tuple(t[:1] for t in as_tuple(example_input))
    with torch.no_grad():
        example_outputs = model(*first)
    if model.output_kind == "logits":
        num_classes = int(as_tuple(example_outputs[-1])[0].shape[-1])
        labels = [str(c) for c in (labels if labels is not None else range(num_classes))]
        if len(labels) != num_classes:
            raise ConfigError(f"labels: {len(labels)} given for a model with {num_classes} outputs")
    else:  # not a classifier: the names of the classes it is conditioned on, when it has them
        labels = [str(c) for c in (labels if labels is not None else getattr(model, "labels", None) or ["0"])]
    policy_kwargs = dict(policy_kwargs or {})
    pol = create_policy(policy, model.num_exits, thresholds, **policy_kwargs)  # validates early

    variant_hooks = variant_exporters(
        model, example_input, backends=backends, tflite_batch_sizes=tflite_batch_sizes, quantize=quantize,
        calibration_inputs=calibration_inputs, calibration_labels=calibration_labels, tolerance=tolerance,
        fp16_tolerance=fp16_tolerance, verify_inputs=_verify_inputs(example_input, verify_batch_sizes, seed)
        + ([_as_float32(verify_inputs)] if verify_inputs is not None else []),
        extra_parts=extra_parts,
    )

    score = score_graph(policy, pol.config()) if in_graph_score else None
    with staging_dir(out) as tmp:
        manifest = _write_segments(model, example_input, tmp, opset, include_full_model,
                                   (policy, pol.config(), score) if score is not None else None)
        manifest.update(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "name": name,
                "labels": labels,
                "policy": {"name": policy, "kwargs": pol.config(), "thresholds": pol.thresholds},
            }
        )
        manifest["inputs"] = [{**tensor_spec(n, t, model.dynamic_axes.get(n, ())),
                                "layout": "NCHW" if t.dim() == 4 else "N..."}
                              for n, t in zip(model.input_names(example_input), as_tuple(example_input))]
        if preprocessing:
            manifest["inputs"][0]["preprocessing"] = dict(preprocessing)
        manifest["created"] = {
            "tool_version": edge_runtime.__version__,
            "torch_version": torch.__version__,
            "onnx_opset": opset,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for key, value in (sections or {}).items():
            manifest[key] = value
        inputs = _verify_inputs(example_input, verify_batch_sizes, seed)
        if verify_inputs is not None:
            inputs.append(_as_float32(verify_inputs))
        manifest["verification"] = {"tolerance": tolerance, "batch_sizes": list(verify_batch_sizes),
                                     "exits": [], "passed": False}
        per_output, full_diff = verify_exit_outputs(model, tmp, manifest, inputs)
        diffs = [max(d.values()) for d in per_output]
        manifest["verification"] = {
            "tolerance": tolerance,
            "batch_sizes": sorted({int(as_tuple(x)[0].shape[0]) for x in inputs}),
            "exits": [{"index": i, "max_abs_diff": d, "format": "onnx", "precision": "fp32",
                       **({"outputs": per_output[i]} if len(per_output[i]) > 1 else {})}
                      for i, d in enumerate(diffs)],
            "passed": True,
        }
        if full_diff is not None:
            manifest["verification"]["full_model_max_abs_diff"] = full_diff
        score_diffs = score_max_diffs(tmp, manifest, inputs)  # in-graph scores vs the policy's numpy score
        for i, d in score_diffs.items():
            manifest["verification"]["exits"][i]["score_max_abs_diff"] = d
        worst = max(diffs + list(score_diffs.values()) + ([full_diff] if full_diff is not None else []))
        if worst > tolerance:
            detail = ", ".join(f"exit {i}: {d:.3g}" for i, d in enumerate(diffs))
            raise ExportError(f"verification failed: max abs difference {worst:.3g} > tolerance {tolerance:g} "
                              f"({detail})")
        for hook in [*extra_parts, *variant_hooks]:
            hook(tmp, manifest)
        write_manifest(tmp, manifest)
        replace_dir(tmp, out, overwrite=overwrite)
    return out


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(set(a) | set(b))}


def _as_float32(x: Any) -> Any:
    """Real inputs to verify on: float tensors as float32, integer ones (token ids, masks) as they are."""
    parts = tuple(t.to(torch.float32) if t.is_floating_point() else t for t in as_tuple(x))
    return parts if isinstance(x, tuple) else parts[0]


def _write_segments(model: EarlyExitModel, example: Any, root: Path, opset: int,
                    include_full_model: bool, score: tuple[str, dict[str, Any], Any] | None = None) -> dict[str, Any]:
    """Export each (segment i + head i) as ``segments/segment_<i>.onnx``; the tensors crossing cut i are named
    by :meth:`EarlyExitModel.hidden_names` in both segment i's outputs and segment i+1's inputs. With ``score``
    (policy name, its kwargs, its in-graph score), every non-final segment also outputs ``exit.score``."""
    (root / "segments").mkdir()
    segments, exits = [], []
    h: Any = example if isinstance(example, tuple) else example
    in_names = model.input_names(example)
    cumulative = 0
    with torch.no_grad():
        for i, (segment, head) in enumerate(zip(model.segments, model.heads)):
            last = i == model.num_exits - 1
            wrapper: nn.Module = SegmentWithExit(segment, head, last).eval()
            h_next = call_with(segment, h)
            exit_out = call_with(head, h_next)
            hidden_names = [] if last else model.hidden_names(i, h_next)
            exit_names = model.exit_names(i, exit_out)
            out_names = [*hidden_names, *exit_names]
            scored = score if not last else None
            if scored is not None:  # the score of the exit's answer (the head's first output), appended last
                wrapper = ScoredSegment(wrapper, scored[2], exit_at=len(hidden_names)).eval()
                out_names.append(SCORE_OUTPUT)
            path = root / "segments" / f"segment_{i}.onnx"
            export_onnx(wrapper, as_tuple(h), path, input_names=in_names, output_names=out_names, opset=opset,
                        dynamic_axes=_axes(model, [*in_names, *out_names]))
            read = set(onnx_input_names(path))  # a tensor crossing the cut only for the previous exit's head
            backbone_flops = count_flops(_Positional(segment), as_tuple(h))
            head_flops = count_flops(_Positional(head), as_tuple(h_next))
            cumulative += backbone_flops + head_flops
            dyn = model.dynamic_axes
            outputs = [tensor_spec(n, t, dyn.get(n, ())) for n, t in zip(hidden_names, as_tuple(h_next))] \
                if not last else []
            outputs += [tensor_spec(n, t, dyn.get(n, ())) for n, t in zip(exit_names, as_tuple(exit_out))]
            if scored is not None:
                outputs.append(tensor_spec(SCORE_OUTPUT, scored[2](as_tuple(exit_out)[0])))
            segments.append({
                "index": i,
                "files": [file_entry(path, root)],
                "inputs": [tensor_spec(n, t, dyn.get(n, ())) for n, t in zip(in_names, as_tuple(h)) if n in read],
                "outputs": outputs,
                "flops": backbone_flops + head_flops,
                "backbone_flops": backbone_flops,
                "head_flops": head_flops,
                "params": count_params(segment) + count_params(head),
                "op_counts": onnx_op_counts(path),
                "flops_by_op": _merge(count_flops_by_kind(_Positional(segment), as_tuple(h)),
                                      count_flops_by_kind(_Positional(head), as_tuple(h_next))),
                **({"score": {"policy": scored[0], "kwargs": dict(scored[1])}} if scored is not None else {}),
            })
            # cost of answering at exit i: segments and heads 0..i (earlier heads ran too)
            exits.append({"index": i, "segment": i, "head_type": model.head_types[i], "output_kind": model.output_kind,
                          "cumulative_flops": cumulative})
            h, in_names = h_next, hidden_names
    manifest: dict[str, Any] = {"segments": segments, "exits": exits}
    if include_full_model:
        full = FullModel(model).eval()
        path = root / "full_model.onnx"
        export_onnx(full, as_tuple(example), path, input_names=model.input_names(example), output_names=[EXIT_OUTPUT],
                    opset=opset, dynamic_axes=_axes(model, model.input_names(example)))
        manifest["full_model"] = {
            "files": [file_entry(path, root)],
            "flops": count_flops(full, as_tuple(example)),
            "params": count_params(full),
            "op_counts": onnx_op_counts(path),
            "flops_by_op": count_flops_by_kind(full, as_tuple(example)),
            "output": EXIT_OUTPUT,
        }
    return manifest


def _axes(model: EarlyExitModel, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """The model's extra dynamic axes (beyond the batch) of the named tensors of one graph."""
    return {n: dict(model.dynamic_axes[n]) for n in names if n in model.dynamic_axes}


class _Positional(nn.Module):
    """Calls a segment or head the way the model does (a tuple hidden state as positional arguments)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *h: Any) -> Any:
        return call_with(self.module, h if len(h) > 1 else h[0])
