"""The inference-backend interface and registry (backends are imported on first use).

A backend loads a model file from its *bytes* (:meth:`Backend.load_bytes`): the bundle loader reads each file
once, checks those bytes against the manifest's sha256 and hands the same bytes over, so a file swapped on disk
between the check and the load cannot slip in.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.manifest import TensorSpec
from edge_runtime.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("inference backend")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


def check_threads(threads: Any, what: str = "threads") -> int | None:
    """A thread count someone asked for: None, or 1 .. the usable cores (more only oversubscribes the CPU; a huge
    count made backends hang creating threads).

    Raises:
        ConfigError: not an integer, <= 0, or more than the usable cores; names ``what``.

    Example:
        >>> check_threads(1)
        1
    """
    if threads is None:
        return None
    cores = usable_cores()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= int(threads) <= cores:
        raise ConfigError(f"{what}: expected an integer from 1 to {cores} (the CPU cores this process may use), "
                          f"got {threads!r}")
    return int(threads)


class Session(ABC):
    """One loaded model file, ready to run.

    Attributes:
        input_names: the graph's input names, in order.
        output_names: the graph's output names, in order.
        batch_size: the fixed batch size of the file, or None when the batch axis is dynamic.
        tensors: every input and output by name, with the shape the graph declares (None for a symbolic axis) and
            its dtype, when the backend can tell (None otherwise); the loader checks it against the manifest.
    """

    input_names: list[str]
    output_names: list[str]
    batch_size: int | None = None
    tensors: dict[str, TensorSpec] | None = None

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; returns the outputs in :attr:`output_names` order.

        Raises:
            BackendError: the backend failed to run the graph (names the file).
        """


class Backend(ABC):
    """Creates sessions for one model-file format.

    Attributes:
        name: registry name (``onnxruntime``, ``litert``).
        file_format: the manifest's ``format`` value this backend runs (``onnx``, ``tflite``).
    """

    name: str = ""
    file_format: str = ""

    def __init__(self, threads: int | None = None, **options: Any) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                    or threads < 1):
            raise ConfigError(f"threads: expected a positive integer, got {threads!r}")
        self.threads = threads
        self.options = options

    @abstractmethod
    def load_bytes(self, data: bytes, *, source: str | Path = "<memory>") -> Session:
        """Load one model file from its bytes (the bytes the bundle's sha256 pinned) into a session.

        Args:
            data: the file's content.
            source: the file it came from, named in errors.

        Raises:
            BundleError: the bytes are not a model this backend can load (names ``source``).
        """

    def load(self, path: str | Path) -> Session:
        """Read one model file and load its bytes (tools and tests; a bundle's files go through
        :meth:`edge_runtime.bundle.Bundle.read_file`, which checks their sha256 first).

        Raises:
            BundleError: the file cannot be read or loaded (names it).
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read the model file ({exc.strerror or exc})", path=path) from None
        return self.load_bytes(data, source=path)

    def describe(self) -> dict[str, Any]:
        """Versions and settings, for reports."""
        return {"name": self.name, "threads": self.threads}


def create_backend(name: str, *, threads: int | None = None, **options: Any) -> Backend:
    """Build a registered backend by name, importing its module on first use.

    Example:
        >>> backend = create_backend("onnxruntime", threads=1)
    """
    return BACKENDS.get(name)(threads=threads, **options)
