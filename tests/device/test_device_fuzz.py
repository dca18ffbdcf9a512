"""The fuzz tier, device side (issue 16): hypothesis over the daemon's request codec and the manifest loader.

Property: whatever the input, the code either accepts it (and then it runs) or refuses it with the project's own
error naming the field — a :class:`~edge_runtime.serve.codec.RequestError` (HTTP 400/422 with ``field``) or a
:class:`~edge_runtime.errors.BundleError` (with ``field``); never another exception. The default tier runs a bounded,
derandomized number of examples (stable in CI); ``-m slow`` runs many more, randomized.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import BundleError, EdgeRuntimeError
from edge_runtime.manifest import Manifest, read_manifest
from edge_runtime.serve import codec

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: examples per property: the default tier (bounded, derandomized) and the slow tier
QUICK, LONG = 120, 3000
_COMMON: dict[str, Any] = {"deadline": None, "database": None,
                           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture]}
quick = settings(max_examples=QUICK, derandomize=True, **_COMMON)
long = settings(max_examples=LONG, **_COMMON)

# -- strategies -------------------------------------------------------------------------------------------------------
NASTY_NUMBERS = st.sampled_from([0, -1, 1, 8, 8.0, 2**31, 2**32, 2**63 - 1, 2**64, 10**400, 1e308, -3e38, 0.5,
                                 float("nan"), float("inf"), -float("inf"), True, False])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | NASTY_NUMBERS
           | st.sampled_from(["0.5", "input", "FP32", "early_exit", "never", "\x00", "../../etc/passwd"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=16)
ROW = st.lists(st.floats(-10, 10, width=32) | st.integers(-5, 5), min_size=8, max_size=8)
DATA = (st.lists(st.floats(-10, 10, width=32), min_size=0, max_size=40) | st.lists(ROW, min_size=1, max_size=4)
        | st.lists(SCALARS, max_size=10) | VALUES)
SHAPE = (st.lists(st.integers(1, 4), min_size=1, max_size=1).map(lambda n: [n[0], 8])
         | st.lists(st.integers(-2, 2**40) | NASTY_NUMBERS, max_size=5) | VALUES)
TENSOR = st.fixed_dictionaries(
    {"shape": SHAPE, "data": DATA},
    optional={"name": st.sampled_from(["input", "aux"]) | SCALARS,
              "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES"]) | SCALARS, "parameters": VALUES})
PARAMS = st.fixed_dictionaries({}, optional={
    "mode": st.sampled_from(["early_exit", "full", "cbnet", ""]) | SCALARS,
    "policy": st.sampled_from(["entropy", "confidence", "never", "patience", "nope"]) | SCALARS,
    "thresholds": st.lists(st.floats(allow_nan=True) | st.integers(-10**30, 10**30), max_size=3) | SCALARS}) | VALUES
DOC = st.fixed_dictionaries({}, optional={"id": st.text(max_size=6) | VALUES, "inputs": st.lists(TENSOR, max_size=2)
                                          | VALUES, "parameters": PARAMS, "outputs": VALUES})


VALID = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8}]}


def _render(doc: Any, twist: str) -> tuple[bytes, bool]:
    """The request body for ``doc`` after a twist, and whether the twist alone makes it invalid."""
    body = json.dumps(doc).encode()  # NaN and Infinity literals included
    if twist == "duplicate":
        return b'{"id": "x", "id": "y", ' + json.dumps(VALID).encode()[1:], True
    if twist == "truncate":
        return body[: len(body) // 2], len(body) > 1
    if twist.startswith("deep-"):  # 3000 levels where a valid request has a string, an object, numbers
        deep = b"[" * 3000 + b"]" * 3000
        where = {"deep-id": b'"id": ', "deep-parameters": b'"parameters": ', "deep-data": b'"data": '}[twist]
        valid = json.dumps(VALID).encode()
        if where == b'"data": ':
            return valid.replace(b'"data": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]', b'"data": ' + deep), True
        return valid[:-1] + b", " + where + deep + b"}", True
    return body, False


def _numbers_only(data: Any) -> bool:
    """The reference rule for ``data``: JSON numbers in (nested) lists; no strings, booleans or nulls."""
    if isinstance(data, list):
        return all(_numbers_only(v) for v in data)
    return type(data) in (int, float)


@pytest.fixture(scope="module")
def runtime(make_bundle: Callable[..., Path]) -> Any:
    return edge_runtime.load_bundle(make_bundle(num_exits=3), threads=1)


def _check_request(rt: Any, body: bytes, doc: Any = None, invalid: bool = False) -> None:
    try:
        x, params, req_id = codec.decode_json(body, rt, 64)
        prefix = "parameters."
        ov = codec.parse_overrides(params, prefix)
        policy = codec.make_policy(rt, ov, prefix)
    except codec.RequestError as exc:
        assert exc.status in (400, 413, 415, 422), exc.status
        assert exc.field, f"refusal without a field: {exc}"
        body_doc = exc.body()
        assert body_doc["error"] and json.dumps(body_doc)
        return
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape[1:] == (8,) and 1 <= x.shape[0] <= 64
    assert np.isfinite(x).all() and (req_id is None or isinstance(req_id, str))
    assert not invalid, "an invalid body was accepted"
    if doc is not None:  # accepted: then it is what the reference rules call valid
        assert _numbers_only(doc["inputs"][0]["data"]), "non-numbers accepted as data"
    result = rt.infer(x, policy=policy, mode=ov.mode)
    assert result.outputs.shape == (x.shape[0], 4)


def _request_property(runtime: Any, doc: Any, twist: str) -> None:
    body, invalid = _render(doc, twist)
    _check_request(runtime, body, doc if twist == "none" else None, invalid)


TWISTS = st.sampled_from(["none"] * 6 + ["duplicate", "truncate", "deep-id", "deep-parameters", "deep-data"])


@quick
@given(doc=DOC, twist=TWISTS)
def test_fuzz_request_codec(runtime: Any, doc: Any, twist: str) -> None:
    _request_property(runtime, doc, twist)


@pytest.mark.slow
@long
@given(doc=DOC, twist=TWISTS)
def test_fuzz_request_codec_long(runtime: Any, doc: Any, twist: str) -> None:
    _request_property(runtime, doc, twist)


@quick
@given(body=st.binary(max_size=300))
def test_fuzz_request_raw_bytes(runtime: Any, body: bytes) -> None:
    _check_request(runtime, body)


def _npy_property(rt: Any, arr: np.ndarray, cut: int) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    body = buf.getvalue()
    body = body[: max(0, len(body) - cut)]
    try:
        x = codec.decode_npy(body, rt, 64)
    except codec.RequestError as exc:
        assert exc.status in (400, 422) and exc.field
        return
    assert x.dtype == np.float32 and x.shape[1:] == (8,) and np.isfinite(x).all()
    rt.infer(x)


def _array(dtype: Any, shape: list[int], value: float) -> np.ndarray:
    with np.errstate(all="ignore"):  # NaN/Inf cast to integers: whatever numpy makes of it
        return np.full(shape, value, dtype=np.float64).astype(dtype)


NPY = st.builds(_array, st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.float16, np.bool_]),
                st.lists(st.integers(0, 9), min_size=0, max_size=3) | st.just([2, 8]),
                st.floats(allow_nan=True, allow_infinity=True, width=32))


@quick
@given(arr=NPY, cut=st.sampled_from([0, 0, 0, 1, 10, 60]))
def test_fuzz_npy_bodies(runtime: Any, arr: np.ndarray, cut: int) -> None:
    _npy_property(runtime, arr, cut)


# -- the manifest loader --------------------------------------------------------------------------------------------
def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], op: str, value: Any) -> dict[str, Any]:
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
    elif op == "wrap":
        node[leaf] = [node[leaf]]
    elif op == "add" and isinstance(node[leaf], dict):
        node[leaf]["extra_key"] = value
    elif op == "add" and isinstance(node[leaf], list):
        node[leaf].append(value)
    return out


#: manifest fields the loader allocates, opens or builds from: mutated more often than the rest
SENSITIVE = [("inputs", 0, "shape", 1), ("inputs", 0, "shape"), ("inputs", 0, "dtype"), ("inputs", 0, "name"),
             ("segments", 0, "files", 0, "path"), ("segments", 1, "files", 0, "batch_size"),
             ("segments", 2, "outputs", 0, "shape", 1), ("segments", 1, "inputs", 0, "shape", 1),
             ("segments", 0, "outputs", 0, "name"), ("policy", "kwargs"), ("policy", "name"),
             ("policy", "thresholds", 0), ("policy", "thresholds"), ("labels",), ("labels", 0), ("name",),
             ("full_model", "files", 0, "path"), ("verification", "passed"), ("exits", 1, "output_kind")]
NASTY = st.sampled_from(["x\x00y", "a" * 300, "../manifest.json", "/etc/hostname", "segments\\s.onnx", {"bogus": 1},
                         {"patience": "two"}, {"normalized": [1]}, [None, 8.0], [None, 10**12], [None, 2**20, 2**20],
                         [None], [], "patience", "nope", 10_000_000, 8.0, 10**400, float("nan"), -1, 0, True, None])
MUTATION = st.tuples(st.integers(0, 10**6) | st.sampled_from(SENSITIVE),
                     st.sampled_from(["replace", "replace", "replace", "delete", "wrap", "add"]),
                     NASTY | NASTY_NUMBERS | VALUES)
#: the default tier's loading fuzz: only the sensitive fields, only the nasty values (a few dozen examples must count)
TARGETED = st.tuples(st.sampled_from(SENSITIVE), st.sampled_from(["replace", "replace", "delete"]), NASTY)


def _pick(doc: Any, choice: int | tuple[Any, ...]) -> tuple[Any, ...]:
    paths = _paths(doc)
    if isinstance(choice, tuple):
        return choice if choice in paths else paths[hash(choice) % len(paths)]
    return paths[choice % len(paths)]


@pytest.fixture(scope="module")
def manifest_doc(make_bundle: Callable[..., Path]) -> dict[str, Any]:
    return json.loads((make_bundle(num_exits=3) / "manifest.json").read_text())


def _manifest_property(doc: dict[str, Any], mutations: list[tuple[Any, str, Any]]) -> Any:
    for choice, op, value in mutations:
        doc = _mutate(doc, _pick(doc, choice), op, value)
    try:
        return Manifest.from_dict(doc, path="manifest.json")
    except BundleError as exc:
        assert exc.field or "manifest must be a JSON object" in str(exc), f"refusal without a field: {exc}"
        return None


@quick
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_fuzz_manifest_records(manifest_doc: dict[str, Any], mutations: list[tuple[Any, str, Any]]) -> None:
    _manifest_property(manifest_doc, mutations)


@pytest.mark.slow
@long
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_manifest_records_long(manifest_doc: dict[str, Any], mutations: list[tuple[Any, str, Any]]) -> None:
    _manifest_property(manifest_doc, mutations)


def _load_property(src: Path, work: Path, doc: dict[str, Any], mutations: list[tuple[Any, str, Any]]) -> None:
    """A mutated manifest written into a copy of the bundle, then loaded and run: success or a field-naming
    project error, also past the manifest (policy construction, graph checks, the first inference)."""
    for choice, op, value in mutations:
        doc = _mutate(doc, _pick(doc, choice), op, value)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    (work / "manifest.json").write_text(json.dumps(doc))
    try:
        read_manifest(work)
        rt = edge_runtime.load_bundle(work, threads=1, allow_unverified=True)
        x = {s.name: np.zeros([2] + [d or 1 for d in s.shape[1:]], dtype=s.np_dtype) for s in rt.inputs}
        rt.infer(x)
    except BundleError as exc:
        assert exc.field or exc.path, f"refusal without a field: {exc}"
    except EdgeRuntimeError as exc:  # an input the mutated manifest makes impossible (e.g. an aux input)
        assert str(exc)


@settings(max_examples=60, derandomize=True, **_COMMON)
@given(mutations=st.lists(TARGETED, min_size=1, max_size=2))
def test_fuzz_bundle_loading(make_bundle: Callable[..., Path], manifest_doc: dict[str, Any], tmp_path: Path,
                             mutations: list[tuple[Any, str, Any]]) -> None:
    _load_property(make_bundle(num_exits=3), tmp_path / "b", manifest_doc, mutations)


@pytest.mark.slow
@settings(max_examples=600, **_COMMON)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_fuzz_bundle_loading_long(make_bundle: Callable[..., Path], manifest_doc: dict[str, Any], tmp_path: Path,
                                  mutations: list[tuple[Any, str, Any]]) -> None:
    _load_property(make_bundle(num_exits=3), tmp_path / "b", manifest_doc, mutations)


@quick
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_fuzz_manifest_text(tmp_path: Path, text: str) -> None:
    (tmp_path / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(BundleError):
        read_manifest(tmp_path)
