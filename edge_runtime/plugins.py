"""How the device side finds what plugs into it, without naming it.

- Paper methods' device code: every module or package under ``edge_runtime/methods/`` is imported
  on the first look-up of a registry declared with ``plugins="edge_runtime.methods"`` (modes, policies,
  bench rows, targets; see :func:`edge_runtime.registry.discover_plugins`); each registers itself.
- Workstation plug-ins (the ``convert``/``demo``/``export`` commands, the PyTorch-eager bench row):
  declared as entry points in ``setup.cfg`` (groups :data:`COMMAND_GROUP`, :data:`BENCH_GROUP`), so
  ``edge_runtime`` never imports ``converters`` or ``torch`` — on a device without them the entry
  points load nothing or fail with a clear "install the workstation extra" message.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Callable
from typing import Any

COMMAND_GROUP = "edge_runtime.commands"
BENCH_GROUP = "edge_runtime.bench_rows"
def entry_points(group: str) -> list[Any]:
    """The installed entry points of ``group``, sorted by name (empty when the package is not installed)."""
    eps = md.entry_points(group=group)  # the group= selection exists from Python 3.10 (python_requires)
    seen: dict[str, Any] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)  # an editable install can list the same entry point twice
    return [seen[k] for k in sorted(seen)]


def load_entry_point(ep: Any) -> Callable[..., Any]:
    """Load one entry point's object."""
    return ep.load()
