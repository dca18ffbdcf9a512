"""The recipe-section registry and the validators' helpers: errors always name the recipe key.

A section is a top-level recipe key with a validator ``(value, where) -> resolved value``;
built-in sections live in :mod:`converters.recipe.builtin`, a method's own section in the
method's folder. This module imports nothing else from ``converters``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from edge_runtime.errors import ConfigError
from edge_runtime.registry import Registry

#: top-level recipe sections: key -> (required, validator(value, where) -> resolved value)
SECTIONS: Registry[tuple[bool, Callable[[Any, str], Any]]] = Registry("recipe section", plugins="converters.methods")


def section(key: str, *, required: bool = False) -> Callable[[Callable[[Any, str], Any]], Callable[[Any, str], Any]]:
    """Register the validator of a top-level recipe section."""

    def decorator(fn: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        SECTIONS.register(key, (required, fn))
        return fn

    return decorator


def expect_mapping(value: Any, where: str, allowed: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``value`` is a mapping with only ``allowed`` keys; fill defaults from ``allowed``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"recipe key {where!r}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"recipe key {where}.{unknown[0]!r} is not known; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in value:
            raise ConfigError(f"recipe key {where}.{key} is required")
    out = copy.deepcopy(allowed)
    out.update(copy.deepcopy(value))
    return out


def expect_type(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    """Check a recipe value's type; bool is never accepted where a number is expected."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"recipe key {where}: expected {_names(types)}, got a boolean")
    if not isinstance(value, types):
        raise ConfigError(f"recipe key {where}: expected {_names(types)}, got {type(value).__name__} {value!r}")
    return value


def _names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def named_component(value: Any, where: str, registry: Any = None) -> dict[str, Any]:
    """Validate a ``{name: ..., kwargs: {...}}`` entry (and that the name is registered)."""
    spec = expect_mapping(value, where, {"name": None, "kwargs": {}}, required=("name",))
    expect_type(spec["name"], str, f"{where}.name")
    expect_type(spec["kwargs"] or {}, dict, f"{where}.kwargs")
    spec["kwargs"] = spec["kwargs"] or {}
    if registry is not None and spec["name"] not in registry:
        raise ConfigError(f"recipe key {where}.name: unknown {registry.kind} {spec['name']!r}; "
                          f"known: {', '.join(registry.names())}")
    return spec
