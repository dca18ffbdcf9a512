"""The ``full`` mode: the unsplit model as one graph when the bundle has it (else every segment, nobody leaving)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime.executor import OnExit, Tensors
from edge_runtime.modes.base import InferenceResult, Mode, register_mode
from edge_runtime.modes.early_exit import predictions_of, unsupported_outputs
from edge_runtime.policies import ExitPolicy, create_policy


@register_mode
class FullMode(Mode):
    """The baseline a user would otherwise deploy: one graph, input to the final exit's output."""

    name = "full"
    description = "the one-graph model (the baseline), or every segment when the bundle has no one-graph file"

    def unsupported(self, manifest: Any) -> str | None:
        return unsupported_outputs(manifest)

    def run(self, runtime: Any, feeds: Tensors, policy: ExitPolicy | None, *,
            on_exit: OnExit | None = None) -> InferenceResult:
        graph = runtime.full_model_runner
        n = int(next(iter(feeds.values())).shape[0])
        if graph is None:  # no one-graph file: every segment, policy never
            run = runtime.decide(feeds, create_policy("never", runtime.num_exits), on_exit=on_exit)
            return InferenceResult(
                predictions=predictions_of(run.outputs), exit_index=run.exit_index, outputs=run.outputs,
                segment_latency_s=run.segment_latency_s, segment_batch_size=run.segment_batch_size,
                sample_latency_s=run.sample_latency_s, latency_s=run.latency_s, mode=self.name,
                labels=runtime.labels)
        start = time.perf_counter()
        out = graph.run(feeds)[graph.output_names[0]]
        elapsed = time.perf_counter() - start
        last = runtime.num_exits - 1
        if on_exit is not None:
            on_exit(np.arange(n), last, out, elapsed)
        seg_latency = np.zeros(runtime.num_exits)
        seg_latency[-1] = elapsed
        return InferenceResult(
            predictions=predictions_of(out), exit_index=np.full(n, last, dtype=np.int64), outputs=out,
            segment_latency_s=seg_latency, segment_batch_size=np.full(runtime.num_exits, n, dtype=np.int64),
            sample_latency_s=np.full(n, elapsed), latency_s=elapsed, mode=self.name, labels=runtime.labels)
