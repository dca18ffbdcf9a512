"""The fuzz tier, workstation side (issue 16): hypothesis over the recipe parser.

Property: a mutated shipped recipe (or arbitrary YAML text) is either a valid :class:`Recipe` or refused with a
:class:`~edge_runtime.errors.ConfigError` whose one-line message names the recipe key (or the file) — never
another exception. Bounded and derandomized in the default tier, many more examples under ``-m slow``.
(The manifest and request fuzzers are in tests/device/test_device_fuzz.py; the small path/mutation helpers are
repeated here because that tier does not import this one's modules.)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from converters.pipeline.convert import build_model
from converters.pipeline.stages import STAGES
from converters.recipe import load_recipe, parse_recipe
from edge_runtime.errors import ConfigError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "converters" / "recipes").glob("*.yaml"))}
QUICK, LONG = 100, 3000
_COMMON: dict[str, Any] = {"deadline": None, "database": None,
                           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8) | st.sampled_from([0, -1, 1e400, 2**63, "../x", "\x00", "auto", "cuda", 1.5, ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    out = copy.deepcopy(doc)
    if not path:
        return value if op == "replace" else out
    node = out
    for key in path[:-1]:
        node = node[key]
    leaf = path[-1]
    if op == "delete":
        del node[leaf]
    elif op == "replace":
        node[leaf] = value
    elif op == "add" and isinstance(node[leaf], dict):
        node[leaf]["extra_key"] = value
    elif op == "add" and isinstance(node[leaf], list):
        node[leaf].append(value)
    return out


MUTATION = st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "replace", "delete", "add"]), VALUES)


def _recipe_property(name: str, mutations: list[tuple[int, str, Any]]) -> None:
    doc = RECIPES[name]
    for pick, op, value in mutations:
        paths = _paths(doc)
        doc = _mutate(doc, paths[pick % len(paths)], op, value)
    try:
        recipe = parse_recipe(doc, source=f"{name}.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message.strip() and ("recipe key" in message or f"{name}.yaml" in message), message
        return
    assert recipe.name
    if recipe.get("model") is not None:
        assert recipe.resolved()["model"]["name"]
    elif not any(recipe.get(STAGES.get(n).section) is not None and STAGES.get(n).when == "bundle"
                 for n in STAGES.names()):
        # no model and no stage that writes the bundle itself: convert refuses it in one line, before training
        with pytest.raises(ConfigError, match="recipe key 'model' is required"):
            build_model(recipe)


@settings(max_examples=QUICK, derandomize=True, **_COMMON)
@given(name=st.sampled_from(sorted(RECIPES)), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_fuzz_recipe_parser(name: str, mutations: list[tuple[int, str, Any]]) -> None:
    _recipe_property(name, mutations)


@pytest.mark.slow
@settings(max_examples=LONG, **_COMMON)
@given(name=st.sampled_from(sorted(RECIPES)), mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_recipe_parser_long(name: str, mutations: list[tuple[int, str, Any]]) -> None:
    _recipe_property(name, mutations)


@settings(max_examples=60, derandomize=True, **_COMMON)
@given(text=st.text(max_size=120) | st.sampled_from(["!!python/object/apply:os.system ['id']", "a: &x [*x]",
                                                     "name: [", "- 1\n- 2", "name: t\nseed: 1e400"]))
def test_fuzz_recipe_yaml_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
