"""The ``early_exit`` mode: segments in sequence, each sample leaving at the first exit its policy accepts."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.executor import OnExit, Tensors
from edge_runtime.modes.base import InferenceResult, Mode, register_mode
from edge_runtime.policies import ExitPolicy

#: the exit outputs the classifier modes (``early_exit``, ``full``) answer with; a bundle whose exits output
#: something else (e.g. a language model's next-token logits) runs in its method's own modes
CLASS_OUTPUT_KINDS = frozenset({"logits"})


def unsupported_outputs(manifest: Any) -> str | None:
    """Why a classifier mode cannot run this bundle (exits that do not answer with class scores), or None."""
    kinds = sorted({e.output_kind for e in manifest.exits} - CLASS_OUTPUT_KINDS)
    return f"its exits output {', '.join(kinds)}, not class scores" if kinds else None


def predictions_of(outputs: np.ndarray) -> np.ndarray:
    """Argmax class per sample for (N, classes) outputs; the sample's flattened argmax otherwise."""
    if outputs.ndim == 2:
        return outputs.argmax(axis=-1)
    if outputs.ndim == 1:
        return np.zeros(outputs.shape[0], dtype=np.int64)
    return outputs.reshape(outputs.shape[0], -1).argmax(axis=-1)


@register_mode
class EarlyExitMode(Mode):
    """The shrinking-batch executor (:func:`edge_runtime.executor.decide_exits`) on the bundle's segments."""

    name = "early_exit"
    description = "segments in sequence; each sample leaves at the first exit its policy accepts"
    uses_policy = True

    def unsupported(self, manifest: Any) -> str | None:
        return unsupported_outputs(manifest)

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        if policy is None:
            policy = runtime.default_policy
        run = runtime.decide(feeds, policy, on_exit=on_exit)
        return InferenceResult(
            predictions=predictions_of(run.outputs), exit_index=run.exit_index, outputs=run.outputs,
            segment_latency_s=run.segment_latency_s, segment_batch_size=run.segment_batch_size,
            sample_latency_s=run.sample_latency_s, latency_s=run.latency_s, mode=self.name, labels=runtime.labels)
