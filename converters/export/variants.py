"""Extra file variants of a bundle: TFLite files and quantized files, verified per exit, thresholds per variant.

:func:`variant_exporters` turns ``export_bundle``'s ``backends=``, ``tflite_batch_sizes=`` and
``quantize=`` options into one hook that runs after the ONNX segments verified (and after the
``extra_parts`` hooks, so a method's parts exist). It

1. writes every graph (segments, the one-graph model, and the :class:`~converters.export.tflite.Graph`\\ s an
   ``extra_parts`` hook lists through an optional ``graphs(manifest)`` method) as ``.tflite``, one file
   per batch size;
2. writes each requested ``format/precision`` variant of every graph (:mod:`converters.export.quantize`);
3. runs every variant's segment chain on the device runtime and compares each exit with PyTorch
   (fp32: the export tolerance, absolute; fp16: ``fp16_tolerance`` relative to the exit outputs' scale (max
   |output|) plus prediction agreement of at least ``MIN_AGREEMENT`` — large logits make a fixed absolute bound
   fail with identical answers; int8 variants are recorded, not bounded: their accuracy cost is measured at
   their re-calibrated operating point);
4. re-calibrates the thresholds of every non-fp32 variant on the calibration inputs
   (``policy.variants["format/precision"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edge_runtime
from converters.export.onnx import file_entry
from converters.export.quantize import (
    NEEDS_REPRESENTATIVE_DATA,
    parse_variant,
    quantize_file,
    recalibrate_thresholds,
    representative_batches,
)
from converters.export.tflite import Graph, export_tflite_files, require_litert_torch
from converters.export.verify import graph_max_diff, staged_bundle, verify_bundle_dir
from converters.models.contract import EarlyExitModel, FullModel, SegmentWithExit, as_tuple, call_with
from edge_runtime.backends import FORMAT_BACKENDS
from edge_runtime.calibration import calibrate, evaluate_point, measure_segment_latency
from edge_runtime.errors import ConfigError, ExportError
from edge_runtime.manifest import EXIT_OUTPUT

KNOWN_BACKENDS = tuple(FORMAT_BACKENDS)  # file formats: onnx, tflite
#: an fp16 variant must give the fp32 model's prediction on at least this fraction of the verification samples
MIN_AGREEMENT = 0.98
#: precisions judged by a tolerance relative to the outputs' scale (plus agreement) rather than an absolute one
RELATIVE = ("fp16",)


@dataclass(frozen=True)
class VariantOptions:
    """What to add next to the fp32 ONNX files.

    Attributes:
        backends: file formats to write (``onnx`` always; ``tflite`` adds TFLite files).
        tflite_batch_sizes: one TFLite file per graph per batch size.
        quantize: ``format/precision`` variants (``onnx/int8``, ``onnx/int8_dynamic``, ``tflite/fp16``,
            ``tflite/int8``, ``tflite/int8_dynamic``).
        tolerance: fp32 tolerance per exit (the export's).
        fp16_tolerance: max difference per exit allowed for fp16 files, relative to the exit outputs' scale
            (max |output|); predictions must also agree on ``MIN_AGREEMENT`` of the samples.
    """

    backends: tuple[str, ...] = ("onnx",)
    tflite_batch_sizes: tuple[int, ...] = (1,)
    quantize: tuple[str, ...] = ()
    tolerance: float = 1e-4
    fp16_tolerance: float = 1e-2

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in KNOWN_BACKENDS]
        if unknown or "onnx" not in self.backends:
            raise ConfigError(f"backends: expected a list of {', '.join(KNOWN_BACKENDS)} that includes 'onnx' "
                              f"(the reference files), got {list(self.backends)!r}")
        if not self.tflite_batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                              for b in self.tflite_batch_sizes):
            raise ConfigError(f"tflite_batch_sizes: expected positive integers, got {list(self.tflite_batch_sizes)!r}")
        for variant in self.quantize:
            fmt, _ = parse_variant(variant)
            if fmt not in self.backends:
                raise ConfigError(f"quantize: {variant!r} needs backends to include {fmt!r}, "
                                  f"got {list(self.backends)!r}")

    @property
    def needed(self) -> bool:
        return self.backends != ("onnx",) or bool(self.quantize)


@dataclass
class VariantExporter:
    """The ``export_bundle`` hook that writes, verifies and re-calibrates the extra variants."""

    model: EarlyExitModel | None  # None: only extra parts (add_parts)
    example: torch.Tensor
    options: VariantOptions
    verify_inputs: list[torch.Tensor]
    calibration_inputs: torch.Tensor | None = None
    calibration_labels: np.ndarray | None = None
    extra_parts: Sequence[Any] = ()
    records: list[dict[str, Any]] = field(default_factory=list)

    def graphs(self, manifest: dict[str, Any]) -> list[Graph]:
        """Every graph of the bundle that gets variants: segments, full model, extra parts' graphs (names as in
        the manifest)."""
        model = self.model
        assert model is not None, "graphs() needs the model (add_parts works without one)"
        out: list[Graph] = []
        for i, seg in enumerate(manifest["segments"]):
            module = SegmentWithExit(model.segments[i], model.heads[i], i == model.num_exits - 1).eval()
            out.append(Graph(
                field=f"segments.{i}.files", module=module, example=_prefix(model, i)(self.example[:1]),
                input_name=seg["inputs"][0]["name"], output_names=tuple(o["name"] for o in seg["outputs"]),
                stem=f"segments/segment_{i}", calibration_input=_prefix(model, i) if i else None,
            ))
        if "full_model" in manifest:
            out.append(Graph("full_model.files", FullModel(model).eval(), self.example[:1],
                             manifest["inputs"][0]["name"], (EXIT_OUTPUT,), "full_model"))
        for hook in self.extra_parts:
            if hasattr(hook, "graphs"):
                out.extend(hook.graphs(manifest))
        return out

    def __call__(self, root: Path, manifest: dict[str, Any]) -> None:
        graphs = self.graphs(manifest)
        self.write_files(root, manifest, graphs)
        manifest.setdefault("created", {})["variants"] = _tool_versions(self.options)
        verification = manifest["verification"]
        verification["variants"] = []
        for fmt, precision in self._variants():
            verification["variants"].append(self._verify(root, manifest, graphs, fmt, precision))
        if self.calibration_inputs is not None:
            self._recalibrate(root, manifest)

    def write_files(self, root: Path, manifest: dict[str, Any], graphs: list[Graph]) -> None:
        """Write the TFLite and quantized files of ``graphs`` and add them to their manifest lists."""
        opts = self.options
        if "tflite" in opts.backends:
            for g in graphs:
                _files(manifest, g.field).extend(export_tflite_files(g, root, opts.tflite_batch_sizes))
        for variant in opts.quantize:
            fmt, precision = parse_variant(variant)
            if variant in NEEDS_REPRESENTATIVE_DATA and self.calibration_inputs is None:
                raise ConfigError(f"quantize {variant!r} needs calibration_inputs (the recipe's calibration split)")
            for g in graphs:
                self._quantize_graph(root, manifest, g, variant, fmt, precision)

    def add_parts(self, root: Path, manifest: dict[str, Any], hook: Any) -> None:
        """Variants of the graphs of an ``extra_parts``-style hook that ran after the export (``hook.graphs``),
        each verified alone against its module; the records join ``verification.variants``."""
        graphs = hook.graphs(manifest)
        self.write_files(root, manifest, graphs)
        inputs = list(self.verify_inputs)
        if "tflite" in self.options.backends:
            inputs += [_random_like(self.example, b, seed=100 + b) for b in self.options.tflite_batch_sizes]
        records = {(r["format"], r["precision"]): r for r in manifest["verification"].setdefault("variants", [])}
        for fmt, precision in self._variants():
            rec = records.get((fmt, precision))
            if rec is None:
                rec = {"format": fmt, "precision": precision, "exits": [], "passed": None,
                       "tolerance": self._tolerance(precision)}
                manifest["verification"]["variants"].append(rec)
            diffs = {g.field: self._graph_diff(root, manifest, g, fmt, precision, inputs) for g in graphs}
            rec.setdefault("graphs", {}).update(diffs)
            tol = rec.get("tolerance")
            if tol is not None and max(diffs.values(), default=0.0) > tol:
                raise ExportError(f"{fmt}/{precision} verification failed: {diffs} > tolerance {tol:g}")

    def _tolerance(self, precision: str) -> float | None:
        return {"fp32": self.options.tolerance, "fp16": self.options.fp16_tolerance}.get(precision)

    def _variants(self) -> list[tuple[str, str]]:
        out = [("tflite", "fp32")] if "tflite" in self.options.backends else []
        return out + [parse_variant(v) for v in self.options.quantize]

    def _quantize_graph(self, root: Path, manifest: dict[str, Any], g: Graph, variant: str, fmt: str,
                        precision: str) -> None:
        files = _files(manifest, g.field)
        sources = [e for e in files if e["format"] == fmt and e.get("precision", "fp32") == "fp32"]
        calib = g.inputs_for(self.calibration_inputs).numpy() if self.calibration_inputs is not None else None
        for src in sources:
            b = src.get("batch_size")
            src_path = root / src["path"]
            stem, _, ext = src["path"].rpartition(".")
            dst = root / f"{stem}.{precision}.{ext}"
            batches = representative_batches(calib, b) if calib is not None else []
            record = quantize_file(variant, src_path, dst, batches, g.input_name)
            entry = file_entry(dst, root, fmt=fmt, precision=precision, batch_size=b)
            entry["quantization"] = record
            files.append(entry)

    def _verify(self, root: Path, manifest: dict[str, Any], graphs: list[Graph], fmt: str,
                precision: str) -> dict[str, Any]:
        inputs = list(self.verify_inputs)
        if fmt == "tflite":  # a batch of each file's size, so every file runs unchunked at least once
            inputs += [_random_like(self.example, b, seed=100 + b) for b in self.options.tflite_batch_sizes]
        backend = FORMAT_BACKENDS[fmt]
        assert self.model is not None
        stats: dict[str, Any] = {}
        diffs, full_diff = verify_bundle_dir(self.model, root, manifest, inputs, backend=backend, precision=precision,
                                             stats=stats)
        tol = self._tolerance(precision)
        relative = precision in RELATIVE
        rel = [d / max(sc, 1e-12) for d, sc in zip(diffs, stats["scale"])]
        rec: dict[str, Any] = {
            "format": fmt, "precision": precision, "tolerance": tol,
            "batch_sizes": sorted({int(as_tuple(x)[0].shape[0]) for x in inputs}),
            "exits": [{"index": i, "max_abs_diff": d, "max_rel_diff": r, "agreement": a}
                      for i, (d, r, a) in enumerate(zip(diffs, rel, stats["agreement"]))],
        }
        agreements = [a for a in stats["agreement"] if a is not None]   # class-score exits only
        if relative:
            rec.update(tolerance_kind="relative to max |output| per exit", max_rel_diff=max(rel),
                       agreement=min(agreements) if agreements else None, min_agreement=MIN_AGREEMENT)
        if full_diff is not None:
            rec["full_model_max_abs_diff"] = full_diff
        parts = {g.field: self._graph_diff(root, manifest, g, fmt, precision, inputs)
                 for g in graphs if not g.field.startswith(("segments.", "full_model."))}
        if parts:
            rec["graphs"] = parts
        full_rel = [full_diff / max(stats["scale"][-1], 1e-12)] if full_diff is not None else []
        worst = max((rel + full_rel) if relative else (diffs + ([full_diff] if full_diff is not None else [])))
        worst = max([worst, *parts.values()]) if parts else worst
        agrees = not relative or not agreements or min(agreements) >= MIN_AGREEMENT
        rec["passed"] = None if tol is None else bool(worst <= tol and agrees)
        if tol is not None and not rec["passed"]:
            detail = ", ".join(f"exit {i}: {d:.3g} (relative {r:.3g}, agreement "
                               f"{'n/a' if a is None else f'{100 * a:.1f}%'})"
                               for i, (d, r, a) in enumerate(zip(diffs, rel, stats["agreement"])))
            what = "relative difference" if relative else "max abs difference"
            raise ExportError(f"{fmt}/{precision} verification failed: {what} {worst:.3g} vs tolerance {tol:g}"
                              + ("" if agrees else f", prediction agreement below {100 * MIN_AGREEMENT:.0f}%")
                              + f" ({detail})")
        return rec

    def _graph_diff(self, root: Path, manifest: dict[str, Any], g: Graph, fmt: str, precision: str,
                    inputs: list[torch.Tensor]) -> float:
        """One extra graph (a method's part) alone, against its PyTorch module (the one verifier)."""
        graph = {"files": _files(manifest, g.field), "outputs": [{"name": n} for n in g.output_names]}
        return graph_max_diff(g.module, root, {"files": graph["files"]}, inputs, fmt=fmt, precision=precision,
                              field=g.field, prepare=g.inputs_for)

    def _recalibrate(self, root: Path, manifest: dict[str, Any]) -> None:
        assert self.calibration_inputs is not None
        variants = recalibrate_variants(root, manifest, self.calibration_inputs.numpy(), self.calibration_labels)
        if variants:
            manifest["policy"]["variants"] = variants


def recalibrate_variants(root: Path, manifest: dict[str, Any], x: np.ndarray, y: np.ndarray | None = None,
                         ) -> dict[str, dict[str, Any]]:
    """Re-calibrate the thresholds of every non-fp32 variant a bundle holds, on calibration inputs ``x``.

    With labels ``y`` and a ``calibration`` section (the fp32 point was chosen by
    :func:`edge_runtime.calibration.calibrate`), each variant is calibrated the same way on its own exit
    outputs: the cheapest point within the same ``max_accuracy_drop`` of its final exit (FLOPs cost,
    or its own measured segment latencies when the fp32 point used latency). Otherwise the fp32
    thresholds' per-exit pass rates are kept (:func:`converters.export.quantize.recalibrate_thresholds`).
    ``convert`` calls this after calibrating the fp32 point; ``export_bundle`` through its variant hook.

    Returns:
        ``policy.variants``: ``format/precision`` -> record with ``thresholds`` (empty for a policy
        without thresholds).

    Example:
        >>> m["policy"]["variants"] = recalibrate_variants(bundle_dir, m, x_cal, y_cal)   # doctest: +SKIP
    """
    bundle = staged_bundle(root, manifest)
    x = np.ascontiguousarray(x, dtype=np.float32)
    spec = manifest["policy"]
    reference = edge_runtime.Runtime(bundle, edge_runtime.create_backend("onnxruntime", threads=1)).exit_outputs(x)
    cal = manifest.get("calibration") or {}
    out: dict[str, dict[str, Any]] = {}
    for fmt, precision, _ in bundle.variants():
        if precision == "fp32":
            continue  # fp32 files match PyTorch within the export tolerance: the fp32 point holds
        rt = edge_runtime.Runtime(bundle, edge_runtime.create_backend(FORMAT_BACKENDS[fmt], threads=1),
                                  precision=precision)
        outs = rt.exit_outputs(x)
        if y is not None and cal.get("max_accuracy_drop") is not None:
            record = _calibrate_like_fp32(rt, manifest, cal, outs, x, np.asarray(y), reference)
        else:
            record = recalibrate_thresholds(spec, reference, outs, y)
        if record is not None:
            out[f"{fmt}/{precision}"] = record
    return out


def _calibrate_like_fp32(rt: Any, manifest: dict[str, Any], cal: dict[str, Any], outs: list[np.ndarray],
                         x: np.ndarray, y: np.ndarray, reference: list[np.ndarray]) -> dict[str, Any] | None:
    """The fp32 point's calibration (edge_runtime.calibration, engineer C's) re-run on one variant's outputs."""
    spec = manifest["policy"]
    if not spec["thresholds"]:
        return None
    flops = [int(e["cumulative_flops"]) for e in manifest["exits"]]
    latency = full_latency = None
    cost = cal.get("cost", "flops")
    if cost == "latency":
        latency, full_latency = measure_segment_latency(rt, x, repeats=int(cal.get("latency", {}).get("repeats", 200)))
    g = cal.get("guarantee") or {}
    res = calibrate(outs, y, spec["name"], spec["kwargs"], flops=flops, latency=latency, full_latency=full_latency,
                    max_accuracy_drop=float(cal["max_accuracy_drop"]), cost=cost, levels=cal.get("levels"),
                    confidence=cal.get("confidence"), risk=g.get("risk", "label_drop"),
                    bound=g.get("bound", "binomial"),
                    selection_fraction=g.get("selection_fraction"), seed=g.get("split_seed", 0))
    ref = evaluate_point(reference, y, spec["name"], spec["kwargs"], spec["thresholds"], flops)
    return {"thresholds": list(res.chosen.thresholds),
            "method": f"edge_runtime.calibration on this variant's exit outputs: cheapest point ({cost}) within "
                      f"{cal['max_accuracy_drop']} accuracy points of its final exit",
            "calibration_samples": int(len(y)), "accuracy": res.chosen.accuracy,
            "final_exit_accuracy": res.final_accuracy, "exit_rates": res.chosen.exit_fractions,
            "flops_fraction": res.chosen.flops_fraction, "reference_accuracy": ref.accuracy,
            "reference_exit_rates": ref.exit_fractions,
            **({"guarantee": res.extra["guarantee"]} if "guarantee" in res.extra else {})}


def variant_exporters(model: EarlyExitModel | None, example: Any, *, backends: Sequence[str] = ("onnx",),
                      tflite_batch_sizes: Sequence[int] = (1,), quantize: Sequence[str] = (),
                      calibration_inputs: Any = None, calibration_labels: Any = None, tolerance: float = 1e-4,
                      fp16_tolerance: float = 1e-2, verify_inputs: Sequence[torch.Tensor] = (),
                      extra_parts: Sequence[Any] = ()) -> list[Any]:
    """The hooks ``export_bundle`` runs for its ``backends``/``tflite_batch_sizes``/``quantize`` options.

    Returns an empty list for the default (ONNX fp32 only), so that path is unchanged.

    Raises:
        ConfigError: unknown backend or variant, bad batch sizes, static int8 without calibration inputs.

    Example:
        >>> hooks = variant_exporters(model, example, backends=("onnx", "tflite"), quantize=("tflite/int8",),
        ...                           calibration_inputs=x_cal)                        # doctest: +SKIP
    """
    options = VariantOptions(tuple(backends), tuple(tflite_batch_sizes), tuple(quantize), tolerance, fp16_tolerance)
    if not options.needed:
        return []
    calib = None if calibration_inputs is None else torch.as_tensor(np.asarray(calibration_inputs, np.float32))
    if any(v in NEEDS_REPRESENTATIVE_DATA for v in options.quantize) and calib is None:
        raise ConfigError(f"quantize {[v for v in options.quantize if v in NEEDS_REPRESENTATIVE_DATA]} needs "
                          "calibration_inputs (the recipe's calibration split)")
    labels = None if calibration_labels is None else np.asarray(calibration_labels)
    if model is not None:
        with torch.no_grad():
            _, hidden = model.forward_with_hidden(*as_tuple(example[:1] if isinstance(example, torch.Tensor)
                                                            else tuple(e[:1] for e in example)))
        if isinstance(example, tuple) or any(len(as_tuple(h)) > 1 for h in hidden[:-1]):
            raise ConfigError("export.backends/quantize: TFLite and quantized variants take graphs with one input "
                              "tensor; this model passes several tensors into a segment (keep backends: [onnx])")
    if "tflite" in options.backends:
        require_litert_torch()
    return [VariantExporter(model, example, options, list(verify_inputs), calib, labels, extra_parts)]


def add_part_variants(hook: Any, root: Path, manifest: dict[str, Any], export_kwargs: dict[str, Any]) -> None:
    """TFLite/quantized files for the graphs of a hook that ran after ``export_bundle`` (e.g. a method's parts
    trained with the calibrated policy), with the same ``export_bundle`` options; no-op for ONNX fp32 only.

    Example:
        >>> hook(staging, manifest); add_part_variants(hook, staging, manifest, export_kwargs)   # doctest: +SKIP
    """
    if not hasattr(hook, "graphs"):
        return
    names = ("backends", "tflite_batch_sizes", "quantize", "calibration_inputs", "calibration_labels", "tolerance",
             "fp16_tolerance")
    kw = {k: export_kwargs[k] for k in names if export_kwargs.get(k) is not None}
    verify = export_kwargs.get("verify_inputs")
    if verify is None:
        raise ConfigError("add_part_variants needs export_kwargs['verify_inputs'] "
                          "(model inputs to verify the parts on)")
    inputs = [verify.to(torch.float32)] + [_random_like(verify, b, seed=200 + b) for b in (1, 3)]
    for exporter in variant_exporters(None, verify[:1], verify_inputs=inputs, **kw):
        exporter.add_parts(root, manifest, hook)


def _prefix(model: EarlyExitModel, i: int) -> Any:
    """Maps model inputs to the hidden state entering segment i (the identity for i = 0)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        h: Any = x
        with torch.no_grad():
            for segment in model.segments[:i]:
                h = call_with(segment, h)
        return h

    return run


def _files(manifest: dict[str, Any], dotted: str) -> list[dict[str, Any]]:
    node: Any = manifest
    for key in dotted.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _random_like(example: torch.Tensor, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *example.shape[1:]), generator=g, dtype=example.dtype)


def _tool_versions(options: VariantOptions) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "onnxruntime"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {"backends": list(options.backends), "tflite_batch_sizes": list(options.tflite_batch_sizes),
            "quantize": list(options.quantize), "tools": versions}
