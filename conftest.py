"""Repository-level pytest setup: the docstring examples of ``edge_runtime`` run as doctests (``--doctest-modules``
with ``edge_runtime`` in ``testpaths``, see setup.cfg).

A module whose import needs an optional package that is not installed here (the serve, bench, sensors or LiteRT
extras: a device has only some of them) is left out of doctest collection and listed in the summary, instead of
failing collection; so is a module that raises its own ImportError naming what it needs. A missing package that
is not optional (torch, onnx, converters: the device side must never need them) still fails.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
#: packages of the optional extras (serve, bench, sensors, litert) and of optional features (datasets, progress)
OPTIONAL = frozenset({"fastapi", "starlette", "pydantic", "uvicorn", "prometheus_client", "orjson", "httptools",
                      "uvloop", "matplotlib", "smbus2", "ai_edge_litert", "tflite_runtime", "sklearn", "PIL", "tqdm"})
_left_out: dict[str, str] = {}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    path = Path(collection_path)
    if path.suffix != ".py" or path.name == "__main__.py" or not path.is_relative_to(ROOT / "edge_runtime"):
        return None  # (pytest never imports a __main__.py for doctests: it would run the program)
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in OPTIONAL:
            raise
        _left_out[module] = missing
        return True
    except ImportError as exc:  # a module's own "needs <package>" (the litert backend finds its interpreter)
        _left_out[module] = str(exc)
        return True
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _left_out:
        terminalreporter.write_line("doctests not collected (optional package not installed): " + ", ".join(
            f"{m} ({pkg})" for m, pkg in sorted(_left_out.items())))
