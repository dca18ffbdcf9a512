"""Strict JSON reading shared by the manifest loader and the daemon's request codec: no key twice in an object,
bounded nesting, finite numbers only."""

from __future__ import annotations

import math
from typing import Any


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses a key given twice in one object (the standard
    library and orjson keep the last one silently).

    Raises:
        ValueError: naming the key.
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice in one object")
        out[key] = value
    return out


def json_problem(doc: Any, limit: int) -> tuple[str, str] | None:
    """The first thing a strict reader refuses in a parsed JSON document, as ``(field, why)``: nesting deeper than
    ``limit`` objects/arrays, or a number that is not finite (``NaN``/``Infinity`` literals, ``1e400``). Walked level
    by level, without recursion.

    Example:
        >>> json_problem({"a": [[1]]}, 3) is None, json_problem({"a": [[1]]}, 2)
        (True, ('a.0', 'nests deeper than 2 levels'))
        >>> json_problem({"t": [0.5, float("inf")]}, 8)
        ('t.1', 'inf is not a finite number')
        >>> json_problem({"a": [[]]}, 2) is None
        True
    """
    level: list[tuple[str, Any]] = [("", doc)]
    for depth in range(limit + 1):
        nxt: list[tuple[str, Any]] = []
        for where, item in level:
            if isinstance(item, float) and not math.isfinite(item):
                return where or "(top level)", f"{item} is not a finite number"
            if not isinstance(item, (dict, list)) or not item:
                continue
            if depth == limit:
                return where or "(top level)", f"nests deeper than {limit} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            nxt += [(f"{where}.{k}" if where else str(k), v) for k, v in children]
        if not nxt:
            return None
        level = nxt
    return None
