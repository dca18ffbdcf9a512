"""Export PyTorch graphs to fixed-batch ``.tflite`` files with ``litert-torch`` (one file per batch size).

``litert-torch`` cannot convert a dynamic batch axis, so each graph is converted once per requested
batch size; the device's ``SegmentRunner`` runs other batch sizes as padded chunks of the best-fitting
file. Inputs and outputs keep the bundle's names (``input``/``hidden_in`` -> ``hidden``, ``exit``) as the
file's signature, and keep the PyTorch layout (NCHW): ``litert-torch`` inserts the transposes itself.

Reusable for any graph of a bundle (segments, the one-graph model, methods' parts) through :class:`Graph`
and :func:`export_tflite_files`. Needs ``pip install edge-runtime[tflite]``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from converters.export.onnx import file_entry
from edge_runtime.errors import ConfigError, ExportError


@dataclass(frozen=True)
class Graph:
    """One PyTorch graph of a bundle that gets extra files (TFLite, quantized) next to its ONNX file.

    Attributes:
        field: the manifest field of its ``files`` list, dotted (``segments.0.files``,
            ``full_model.files``, ``parts.<method>.graphs.<part>.files``).
        module: the module that the ONNX file was exported from (eval mode).
        example: one input batch of the graph (any batch size; only the sample shape is used).
        input_name: the graph's input name.
        output_names: the graph's output names, in the order the module returns them.
        stem: file path stem inside the bundle, e.g. ``segments/segment_0`` (suffixes are added).
        calibration_input: maps the bundle's calibration inputs (model inputs) to this graph's inputs,
            e.g. the hidden state entering segment i; None: the graph takes the model input.
    """

    field: str
    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_names: tuple[str, ...]
    stem: str
    calibration_input: Callable[[torch.Tensor], torch.Tensor] | None = None

    def inputs_for(self, x: torch.Tensor) -> torch.Tensor:
        """This graph's inputs for a batch of model inputs."""
        with torch.no_grad():
            return self.calibration_input(x) if self.calibration_input is not None else x


class _NamedIO(nn.Module):
    """Names the graph's input (keyword) and outputs (dict keys) so the file's signature carries them."""

    def __init__(self, module: nn.Module, input_name: str, output_names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.input_name = input_name
        self.output_names = tuple(output_names)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(inputs[self.input_name])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.output_names, outs))


def require_litert_torch() -> Any:
    """Import ``litert_torch`` or raise a ConfigError saying how to install it."""
    try:
        import litert_torch
    except ImportError as exc:
        raise ConfigError(f"TFLite export needs litert-torch: pip install 'edge-runtime[tflite]' ({exc})") from None
    return litert_torch


def convert_tflite(module: nn.Module, example: torch.Tensor, path: Path, *, input_name: str,
                   output_names: Sequence[str]) -> None:
    """Convert ``module`` at the example's (fixed) batch size to ``path`` with ``litert-torch``.

    Raises:
        ExportError: the conversion failed; names the file.

    Example:
        >>> convert_tflite(segment, torch.randn(1, 1, 16, 16), Path("s0_b1.tflite"),
        ...                input_name="input", output_names=["hidden", "exit"])      # doctest: +SKIP
    """
    litert_torch = require_litert_torch()
    wrapper = _NamedIO(module, input_name, output_names).eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            edge_model = litert_torch.convert(wrapper, sample_kwargs={input_name: example})
            edge_model.export(str(path))
    except Exception as exc:  # the exporter and converter raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path.name}: TFLite conversion failed: {first}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def tflite_path(stem: str, batch_size: int, precision: str = "fp32") -> str:
    """The bundle-relative path of one TFLite file: ``<stem>_b<batch>[.<precision>].tflite``."""
    suffix = "" if precision == "fp32" else f".{precision}"
    return f"{stem}_b{batch_size}{suffix}.tflite"


def export_tflite_files(graph: Graph, root: Path, batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Write ``graph`` as one fp32 ``.tflite`` per batch size under ``root``; return their manifest entries.

    The entries (``format: tflite``, ``batch_size``, ``precision: fp32``) are not added to the manifest
    here: the caller appends them to ``graph.field``.

    Example:
        >>> g = Graph("parts.m.graphs.ae.files", ae, torch.randn(1, 1, 28, 28), "input", ("output",),
        ...           "m/ae")                                                        # doctest: +SKIP
        >>> entries = export_tflite_files(g, bundle_tmp_dir, batch_sizes=(1, 8))     # doctest: +SKIP
    """
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ConfigError(f"tflite_batch_sizes: expected positive integers, got {list(batch_sizes)!r}")
    entries = []
    for b in sorted({int(b) for b in batch_sizes}):
        path = root / tflite_path(graph.stem, b)
        path.parent.mkdir(parents=True, exist_ok=True)
        example = graph.example[:1].expand(b, *graph.example.shape[1:]).contiguous()
        convert_tflite(graph.module, example, path, input_name=graph.input_name, output_names=graph.output_names)
        entries.append(file_entry(path, root, fmt="tflite", batch_size=b))
    return entries
