"""Helpers several test modules import (``from _helpers import ...``; a conftest is not a module to import from:
with tests/device/conftest.py beside it, which one ``conftest`` names depends on the collection order)."""

from __future__ import annotations

import json
from pathlib import Path

#: the workstation modules the device-side CLI and bench may load through their entry points: light, no torch
PLUGIN_MODULES = ("converters", "converters.pipeline", "converters.pipeline.cli_convert",
                  "converters.pipeline.cli_demo", "converters.pipeline.cli_export", "converters.pipeline.bench_rows")
#: Python expression (for subprocess snippets) listing the heavy workstation modules a device process loaded
HEAVY_MODULES = ("sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx') "
                 f"or (m.split('.')[0] == 'converters' and m not in {PLUGIN_MODULES!r}))")


def manifest_json(bundle: Path) -> dict:
    """A bundle's manifest as written on disk (plain JSON), for tests of the file format itself."""
    return json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))


def assert_user_modes(root: Path) -> None:
    """Every file under ``root`` has mode 0666 & ~umask and every directory 0777 & ~umask (what a user expects, and
    what lets a service account read a bundle another account built); skips under an umask that hides files anyway.
    (tests/device keeps its own copy: that tier does not import this module.)"""
    import os
    import stat

    import pytest

    umask = os.umask(0)
    os.umask(umask)
    if umask & 0o044:
        pytest.skip(f"umask {umask:04o} hides files from group/other anyway")
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert mode == want, f"{p}: mode {mode:04o}, expected {want:04o}"
