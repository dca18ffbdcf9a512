"""The workstation's bench rows, found by ``edge-runtime bench`` through the ``edge_runtime.bench_rows`` entry point.

Light to import (no torch) so that the entry point loads on any machine; torch is imported only when a
row is actually asked for.
"""

from __future__ import annotations

from typing import Any


def torch_eager_rows(ctx: Any) -> list[Any]:
    """The PyTorch-eager full-model row when ``--torch-checkpoint`` is given (else none).

    Args:
        ctx: the bench's :class:`edge_runtime.bench.configs.BenchContext`.
    """
    checkpoint = ctx.options.get("torch_checkpoint")
    if not checkpoint:
        return []
    try:
        from converters.pipeline.bench_eager import eager_config  # optional dependency: torch
    except ImportError as exc:
        ctx.notes.append(f"PyTorch eager row skipped: {exc}")
        return []
    return [eager_config(ctx, checkpoint)]
