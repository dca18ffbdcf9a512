"""ONNX Runtime backend (CPU execution provider by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_runtime.backends.base import Backend, Session
from edge_runtime.errors import BundleError


class OnnxRuntimeSession(Session):
    """An ``onnxruntime.InferenceSession`` behind the :class:`Session` interface."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        first = session.get_inputs()[0].shape[0] if session.get_inputs() else None
        self.batch_size = first if isinstance(first, int) else None

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, inputs)


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

    def load(self, path: Path) -> Session:
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"onnxruntime could not load the model: {exc}".splitlines()[0], path=path) from None
        return OnnxRuntimeSession(session)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threads": self.threads, "version": ort.__version__, "providers": self.providers}
