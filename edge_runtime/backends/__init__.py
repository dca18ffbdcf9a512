"""Inference backends, found by name and imported on first use.

A device without onnxruntime can still use LiteRT and the reverse: nothing here
imports a backend library until :func:`create_backend` asks for it.
"""

from edge_runtime.backends.base import BACKENDS, Backend, Session, create_backend

BACKENDS.register_lazy("onnxruntime", "edge_runtime.backends.onnxruntime_backend:OnnxRuntimeBackend")
BACKENDS.register_lazy("litert", "edge_runtime.backends.litert_backend:LiteRTBackend")

#: the backend that runs each manifest file ``format`` (known without importing any backend library)
FORMAT_BACKENDS: dict[str, str] = {"onnx": "onnxruntime", "tflite": "litert"}
#: backend name -> the file format it runs (without importing the backend)
BACKEND_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "litert": "tflite"}

__all__ = ["BACKENDS", "BACKEND_FORMATS", "FORMAT_BACKENDS", "Backend", "Session", "create_backend"]
