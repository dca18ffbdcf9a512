"""ONNX export of one module and the per-graph facts a manifest records: FLOPs, parameters, op counts, file entries.

Every graph of a bundle (segments, the one-graph model, a method's extra parts) goes through
:func:`export_onnx`, which exports with a dynamic batch axis and runs ``onnx.checker`` (full check).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_runtime._onnx_proto import external_data_tensors
from edge_runtime.errors import ExportError
from edge_runtime.files import sha256_file

DEFAULT_OPSET = 17


def _one_sample(example: Any) -> tuple[torch.Tensor, ...]:
    return tuple(t[:1] for t in (example if isinstance(example, (tuple, list)) else (example,)))


def count_flops(module: nn.Module, example: Any) -> int:
    """FLOPs of one forward pass for ONE sample (matmul/conv/attention; 2 per multiply-add).

    ``example``: one input batch, or a tuple of them (passed positionally). Counted with
    ``torch.utils.flop_counter.FlopCounterMode``; element-wise ops are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*_one_sample(example))
    return int(counter.get_total_flops())


#: torch ops by the cost kind device profiles rate them with (see edge_runtime.estimate)
_FLOP_KINDS = {"convolution": "conv", "_convolution": "conv", "mm": "matmul", "addmm": "matmul", "bmm": "matmul",
               "baddbmm": "matmul"}


def count_flops_by_kind(module: nn.Module, example: Any) -> dict[str, int]:
    """FLOPs of one sample split by op kind (``conv``, ``matmul``; attention counts as matmul)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*_one_sample(example))
    out: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[-1]
        kind = _FLOP_KINDS.get(name, "matmul")
        out[kind] = out.get(kind, 0) + int(flops)
    return out


def count_params(module: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return int(sum(p.numel() for p in module.parameters()))


def export_onnx(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> None:
    """Export ``module`` to ONNX with a dynamic batch axis on every input and output, then
    run ``onnx.checker`` with ``full_check=True`` (shape inference included).

    Args:
        module: takes the inputs positionally.
        example: one example input, or a tuple of them (one per name in ``input_names``).
        dynamic_axes: more dynamic axes (e.g. a sequence axis), merged with the batch axis.

    Raises:
        ExportError: the exporter or the checker failed; names the file.
    """
    import onnx

    args = example if isinstance(example, tuple) else (example,)
    if len(args) != len(input_names):
        raise ExportError(f"{path.name}: {len(args)} example inputs for input names {list(input_names)}")
    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    for name, axes in (dynamic_axes or {}).items():
        dynamic.setdefault(name, {}).update(axes)
    # torch's fused "fast path" for nn.TransformerEncoderLayer/MultiheadAttention has no ONNX export
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the exporter and checker raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path.name}: ONNX export/check failed: {first}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def file_entry(path: Path, root: Path, *, fmt: str = "onnx", precision: str = "fp32",
               batch_size: int | None = None) -> dict[str, Any]:
    """A manifest ``file`` record (relative path, sha256, size) for a file inside ``root``.

    Raises:
        ExportError: an ONNX file keeps tensors as external data (graphs over 2 GB do): a bundle pins every file it
            runs, and the device refuses graphs that would read other files.
    """
    if fmt == "onnx":
        external = external_data_tensors(path.read_bytes())
        if external:
            raise ExportError(f"{path.name}: the exported graph keeps {len(external)} tensor(s) as ONNX external data "
                              f"(e.g. {external[0][0]!r} in {external[0][1]!r}); bundles carry no external data: the "
                              "graph must fit one .onnx file (under 2 GB)")
    return {
        "format": fmt,
        "path": path.relative_to(root).as_posix(),
        "sha256": sha256_file(path),
        "batch_size": batch_size,
        "precision": precision,
        "bytes": path.stat().st_size,
    }


def onnx_input_names(path: Path) -> list[str]:
    """The graph's input names (the exporter drops inputs the module never reads)."""
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def onnx_op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph has (structure check material)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
           torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool"}


def tensor_spec(name: str, t: torch.Tensor, dynamic: Any = ()) -> dict[str, Any]:
    """A manifest tensor record: the name, the shape with a dynamic batch axis (and ``null`` on the other axes in
    ``dynamic``, e.g. a sequence axis), the dtype."""
    if t.dtype not in _DTYPES:
        raise ExportError(f"tensor {name!r}: dtype {t.dtype} cannot cross a bundle graph boundary")
    shape = [None, *(None if axis in dynamic else int(d) for axis, d in enumerate(t.shape[1:], start=1))]
    return {"name": name, "shape": shape, "dtype": _DTYPES[t.dtype]}
