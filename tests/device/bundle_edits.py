"""A helper the device tier's bundle tests share (a plain module: this tier runs alone on the board, without
``tests/_helpers.py``; its fixtures, ``bundle_copy`` included, live in ``conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def edit_manifest(bundle: Path, fn: Callable[[dict[str, Any]], Any]) -> None:
    """Rewrite ``bundle``'s manifest.json with ``fn`` applied to it (for tampering tests)."""
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))
