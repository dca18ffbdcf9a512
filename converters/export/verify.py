"""The one verifier: run exported graphs on the device runtime and compare every output with PyTorch.

``verify_bundle_dir`` checks a bundle's segment chain (every exit) and its one-graph model;
``graph_max_diff`` checks any other graph (a method's extra part) alone against its module.
Both return the max absolute difference; the callers compare it with their tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import edge_runtime
from converters.models.contract import EarlyExitModel


def verify_bundle_dir(
    model: EarlyExitModel,
    root: Path,
    manifest: dict[str, Any],
    inputs: Sequence[torch.Tensor],
    *,
    backend: str = "onnxruntime",
    precision: str = "fp32",
) -> tuple[list[float], float | None]:
    """Run the bundle's segment chain (and one-graph model) on ``inputs`` and compare every
    exit output with PyTorch. Returns (max abs diff per exit, full-model max abs diff).
    """
    bundle = edge_runtime.Bundle(root=root, manifest=manifest)
    be = edge_runtime.create_backend(backend, threads=1)
    rt = edge_runtime.Runtime(bundle, be, precision=precision)
    diffs = [0.0] * model.num_exits
    full_diff: float | None = 0.0 if rt.has_full_model else None
    with torch.no_grad():
        for x in inputs:
            ref = [o.numpy() for o in model(x)]
            got = rt.exit_outputs(x.numpy())
            for i, (r, g) in enumerate(zip(ref, got)):
                diffs[i] = max(diffs[i], float(np.max(np.abs(r - g))))
            if rt.has_full_model:
                full = rt.run_full(x.numpy()).outputs
                full_diff = max(full_diff or 0.0, float(np.max(np.abs(ref[-1] - full))))
    return diffs, full_diff
