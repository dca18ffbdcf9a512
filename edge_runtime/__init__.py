"""edge_runtime: the device side — load an early-exit bundle and run it, leaving early per sample.

Imports only numpy (and, on first use, one inference backend); never torch.

Example:
    >>> import edge_runtime
    >>> rt = edge_runtime.load_bundle("out/tiny_cnn")          # doctest: +SKIP
    >>> result = rt.infer(x)                                   # doctest: +SKIP
"""

from edge_runtime.backends import BACKENDS, Backend, Session, create_backend
from edge_runtime.bundle import FORMAT_VERSION, Bundle, read_bundle, validate_manifest
from edge_runtime.errors import (
                                 BackendError,
                                 BundleError,
                                 ConfigError,
                                 EdgeRuntimeError,
                                 ExportError,
                                 InputError,
                                 OutputError,
)
from edge_runtime.policies import POLICIES, ExitPolicy, ScorePolicy, create_policy
from edge_runtime.registry import Registry, UnknownNameError
from edge_runtime.runtime import MODES, InferenceResult, Runtime, load_bundle, simulate_exits

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "Backend", "Session", "create_backend",
    "FORMAT_VERSION", "Bundle", "read_bundle", "validate_manifest",
    "BackendError", "BundleError", "ConfigError", "EdgeRuntimeError", "ExportError", "InputError", "OutputError",
    "POLICIES", "ExitPolicy", "ScorePolicy", "create_policy",
    "Registry", "UnknownNameError",
    "MODES", "InferenceResult", "Runtime", "load_bundle", "simulate_exits",
    "__version__",
]
