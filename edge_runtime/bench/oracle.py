"""The oracle bound: every sample leaves at the earliest exit whose answer is correct.

It needs the label, so it cannot run; its latency is an estimate from measured parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.calibration.bounds import oracle_exits

ORACLE_METHOD = (
    "Oracle (earliest correct exit; needs the label, so it is not run): accuracy = fraction of samples that "
    "some exit answers correctly (a sample no exit gets right is charged the first exit: nothing makes it "
    "right, so the cheapest exit is the bound). Latency per sample = "
    "the batch-1 mean time of segments 0..k measured in this run under policy 'never' (k = the sample's oracle "
    "exit) plus that row's mean per-call overhead outside the segments; energy = the 'never' row's energy per "
    "inference scaled by the latency ratio. No throughput is estimated."
)


def oracle_row(exit_outputs: list[np.ndarray], y: np.ndarray, never: dict[str, Any] | None,
               latency_stats: Any) -> dict[str, Any]:
    """The oracle's row for results.json, estimated from the measured ``never`` row (None: accuracy only)."""
    exits = oracle_exits(exit_outputs, y)
    n_exits = len(exit_outputs)
    preds = np.stack([o.argmax(axis=-1) for o in exit_outputs], axis=1)[np.arange(len(y)), exits]
    row: dict[str, Any] = {
        "accuracy": float((preds == y).mean()),
        "exit_histogram": np.bincount(exits, minlength=n_exits).tolist(),
        "latency_ms": None, "per_segment_ms": None, "per_part_ms": None,
        "energy": {"per_inference_j": None, "source": None},
    }
    if never and never.get("per_segment_ms") and never.get("latency_ms"):
        seg = np.asarray(never["per_segment_ms"], dtype=np.float64)
        overhead = max(0.0, never["latency_ms"]["mean"] - float(seg.sum()))
        per_sample = np.cumsum(seg)[exits] + overhead
        row["latency_ms"] = latency_stats(per_sample)
        reach = np.array([(exits >= i).mean() for i in range(n_exits)])
        row["per_segment_ms"] = (seg * reach).tolist()
        e = (never.get("energy") or {}).get("per_inference_j")
        if e is not None and never["latency_ms"]["mean"] > 0:
            row["energy"] = {"per_inference_j": e * row["latency_ms"]["mean"] / never["latency_ms"]["mean"],
                             "source": f"estimated:latency-proportional from 'never' ({never['energy']['source']})"}
    return row
