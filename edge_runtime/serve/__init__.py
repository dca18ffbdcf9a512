"""The device daemon: a KServe v2 / Triton-style HTTP API over early-exit bundles, with
micro-batching across requests, Prometheus metrics, hot reload and systemd integration.

Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client); importing
``edge_runtime`` alone never imports this package.

Example:
    >>> from edge_runtime.serve import ServeConfig, serve          # doctest: +SKIP
    >>> serve({"tiny": "out/tiny_cnn"}, ServeConfig(port=8080))    # doctest: +SKIP
"""

from edge_runtime.serve.batcher import Answer, MicroBatcher, Overloaded
from edge_runtime.serve.config import ServeConfig, resolve_token
from edge_runtime.serve.controller import SLO, AccuracyMonitor, SLOController
from edge_runtime.serve.notify import Notifier
from edge_runtime.serve.unit import UnitSettings, unit_text

__all__ = ["Answer", "MicroBatcher", "Overloaded", "ServeConfig", "resolve_token", "Notifier", "UnitSettings",
           "unit_text", "serve", "create_app", "ModelRepository", "SLO", "SLOController", "AccuracyMonitor",
           "SLORuntime"]


def __getattr__(name: str):  # the web stack is imported only when asked for
    if name == "serve":
        from edge_runtime.serve.daemon import serve
        return serve
    if name == "create_app":
        from edge_runtime.serve.app import create_app
        return create_app
    if name == "SLORuntime":
        from edge_runtime.serve.adaptive import SLORuntime
        return SLORuntime
    if name == "ModelRepository":
        from edge_runtime.serve.repository import ModelRepository
        return ModelRepository
    raise AttributeError(name)
