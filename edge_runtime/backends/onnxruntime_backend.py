"""ONNX Runtime backend (CPU execution provider by default).

Sessions are created from a file's bytes. A graph that keeps tensors as ONNX *external data* is refused before
onnxruntime sees it: onnxruntime would read those tensors from other files by name — files no sha256 pins,
possibly outside the bundle (an absolute ``location``, ``../``, a link) — so the bundle's checks would not cover
the model that runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_runtime._onnx_proto import external_data_tensors
from edge_runtime.backends.base import Backend, Session
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.manifest import TensorSpec

#: onnxruntime's tensor type strings -> the manifest's dtype names
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}
#: what onnxruntime adds to its messages that a user (or an HTTP client) should not see: its status prefix and the
#: C++ source locations of the check that failed
_NOISE = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*|\S*onnxruntime\S*\.(?:cc|h|cpp):\d+\s*|"
                    r"\S+\.(?:cc|h|cpp):\d+\s+\S+::\S+\s*")


def clean_message(exc: BaseException) -> str:
    """onnxruntime's exception as one readable line: no status prefix, no C++ source locations.

    Example:
        >>> clean_message(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"))
        'Got invalid dimensions'
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return _NOISE.sub("", first).strip() or type(exc).__name__


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, arg.type))


class OnnxRuntimeSession(Session):
    """An ``onnxruntime.InferenceSession`` behind the :class:`Session` interface."""

    def __init__(self, session: ort.InferenceSession, source: str | Path = "<memory>") -> None:
        self._session = session
        self._source = source
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in outputs]
        first = inputs[0].shape[0] if inputs and inputs[0].shape else None
        self.batch_size = first if isinstance(first, int) else None
        self.tensors = {t.name: _spec(t) for t in [*inputs, *outputs]}
        # on the CPU provider, call the compiled session directly: the Python wrapper's per-call checks (provider
        # fallback, graph-capture flags, output-name lookup) cost ~2 us, as much as a tiny segment's whole run
        self._run = session.run
        inner_run = getattr(getattr(session, "_sess", None), "run", None)
        if session.get_providers() == ["CPUExecutionProvider"] and callable(inner_run):
            self._run = inner_run

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._run(self.output_names, inputs, None)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
            raise BackendError(f"onnxruntime failed to run the graph: {clean_message(exc)}",
                               path=self._source) from None


class OnnxRuntimeBackend(Backend):
    """Runs ``.onnx`` files with onnxruntime.

    Args:
        threads: intra-op threads (None: onnxruntime's default).
        providers: execution providers, default ``["CPUExecutionProvider"]``.
    """

    name = "onnxruntime"
    file_format = "onnx"

    def __init__(self, threads: int | None = None, providers: list[str] | None = None, **options: Any) -> None:
        super().__init__(threads, **options)
        self.providers = providers or ["CPUExecutionProvider"]

    def load_bytes(self, data: bytes, *, source: str | Path = "<memory>") -> Session:
        try:
            external = external_data_tensors(data)
        except ValueError as exc:
            raise BundleError(f"onnxruntime could not load the model: not a valid ONNX protobuf ({exc})",
                              path=source) from None
        if external:
            names = ", ".join(repr(n) for n, _ in external[:3]) + (" ..." if len(external) > 3 else "")
            raise BundleError(f"the graph keeps {len(external)} tensor(s) ({names}) as ONNX external data (in "
                              f"{external[0][1]!r}); bundles refuse external data, which no sha256 in the manifest "
                              "pins: export with the weights inside the .onnx file", path=source)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, sess_options=so, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"onnxruntime could not load the model: {clean_message(exc)}", path=source) from None
        return OnnxRuntimeSession(session, source)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threads": self.threads, "version": ort.__version__, "providers": self.providers}
