"""The device-only tier: numpy + onnxruntime (+ the serve extra where installed), nothing from the workstation side.

Every bundle here is written by :func:`edge_runtime.synthetic.write_synthetic_bundle` (numpy alone), so the tier
runs on a Pi, an emulated one, or any machine with only the device extras::

    python -m pytest tests/device

Run on its own like that, the tier *is* such a device: importing torch, onnx or converters raises
``ModuleNotFoundError`` from the moment the tests start, and the session fails if any of them was imported at
all (a test module's own imports included). Inside the full suite (where the workstation tests import torch)
the blocker stays off; the subprocess fixtures below still start their Python with it.
"""

from __future__ import annotations

import importlib.abc
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.synthetic import write_synthetic_bundle

#: top-level packages a device does not have: the workstation side
WORKSTATION = ("torch", "torchvision", "onnx", "onnxscript", "converters")
HERE = Path(__file__).resolve().parent

#: code a subprocess runs first to be such a device (the same rule as :class:`WorkstationBlocker`)
BLOCKER_PRELUDE = textwrap.dedent(f"""
    import sys
    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {WORKSTATION!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (a device without the workstation side)",
                                          name=name)
            return None
    sys.meta_path.insert(0, _Blocker())
""")


class WorkstationBlocker(importlib.abc.MetaPathFinder):
    """Refuses to import the workstation packages, as a device without them would."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in WORKSTATION:
            raise ModuleNotFoundError(f"No module named {fullname!r} (the device tier runs without the "
                                      "workstation side)", name=fullname)
        return None


_BLOCKER = WorkstationBlocker()
_state = {"device_only": False}


def workstation_modules() -> list[str]:
    """The workstation modules this process has imported."""
    return sorted(m for m in sys.modules if m.split(".")[0] in WORKSTATION)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    device_only = bool(items) and all(HERE in Path(str(item.path)).parents for item in items)
    _state["device_only"] = device_only
    if device_only and _BLOCKER not in sys.meta_path:
        sys.meta_path.insert(0, _BLOCKER)


@pytest.fixture(scope="session", autouse=True)
def _no_workstation_imports() -> Iterator[None]:
    """Run alone, the tier fails at its end if anything imported torch, onnx or converters."""
    yield
    if _state["device_only"]:
        loaded = workstation_modules()
        packages = sorted({m.split(".")[0] for m in loaded})
        assert not loaded, f"the device tier imported the workstation side: {packages} ({len(loaded)} modules)"


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_bundle(**options)``: a synthetic bundle with these :func:`write_synthetic_bundle` options, written
    once per session and shared (treat it as read-only; copy it to tamper with it)."""
    root = tmp_path_factory.mktemp("synthetic")
    cache: dict[str, Path] = {}

    def make(**options: Any) -> Path:
        key = repr(sorted(options.items()))
        if key not in cache:
            cache[key] = write_synthetic_bundle(root / f"b{len(cache)}", **options)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def blocker_prelude() -> str:
    """Python source that makes the process running it a device without the workstation side."""
    return BLOCKER_PRELUDE


@pytest.fixture(scope="session")
def device_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``device_python(code, timeout=60)``: run ``code`` in a fresh Python that cannot import the workstation side."""

    def run(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", BLOCKER_PRELUDE + textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout)

    return run


@pytest.fixture()
def bundle_copy(make_bundle: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of a 3-exit synthetic bundle, to tamper with."""
    dst = tmp_path / "copy"
    shutil.copytree(make_bundle(num_exits=3), dst)
    return dst
