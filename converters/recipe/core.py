"""YAML recipes: safe-loaded, validated with errors that name the bad key, resolved and written into the bundle.

A recipe names registered components as ``name:`` + ``kwargs:`` (torchdistill's shape)::

    name: tiny_cnn
    seed: 0
    model: {name: tiny_cnn, kwargs: {image_size: 16}}
    policy: {name: entropy, kwargs: {}, thresholds: 0.5}
    export: {tolerance: 1.0e-4, verify_batch_sizes: [1, 3]}

Sections (built-in ones in :mod:`converters.recipe.builtin`, a method's own in its folder) register a
validator in :data:`SECTIONS`; an unknown top-level key is an error naming it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from converters.recipe.sections import SECTIONS
from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: every section resolved with its defaults filled in."""

    sections: dict[str, Any]
    source: Path | None = field(default=None, compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.sections[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.sections.get(key, default)

    @property
    def name(self) -> str:
        return self.sections["name"]

    def resolved(self) -> dict[str, Any]:
        """The resolved recipe as plain data (written into the bundle)."""
        return copy.deepcopy(self.sections)


def parse_recipe(data: Any, *, source: str | Path | None = None) -> Recipe:
    """Validate recipe data (already loaded) and fill in defaults.

    Raises:
        ConfigError: naming the first bad key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'recipe'}: a recipe must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS.names()))
    if unknown:
        raise ConfigError(f"recipe key {unknown[0]!r} is not known; allowed: {', '.join(SECTIONS.names())}")
    resolved: dict[str, Any] = {}
    for key in SECTIONS.ordered():
        required, validator = SECTIONS.get(key)
        if key not in data:
            if required:
                raise ConfigError(f"recipe key {key!r} is required")
            if key in ("policy", "export", "input", "seed"):
                resolved[key] = validator({} if key != "seed" else 0, key)
            continue
        resolved[key] = validator(data[key], key)
    return Recipe(resolved, Path(source) if source else None)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Safe-load a YAML recipe file (no tags that run code), apply dotted overrides, validate.

    Example:
        >>> r = load_recipe("converters/recipes/tiny_cnn.yaml")     # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: recipe file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value, p)
    try:
        return parse_recipe(data, source=p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _set_dotted(data: Any, dotted: str, value: Any, source: Path) -> None:
    """Set ``a.b.0.c`` in nested mappings and lists (a number indexes a list)."""
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{source}: override {dotted!r}: {key!r} is not an index of a list of {len(node)}")
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            raise ConfigError(f"{source}: override {dotted!r}: {key!r} is inside a {type(node).__name__}")
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ConfigError(f"{source}: override {dotted!r}: {leaf!r} is not an index of a list of {len(node)}")
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"{source}: override {dotted!r}: cannot set a key inside a {type(node).__name__}")
