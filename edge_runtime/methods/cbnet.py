"""The ``cbnet`` inference mode (CBNet, 2024): converting autoencoder -> lightweight classifier, on the device.

A bundle converted with a recipe ``cbnet`` section holds two extra graphs under
``manifest.cbnet.parts``: ``autoencoder`` (model-ready input -> converted input of the same
shape) and ``classifier`` (the BranchyNet's first segment + first exit head -> logits).
``Runtime.infer(x, mode="cbnet")`` runs them in sequence; every sample is answered at exit 0.
The parts' sessions are opened on the first ``cbnet`` call and kept with the runtime.
Nothing here imports torch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.policies import ExitPolicy
from edge_runtime.runtime import MODES, InferenceResult, Runtime, SegmentRunner

def has_cbnet(runtime: Runtime) -> bool:
    """Whether the runtime's bundle holds CBNet parts."""
    return bool(runtime.manifest.get("cbnet", {}).get("parts"))


class CBNetRunner:
    """Runs a bundle's CBNet parts: ``autoencoder`` then a classifier part.

    Args:
        runtime: a loaded bundle with a ``cbnet`` manifest section.
        classifier_part: which classifier part answers (``classifier``, the one ``mode="cbnet"``
            uses; ``classifier_base``, the shared-weight one, where the bundle kept it).

    Raises:
        ConfigError: the bundle has no CBNet parts, or not the one asked for.

    Example:
        >>> rt = edge_runtime.load_bundle("out/branchynet_resnet")   # doctest: +SKIP
        >>> CBNetRunner(rt).run(x).predictions                        # doctest: +SKIP
    """

    def __init__(self, runtime: Runtime, classifier_part: str = "classifier") -> None:
        if not has_cbnet(runtime):
            raise ConfigError(
                f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet parts (no 'cbnet' section in its "
                f"manifest), so mode 'cbnet' cannot run; its modes: {', '.join(runtime.modes())}. "
                "Convert with a recipe 'cbnet' section to add them.")
        parts = runtime.manifest["cbnet"]["parts"]
        if classifier_part not in parts:
            raise ConfigError(f"{runtime.bundle.root}: bundle {runtime.name!r} has no CBNet part "
                              f"{classifier_part!r}; it has {', '.join(sorted(parts))}")
        self.runtime = runtime
        self.part_names = ("autoencoder", classifier_part)
        self.runners: list[SegmentRunner] = []
        for name in self.part_names:
            files = runtime.bundle.files_for(parts[name]["files"], f"cbnet.parts.{name}.files",
                                             runtime.backend.file_format, runtime.precision)
            self.runners.append(SegmentRunner([runtime.backend.load(f.path) for f in files], f"cbnet {name}"))
        out_shape = list(parts["autoencoder"]["outputs"][0]["shape"][1:])
        if out_shape != list(runtime.input_spec["shape"][1:]):
            raise BundleError(f"autoencoder output shape {out_shape} differs from the input shape "
                              f"{runtime.input_spec['shape'][1:]}", path=runtime.bundle.manifest_path,
                              field="cbnet.parts.autoencoder.outputs")

    def convert(self, x: np.ndarray) -> np.ndarray:
        """The autoencoder's converted inputs (model-ready, same shape as ``x``)."""
        return self.runners[0].run(x)[0]

    def run(self, x: np.ndarray) -> InferenceResult:
        """Autoencoder -> classifier on a checked batch (use ``Runtime.infer(x, mode="cbnet")``)."""
        rt = self.runtime
        clock = time.perf_counter
        start = clock()
        converted = self.runners[0].run(x)[0]
        t1 = clock()
        logits = self.runners[1].run(converted)[0]
        t2 = clock()
        n = x.shape[0]
        seg_latency = np.zeros(rt.num_exits)
        seg_latency[0] = t2 - start
        seg_batch = np.zeros(rt.num_exits, dtype=np.int64)
        seg_batch[0] = n
        return InferenceResult(
            predictions=logits.argmax(axis=-1), exit_index=np.zeros(n, dtype=np.int64), outputs=logits,
            segment_latency_s=seg_latency, segment_batch_size=seg_batch, sample_latency_s=np.full(n, t2 - start),
            latency_s=t2 - start, mode="cbnet", labels=rt.labels,
            part_latency_s={self.part_names[0]: t1 - start, self.part_names[1]: t2 - t1},
        )


def cbnet_runner(runtime: Runtime) -> CBNetRunner:
    """The runtime's CBNet runner, created (sessions opened) on first use and kept on the runtime."""
    runner: Any = runtime.__dict__.get("_cbnet_runner")
    if runner is None:
        runner = CBNetRunner(runtime)
        runtime.__dict__["_cbnet_runner"] = runner
    return runner


def _run_cbnet(runtime: Runtime, x: np.ndarray, policy: ExitPolicy) -> InferenceResult:
    return cbnet_runner(runtime).run(x)


MODES.register("cbnet", _run_cbnet)
