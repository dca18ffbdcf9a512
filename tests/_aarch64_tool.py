"""``tools/aarch64``'s modules (``aarch64_board``, ``aarch64_checks``) imported for the tests of their parts."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "aarch64"
#: the script itself (run as a program)
TOOL = TOOLS / "run-device-tests"


def tool_module(name: str) -> ModuleType:
    """``aarch64_board`` or ``aarch64_checks`` (the script puts their folder on ``sys.path`` the same way)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)
