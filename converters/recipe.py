"""YAML recipes: safe-loaded, validated with errors that name the bad key, resolved and written into the bundle.

A recipe names registered components as ``name:`` + ``kwargs:`` (torchdistill's shape)::

    name: tiny_cnn
    seed: 0
    model: {name: tiny_cnn, kwargs: {image_size: 16}}
    policy: {name: entropy, kwargs: {}, thresholds: 0.5}
    export: {tolerance: 1.0e-4, verify_batch_sizes: [1, 3]}

Sections other issues add (``data``, ``heads``, ``train``, ``calibrate``, ``cbnet``) register a
validator in :data:`SECTIONS`; an unknown top-level key is an error naming it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from edge_runtime.errors import ConfigError

#: top-level recipe sections: key -> (required, validator(value, where) -> resolved value)
SECTIONS: dict[str, tuple[bool, Callable[[Any, str], Any]]] = {}


def section(key: str, *, required: bool = False) -> Callable[[Callable[[Any, str], Any]], Callable[[Any, str], Any]]:
    """Register the validator of a top-level recipe section."""

    def decorator(fn: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        if key in SECTIONS:
            raise ValueError(f"recipe section {key!r} is already registered")
        SECTIONS[key] = (required, fn)
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


@section("name", required=True)
def _name(value: Any, where: str) -> str:
    expect_type(value, str, where)
    if not value or "/" in value or value.startswith("."):
        raise ConfigError(f"recipe key {where}: must be a plain non-empty name, got {value!r}")
    return value


@section("seed")
def _seed(value: Any, where: str) -> int:
    return int(expect_type(value, int, where))


@section("model", required=True)
def _model(value: Any, where: str) -> dict[str, Any]:
    from converters.zoo import MODELS

    return named_component(value, where, MODELS)


@section("input")
def _input(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"shape": None, "preprocessing": None})
    if spec["shape"] is not None:
        shape = expect_type(spec["shape"], list, f"{where}.shape")
        for i, d in enumerate(shape):
            if not isinstance(d, int) or isinstance(d, bool) or d < 1:
                raise ConfigError(f"recipe key {where}.shape[{i}]: expected a positive integer, got {d!r}")
    return spec


@section("policy")
def _policy(value: Any, where: str) -> dict[str, Any]:
    from edge_runtime.policies import POLICIES

    spec = expect_mapping(value, where, {"name": "entropy", "kwargs": {}, "thresholds": None})
    expect_type(spec["name"], str, f"{where}.name")
    if spec["name"] not in POLICIES:
        raise ConfigError(f"recipe key {where}.name: unknown exit policy {spec['name']!r}; "
                          f"known: {', '.join(POLICIES.names())}")
    spec["kwargs"] = expect_type(spec["kwargs"] or {}, dict, f"{where}.kwargs")
    thr = spec["thresholds"]
    if thr is not None and not isinstance(thr, (int, float, list)) or isinstance(thr, bool):
        raise ConfigError(f"recipe key {where}.thresholds: expected a number or a list of numbers, got {thr!r}")
    return spec


@section("export")
def _export(value: Any, where: str) -> dict[str, Any]:
    spec = expect_mapping(value, where, {"tolerance": 1e-4, "opset": 17, "verify_batch_sizes": [1, 3],
                                         "full_model": True, "backends": ["onnx"], "tflite_batch_sizes": [1],
                                         "quantize": [], "fp16_tolerance": 1e-2})
    tol = expect_type(spec["tolerance"], (int, float), f"{where}.tolerance")
    if tol <= 0:
        raise ConfigError(f"recipe key {where}.tolerance: must be > 0, got {tol}")
    expect_type(spec["opset"], int, f"{where}.opset")
    sizes = expect_type(spec["verify_batch_sizes"], list, f"{where}.verify_batch_sizes")
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise ConfigError(f"recipe key {where}.verify_batch_sizes: expected positive integers, got {sizes!r}")
    expect_type(spec["full_model"], bool, f"{where}.full_model")
    if expect_type(spec["fp16_tolerance"], (int, float), f"{where}.fp16_tolerance") <= 0:
        raise ConfigError(f"recipe key {where}.fp16_tolerance: must be > 0, got {spec['fp16_tolerance']}")
    _export_variants(spec, where)
    return spec


def _export_variants(spec: dict[str, Any], where: str) -> None:
    """``backends``, ``tflite_batch_sizes``, ``quantize``: checked here so errors name the recipe key."""
    from converters.quantize import QUANTIZERS

    for key in ("backends", "quantize"):
        names = expect_type(spec[key], list, f"{where}.{key}")
        if any(not isinstance(n, str) for n in names):
            raise ConfigError(f"recipe key {where}.{key}: expected a list of names, got {names!r}")
    if "onnx" not in spec["backends"] or set(spec["backends"]) - {"onnx", "tflite"}:
        raise ConfigError(f"recipe key {where}.backends: expected [onnx] or [onnx, tflite], got {spec['backends']!r}")
    sizes = expect_type(spec["tflite_batch_sizes"], list, f"{where}.tflite_batch_sizes")
    if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
        raise ConfigError(f"recipe key {where}.tflite_batch_sizes: expected positive integers, got {sizes!r}")
    for name in spec["quantize"]:
        if name not in QUANTIZERS:
            raise ConfigError(f"recipe key {where}.quantize: unknown variant {name!r}; known: "
                              f"{', '.join(QUANTIZERS.names())}")
        if name.split("/")[0] not in spec["backends"]:
            raise ConfigError(f"recipe key {where}.quantize: {name!r} needs {name.split('/')[0]!r} in {where}.backends")


@section("cbnet")
def _cbnet(value: Any, where: str) -> dict[str, Any]:
    """CBNet's converting autoencoder + lightweight classifier (issue 8); see :func:`converters.cbnet.parse_cbnet_section`."""
    from converters.cbnet import parse_cbnet_section

    return parse_cbnet_section(value, where)


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
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"recipe key {unknown[0]!r} is not known; allowed: {', '.join(sorted(SECTIONS))}")
    resolved: dict[str, Any] = {}
    for key, (required, validator) in SECTIONS.items():
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
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return parse_recipe(data, source=p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


# sections that train exits (issue 7): data, heads, train, calibrate
from converters import _recipe_sections  # noqa: E402,F401
