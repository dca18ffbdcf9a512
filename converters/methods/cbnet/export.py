"""Export CBNet's parts (CBNet, 2024) into a bundle: each part one ONNX graph with a dynamic batch axis,
checked with ``onnx.checker``, run in onnxruntime against PyTorch at batch 1, an odd batch and real
inputs (:func:`converters.export.verify.graph_max_diff`), and recorded under the manifest's ``parts.cbnet``.
Called by ``export_bundle`` through its ``extra_parts`` hook, so a failed part leaves no bundle behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.export.onnx import count_flops, count_params, export_onnx, file_entry, onnx_op_counts, tensor_spec
from converters.export.tflite import Graph
from converters.export.verify import graph_max_diff
from edge_runtime.errors import ExportError

#: part name -> (graph input name, graph output name)
PART_IO = {"autoencoder": ("input", "converted"), "classifier": ("input", "exit"),
           "classifier_base": ("input", "exit")}
METHOD = "cbnet"


def export_parts(
    root: Path,
    manifest: dict[str, Any],
    parts: dict[str, nn.Module],
    example: torch.Tensor,
    *,
    real_inputs: torch.Tensor | None,
    tolerance: float,
    batch_sizes: Sequence[int],
    opset: int,
    seed: int,
    section: dict[str, Any],
) -> None:
    """Write ``parts`` (name -> module, all taking model-ready inputs) under ``root/cbnet/`` and set the
    manifest's ``parts.cbnet`` (mode ``cbnet``; ``info`` = ``section``; the graphs; their verification).

    The classifier parts are verified on random inputs and on the autoencoder's outputs for
    ``real_inputs`` (what they see on the device); the autoencoder on random and real inputs.

    Raises:
        ExportError: a part failed to export, check, or match PyTorch within ``tolerance``.
    """
    (root / "cbnet").mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rand = [torch.randn((b, *example.shape[1:]), generator=g) for b in batch_sizes]
    ae = parts["autoencoder"].eval()
    with torch.no_grad():
        real = [] if real_inputs is None else [real_inputs.float(), ae(real_inputs.float())]
    records: dict[str, Any] = {}
    diffs: dict[str, float] = {}
    for name, module in parts.items():
        module = module.eval()
        io = PART_IO[name]
        path = root / "cbnet" / f"{name}.onnx"
        export_onnx(module, example, path, input_names=[io[0]], output_names=[io[1]], opset=opset)
        with torch.no_grad():
            out = module(example[:1])
        inputs = rand + (real[:1] if name == "autoencoder" else real[1:])
        diffs[name] = graph_max_diff(module, root, {"files": [file_entry(path, root)]}, inputs,
                                     field=f"parts.{METHOD}.graphs.{name}")
        records[name] = {
            "files": [file_entry(path, root)],
            "inputs": [tensor_spec(io[0], example)],
            "outputs": [tensor_spec(io[1], out)],
            "flops": count_flops(module, example),
            "params": count_params(module),
            "op_counts": onnx_op_counts(path),
        }
    worst = max(diffs.values())
    if worst > tolerance:
        detail = ", ".join(f"{k}: {v:.3g}" for k, v in diffs.items())
        raise ExportError(f"CBNet verification failed: max abs difference {worst:.3g} > tolerance {tolerance:g} "
                          f"({detail})")
    sizes = sorted({int(x.shape[0]) for x in rand + real})
    manifest.setdefault("parts", {})[METHOD] = {
        "mode": METHOD,
        "graphs": records,
        "info": dict(section),
        "verification": {"tolerance": tolerance, "batch_sizes": sizes, "passed": True,
                         "parts": {k: {"max_abs_diff": v, "format": "onnx", "precision": "fp32"}
                                   for k, v in diffs.items()}},
    }


class CBNetExporter:
    """The ``export_bundle(..., extra_parts=[...])`` hook for CBNet's parts.

    Calling it exports and verifies the ONNX parts (:func:`export_parts`), adds the manifest
    section and then calls ``finish(root, manifest)`` (which completes ``info``: cost, gate);
    :meth:`graphs` lists the parts for ``export_bundle``'s TFLite/quantized variants
    (``converters.export.variants`` asks every extra-parts hook for them).
    """

    def __init__(self, parts: dict[str, nn.Module], example: torch.Tensor, *, real_inputs: torch.Tensor | None,
                 tolerance: float, batch_sizes: Sequence[int], opset: int, seed: int,
                 section: dict[str, Any], finish: Any = None) -> None:
        self.parts = parts
        self.example = example
        self.real_inputs = real_inputs
        self.tolerance = tolerance
        self.batch_sizes = tuple(batch_sizes)
        self.opset = opset
        self.seed = seed
        self.section = section
        self.finish = finish

    def __call__(self, root: Path, manifest: dict[str, Any]) -> None:
        export_parts(root, manifest, self.parts, self.example, real_inputs=self.real_inputs,
                     tolerance=self.tolerance, batch_sizes=self.batch_sizes, opset=self.opset, seed=self.seed,
                     section=self.section)
        if self.finish is not None:
            self.finish(root, manifest)

    def graphs(self, manifest: dict[str, Any]) -> list[Any]:
        """One :class:`converters.export.tflite.Graph` per part; classifiers calibrate on converted inputs."""
        ae = self.parts["autoencoder"].eval()
        out = []
        for name, module in self.parts.items():
            io = PART_IO[name]
            out.append(Graph(field=f"parts.{METHOD}.graphs.{name}.files", module=module.eval(),
                             example=self.example[:1],
                             input_name=io[0], output_names=(io[1],), stem=f"cbnet/{name}",
                             calibration_input=None if name == "autoencoder" else ae))
        return out
