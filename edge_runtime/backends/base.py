"""The inference-backend interface and registry (backends are imported on first use)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("inference backend")


class Session(ABC):
    """One loaded model file, ready to run.

    Attributes:
        input_names: the graph's input names, in order.
        output_names: the graph's output names, in order.
        batch_size: the fixed batch size of the file, or None when the batch axis is dynamic.
    """

    input_names: list[str]
    output_names: list[str]
    batch_size: int | None = None

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; returns the outputs in :attr:`output_names` order."""


class Backend(ABC):
    """Creates sessions for one model-file format.

    Attributes:
        name: registry name (``onnxruntime``, ``litert``).
        file_format: the manifest's ``format`` value this backend runs (``onnx``, ``tflite``).
    """

    name: str = ""
    file_format: str = ""

    def __init__(self, threads: int | None = None, **options: Any) -> None:
        self.threads = threads
        self.options = options

    @abstractmethod
    def load(self, path: Path) -> Session:
        """Load one model file into a session."""

    def describe(self) -> dict[str, Any]:
        """Versions and settings, for reports."""
        return {"name": self.name, "threads": self.threads}


def create_backend(name: str, *, threads: int | None = None, **options: Any) -> Backend:
    """Build a registered backend by name, importing its module on first use.

    Example:
        >>> backend = create_backend("onnxruntime", threads=1)
    """
    return BACKENDS.get(name)(threads=threads, **options)
