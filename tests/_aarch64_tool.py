"""``tools/aarch64/run-device-tests`` loaded as a module, for the tests of its parts."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOL = Path(__file__).resolve().parents[1] / "tools" / "aarch64" / "run-device-tests"


@functools.lru_cache(maxsize=1)
def load_tool() -> ModuleType:
    """The script as a module named ``run_device_tests`` (loaded once)."""
    loader = importlib.machinery.SourceFileLoader("run_device_tests", str(TOOL))
    spec = importlib.util.spec_from_loader("run_device_tests", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while a class is built
    loader.exec_module(module)
    return module
