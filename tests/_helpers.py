"""Helpers several test modules import (``from _helpers import ...``; a conftest is not a module to import from:
with tests/device/conftest.py beside it, which one ``conftest`` names depends on the collection order)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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


def policy_input(policy: Any, logits: np.ndarray, seed: int = 0) -> Any:
    """What the executor hands ``policy.decide`` for a segment whose exit answered ``logits``: the array itself
    for a policy that reads only ``exit``, else a dict of the outputs ``policy.reads`` names, the ones beyond
    ``exit`` (a halting probability, an uncertainty score) one seeded value in (0, 1) per sample."""
    reads = tuple(policy.reads)
    if reads == ("exit",):
        return logits
    rng = np.random.default_rng(seed)
    return {k: logits if k == "exit" else rng.uniform(0.01, 0.99, len(logits)).astype(np.float32) for k in reads}
