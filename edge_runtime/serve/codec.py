"""Request decoding and checking for the daemon (KServe v2 JSON, its binary tensor data extension, and raw .npy),
with errors that name the bad field and the expected shape/dtype."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime._json import no_duplicate_keys
from edge_runtime.errors import ConfigError, EdgeRuntimeError, InputError
from edge_runtime.modes import MODES
from edge_runtime.policies import ExitPolicy
from edge_runtime.registry import UnknownNameError
from edge_runtime.runtime import Runtime
from edge_runtime.text import check_texts

try:  # orjson parses a request's floats ~5x faster than the standard library, when installed
    import orjson

    _HAVE_ORJSON = True
except ImportError:  # pragma: no cover - the serve extra brings it
    _HAVE_ORJSON = False


#: a JSON string, and the colon after it when it is an object key (valid JSON only: orjson checked it first)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?')
_BODY_EXPECTED = '{"inputs": [{"name", "shape", "datatype", "data"}]}'


def loads(body: bytes) -> Any:
    """Parse a request body strictly: orjson when available (the standard library for what orjson refuses, e.g.
    NaN literals and numbers beyond float range, so those get a 422 naming the field rather than a 400); no key
    given twice in one object (orjson would keep the last silently); bounded nesting.

    Raises:
        RequestError: 400 naming ``body``.

    Example:
        >>> loads(b'{"a": [1, 2]}')
        {'a': [1, 2]}
    """
    try:
        try:
            if not _HAVE_ORJSON:
                raise ValueError
            doc = orjson.loads(body)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            doc = json.loads(body)
    except RecursionError:
        raise RequestError(400, "body is not valid JSON (nested too deeply)", field="body",
                           expected=_BODY_EXPECTED) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON ({exc})", field="body", expected=_BODY_EXPECTED) from None
    keys = _count_keys(doc)  # also bounds the nesting
    if keys and sum(1 for m in _JSON_STRING.finditer(body) if m.group(1)) != keys:
        try:  # a key given twice: the standard library names it
            json.loads(body, object_pairs_hook=no_duplicate_keys)
        except ValueError as exc:
            raise RequestError(400, f"body is not valid JSON ({exc})", field="body", expected=_BODY_EXPECTED) from None
        raise RequestError(400, "body is not valid JSON (a key is given twice in one object)", field="body",
                           expected=_BODY_EXPECTED)
    return doc


def _count_keys(doc: Any) -> int:
    """Keys in every object of a parsed document (walked without recursion; lists of scalars at C speed).

    Raises:
        RequestError: the document nests deeper than :data:`MAX_JSON_DEPTH` (400 naming ``body``).
    """
    count, stack = 0, [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise RequestError(400, f"body is not valid JSON (nested deeper than {MAX_JSON_DEPTH} levels)",
                               field="body", expected=_BODY_EXPECTED)
        if isinstance(item, dict):
            count += len(item)
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            kinds = set(map(type, item))
            if dict in kinds or list in kinds:
                stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return count


#: an absolute file-system path in a message (two names or more): error bodies name the file, not where it lives
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()]+/)+([^\s'\"/:,;()]*)")


def public_message(text: str) -> str:
    """A message fit for an HTTP client: absolute server paths shortened to their file name.

    Example:
        >>> public_message("/srv/bundles/b/segments/segment_1.onnx: field 'x': sha256 mismatch")
        "segment_1.onnx: field 'x': sha256 mismatch"
    """
    return _ABS_PATH.sub(r"\1", text)


def dumps(data: Any) -> bytes:
    """Serialise a response body."""
    if _HAVE_ORJSON:
        return orjson.dumps(data)
    return json.dumps(data).encode()


#: the largest axis a request may declare, and how deep a request's JSON may nest (a tensor has at most 32 axes)
MAX_DIM = 2**31 - 1
MAX_JSON_DEPTH = 64
#: KServe v2 datatypes <-> numpy
V2_TO_NUMPY = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT8": "int8", "UINT8": "uint8",
               "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}


class RequestError(EdgeRuntimeError):
    """A bad request: HTTP ``status`` (400 unreadable, 422 readable but wrong), the ``field`` and
    what was ``expected``."""

    def __init__(self, status: int, message: str, *, field: str | None = None, expected: str | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.expected = status, field, expected

    def body(self) -> dict[str, Any]:
        """The JSON error body (no absolute server paths)."""
        return {"error": public_message(str(self)), "field": self.field,
                "expected": None if self.expected is None else public_message(self.expected)}


@dataclass(frozen=True)
class Overrides:
    """Per-request settings: mode, policy name, thresholds (None = the bundle's)."""

    mode: str | None = None
    policy: str | None = None
    thresholds: tuple[float, ...] | float | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share a micro-batch."""
        return (self.mode, self.policy, self.thresholds)


def expected_shape(rt: Runtime) -> str:
    return "[N, " + ", ".join(str(d) for d in rt.input_spec.shape[1:]) + "]"


def expected_dtype(rt: Runtime) -> str:
    dtype = rt.input_spec.dtype
    return f"{NUMPY_TO_V2.get(dtype, dtype)} ({dtype})"


def parse_overrides(params: Mapping[str, Any], field_prefix: str) -> Overrides:
    """Read ``mode``, ``policy`` and ``thresholds`` from a mapping (JSON ``parameters`` or query)."""
    unknown = sorted(set(params) - {"mode", "policy", "thresholds", "preprocess"})
    if unknown:
        raise RequestError(422, f"unknown parameter(s): {', '.join(unknown)}", field=f"{field_prefix}{unknown[0]}",
                           expected="one of mode, policy, thresholds, preprocess")
    mode = params.get("mode") or None  # None: the model's recommended mode (Runtime.resolve_mode)
    policy = params.get("policy")
    for key, value in (("mode", mode), ("policy", policy)):
        if value is not None and not isinstance(value, str):
            raise RequestError(422, f"{key} must be a string, got {type(value).__name__}",
                               field=f"{field_prefix}{key}", expected="string")
    raw = params.get("thresholds")
    thresholds: tuple[float, ...] | float | None
    if raw is None:
        thresholds = None
    else:
        try:
            if isinstance(raw, str):
                vals = [float(v) for v in raw.split(",") if v.strip()]
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                vals = [float(raw)]
            elif isinstance(raw, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
                vals = [float(v) for v in raw]
            else:
                raise ValueError
            if not vals or not all(math.isfinite(v) for v in vals):
                raise ValueError
        except (ValueError, OverflowError):
            raise RequestError(422, f"thresholds must be finite numbers, got {raw!r}",
                               field=f"{field_prefix}thresholds",
                               expected="a number or a list with one number per non-final exit") from None
        thresholds = vals[0] if len(vals) == 1 else tuple(vals)
    return Overrides(mode=mode, policy=policy, thresholds=thresholds)


def make_policy(rt: Runtime, ov: Overrides, field_prefix: str) -> ExitPolicy:
    """The policy for these overrides on this model; 422 naming the field when it cannot be built."""
    if ov.mode is not None and ov.mode not in rt.modes():
        raise RequestError(422, f"unknown mode {ov.mode!r}", field=f"{field_prefix}mode",
                           expected="one of " + ", ".join(rt.modes()))
    if ov.policy is None and ov.thresholds is None:
        return rt.default_policy
    thr = list(ov.thresholds) if isinstance(ov.thresholds, tuple) else ov.thresholds
    try:
        return rt.make_policy(ov.policy, thr)
    except UnknownNameError as exc:
        raise RequestError(422, str(exc), field=f"{field_prefix}policy", expected="a registered policy") from None
    except ConfigError as exc:
        field = "thresholds" if "threshold" in str(exc) else "policy"
        raise RequestError(422, str(exc), field=f"{field_prefix}{field}",
                           expected=f"{rt.num_exits - 1} threshold(s), one per non-final exit") from None


def wants_preprocess(params: Mapping[str, Any], field_prefix: str) -> bool:
    """The ``preprocess`` parameter (JSON true/false, or query ``true``/``false``/``1``/``0``): the request carries
    raw inputs, which the bundle's preprocessing turns into model inputs."""
    value = params.get("preprocess", False)
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0", ""):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise RequestError(422, f"preprocess must be true or false, got {value!r}", field=f"{field_prefix}preprocess",
                           expected="true or false")
    return value


def preprocess_raw(rt: Runtime, x: np.ndarray, field: str) -> np.ndarray:
    """Raw inputs -> model inputs with the bundle's preprocessing; raw values outside its declared range are a 422."""
    try:
        return rt.preprocess(x)
    except InputError as exc:
        pre = rt.input_spec.preprocessing
        rng = list(pre.input_range) if pre is not None and pre.input_range is not None else "the declared range"
        raise RequestError(422, str(exc), field=field, expected=f"raw values in {rng}") from None


def _shape_fits(rt: Runtime, x: np.ndarray) -> bool:
    """Whether ``x`` has the rank and the fixed dimensions of the bundle's input."""
    want = rt.input_spec.shape
    return x.ndim == len(want) and all(d is None or d == n for d, n in zip(want, x.shape))


def check_array(rt: Runtime, x: np.ndarray, field: str, max_samples: int, data_field: str | None = None) -> np.ndarray:
    """Shape/dtype/finiteness/range checks against the bundle's input spec, as 422s naming ``field`` (shape and
    dtype problems) or ``data_field`` (value problems of a well-shaped batch; default ``field``)."""
    if x.dtype.name != rt.input_spec.dtype:
        raise RequestError(422, f"dtype is {NUMPY_TO_V2.get(x.dtype.name, x.dtype.name)} ({x.dtype.name})",
                           field=field, expected=expected_dtype(rt))
    if x.ndim >= 1 and x.shape[0] > max_samples:
        raise RequestError(422, f"batch of {x.shape[0]} samples is larger than this server accepts",
                           field=field, expected=f"N <= {max_samples}")
    try:
        return rt.check_input(x)
    except InputError as exc:
        if data_field is not None and _shape_fits(rt, x):
            raise RequestError(422, str(exc), field=data_field, expected="finite values in the range model-ready "
                               "inputs have") from None
        raise RequestError(422, str(exc), field=field, expected=f"shape {expected_shape(rt)}, dtype "
                           f"{expected_dtype(rt)}, finite values") from None


def decode_npy(body: bytes, rt: Runtime, max_samples: int, preprocess: bool = False) -> np.ndarray:
    """A raw ``.npy`` body (no pickles); with ``preprocess``, raw inputs the bundle's preprocessing turns into
    model inputs."""
    expected = f".npy of shape {expected_shape(rt)}, dtype {expected_dtype(rt)}"
    if not body.startswith(b"\x93NUMPY"):
        raise RequestError(400, "body is not a .npy file (no \\x93NUMPY magic)", field="body", expected=expected)
    try:
        x = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/EOFError/... for garbage
        raise RequestError(400, f"body is not a readable .npy array ({type(exc).__name__}: {exc})".splitlines()[0],
                           field="body", expected=expected) from None
    if not isinstance(x, np.ndarray) or x.dtype.hasobject:
        raise RequestError(400, "body is not a numeric .npy array", field="body", expected="numeric .npy")
    if preprocess:
        x = preprocess_raw(rt, x, "body")
    return check_array(rt, x, "body", max_samples)


def decode_json(body: bytes, rt: Runtime, max_samples: int,
                preprocess: bool = False) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """A KServe v2 JSON body: returns (input batch, parameters, request id). With ``parameters.preprocess: true``
    (or ``preprocess``, from the query) the data are raw inputs, preprocessed by the bundle's preprocessing."""
    return decode_doc(loads(body), rt, max_samples, preprocess)


#: the header of KServe v2's binary tensor data extension (Triton): the length of the JSON part of the body
BINARY_HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class BinaryRequest:
    """A request in the binary tensor data extension: the input batch, its parameters and id, and whether the
    answer should come back as binary outputs too."""

    x: np.ndarray
    params: dict[str, Any]
    req_id: str | None
    binary_output: bool


def decode_binary(body: bytes, header_length: str, rt: Runtime, max_samples: int,
                  preprocess: bool = False) -> BinaryRequest:
    """KServe v2's binary tensor data extension: ``header_length`` bytes of JSON (the ``inputs`` entry carries
    ``parameters.binary_data_size`` instead of ``data``), then the tensor's raw little-endian bytes. No copy of the
    tensor's bytes is made before the batch is assembled.
    """
    expected = f"{BINARY_HEADER}: the byte length of the JSON header that starts the body"
    if not header_length.isdigit() or int(header_length) > len(body):
        raise RequestError(400, f"{BINARY_HEADER} {header_length!r} is not a length within the {len(body)}-byte body",
                           field=BINARY_HEADER, expected=expected)
    n = int(header_length)
    doc = loads(body[:n])  # strict: 400 naming the body
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    tensor = inputs[0] if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict) else None
    size = ((tensor or {}).get("parameters") or {}).get("binary_data_size")
    raw = memoryview(body)[n:]
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(raw):
            raise RequestError(400, f"binary_data_size {size!r} does not match the {len(raw)} bytes after the header",
                               field="inputs[0].parameters.binary_data_size", expected=f"{len(raw)}")
        tensor = {**tensor, "data": raw}  # type: ignore[dict-item]
        doc = {**doc, "inputs": [tensor]}
    elif len(raw):
        raise RequestError(400, f"{len(raw)} bytes follow the JSON header but no input has binary_data_size",
                           field="inputs[0].parameters.binary_data_size", expected="the tensor's byte size")
    x, params, req_id = decode_doc(doc, rt, max_samples, preprocess)
    out_params = (doc.get("parameters") or {}) if isinstance(doc, dict) else {}
    wants = bool(out_params.get("binary_data_output")) or any(
        isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") for o in doc.get("outputs") or [])
    return BinaryRequest(x, {k: v for k, v in params.items() if k != "binary_data_output"}, req_id, wants)


def encode_binary(doc: dict[str, Any], tensors: list[np.ndarray]) -> tuple[bytes, int]:
    """A binary-extension response: ``doc`` (whose ``outputs`` name the tensors in order; each gets
    ``parameters.binary_data_size`` instead of ``data``) as the JSON header, then each tensor's raw bytes.
    Returns (body, header length)."""
    outputs = []
    for o, t in zip(doc["outputs"], tensors):
        o = {k: v for k, v in o.items() if k != "data"}
        o["parameters"] = {**(o.get("parameters") or {}), "binary_data_size": int(t.nbytes)}
        outputs.append(o)
    header = dumps({**doc, "outputs": outputs})
    return header + b"".join(np.ascontiguousarray(t).tobytes() for t in tensors), len(header)


def decode_doc(doc: Any, rt: Runtime, max_samples: int,
               preprocess: bool = False) -> tuple[np.ndarray, dict[str, Any], str | None]:
    """A parsed KServe v2 request (the JSON body, or the binary extension's header with the raw tensor bytes as
    the input's ``data``): returns (input batch, parameters, request id). ``preprocess`` (or the request's
    ``parameters.preprocess``): the data are raw inputs for the bundle's preprocessing."""
    if not isinstance(doc, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(doc).__name__}", field="body",
                           expected="object with 'inputs'")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise RequestError(422, f"id must be a string, got {type(req_id).__name__}", field="id", expected="string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(422, "missing or malformed 'inputs'", field="inputs",
                           expected=f"a list with exactly one tensor named {rt.input_spec.name!r}")
    t = inputs[0]
    if t.get("datatype") == "BYTES" or (rt.manifest.text is not None and t.get("name") == TEXT_INPUT):
        return decode_texts(t, rt, max_samples), _params(doc), req_id
    for key in ("shape", "datatype", "data"):
        if key not in t:
            raise RequestError(422, f"input tensor has no {key!r}", field=f"inputs[0].{key}",
                               expected={"shape": expected_shape(rt), "datatype": expected_dtype(rt),
                                         "data": "numbers (flat, row-major, or nested)"}[key])
    name = t.get("name", rt.input_spec.name)
    if name != rt.input_spec.name:
        raise RequestError(422, f"unknown input {name!r}", field="inputs[0].name", expected=repr(rt.input_spec.name))
    shape = t["shape"]
    if not isinstance(shape, list) or len(shape) > 32 or not all(
            type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise RequestError(422, f"shape must be a list of integers from 0 to {MAX_DIM}, got {str(shape)[:80]}",
                           field="inputs[0].shape", expected=expected_shape(rt))
    params = _params(doc)
    raw = wants_preprocess(params, "parameters.") if "preprocess" in params else preprocess
    dtype = V2_TO_NUMPY.get(t["datatype"]) if isinstance(t["datatype"], str) else None
    if raw and dtype is not None and dtype != "bool":
        pass   # raw inputs come in their own dtype (UINT8 pixels); preprocessing makes them the model's
    elif dtype != rt.input_spec.dtype:
        raise RequestError(422, f"datatype {str(t['datatype'])[:40]!r} does not match the model",
                           field="inputs[0].datatype", expected=expected_dtype(rt))
    if shape and shape[0] > max_samples:
        raise RequestError(422, f"batch of {shape[0]} samples is larger than this server accepts",
                           field="inputs[0].shape", expected=f"N <= {max_samples}")
    size = math.prod(shape)  # Python integers: no int64 wrap-around
    if isinstance(t["data"], memoryview):  # the binary extension: raw little-endian bytes, used in place
        need = size * np.dtype(dtype).itemsize
        if len(t["data"]) != need:
            raise RequestError(400, f"{len(t['data'])} bytes of binary data but shape {shape} of {dtype} needs {need}",
                               field="inputs[0].parameters.binary_data_size", expected=f"{need}")
        x = np.frombuffer(t["data"], dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    else:
        flat = _numbers(t["data"], dtype, size)
        if len(flat) != size:
            raise RequestError(422, f"data has {len(flat)} values but shape {shape} needs {size}",
                               field="inputs[0].data", expected=f"{size} numbers")
        try:
            arr = np.asarray(flat, dtype=np.float64 if dtype.startswith("float") else np.int64)
        except OverflowError:
            raise RequestError(422, "data holds a number beyond the range of its datatype", field="inputs[0].data",
                               expected=expected_dtype(rt)) from None
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise RequestError(422, "data contains NaN or Inf", field="inputs[0].data", expected="finite numbers")
        if arr.dtype.kind == "i" and dtype not in ("int64", "bool") and arr.size:
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise RequestError(422, f"data holds a number outside {dtype}'s range [{info.min}, {info.max}]",
                                   field="inputs[0].data", expected=f"{dtype} values")
        x = arr.astype(dtype).reshape(shape)
    if raw:
        x = preprocess_raw(rt, x, "inputs[0].data")
    x = check_array(rt, x, "inputs[0].shape", max_samples, data_field="inputs[0].data")
    return x, params, req_id


def _params(doc: dict[str, Any]) -> dict[str, Any]:
    """A request's ``parameters`` object (empty when absent)."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(422, "parameters must be an object", field="parameters",
                           expected="{mode, policy, thresholds, preprocess}")
    return params


def _numbers(data: Any, dtype: str, size: int) -> list[Any]:
    """The numbers of a flat or nested list, row-major. JSON numbers only: a numeric string, a boolean or null is
    refused (numpy would turn ``"0.5"`` and ``true`` into numbers), and so is a fraction for an integer datatype."""
    expected = f"{size} numbers (flat, row-major, or nested lists)"
    if not isinstance(data, list):
        raise RequestError(422, f"data must be a list of numbers, got {type(data).__name__}", field="inputs[0].data",
                           expected=expected)
    level = data
    allowed = {int, float} if dtype.startswith("float") else {int}
    while True:
        kinds = set(map(type, level))
        if kinds <= allowed:
            return level
        if kinds == {list}:
            level = list(itertools.chain.from_iterable(level))
            continue
        found = ", ".join(sorted({"null" if k is type(None) else k.__name__ for k in kinds - allowed - {list}}
                                 or {"a mix of lists and numbers"}))
        raise RequestError(422, f"data must hold only {'numbers' if float in allowed else 'integers'}; found {found}",
                           field="inputs[0].data", expected=expected)


#: the name of a text bundle's KServe v2 input (a BYTES tensor of strings)
TEXT_INPUT = "text"


def decode_texts(t: dict[str, Any], rt: Runtime, max_samples: int) -> np.ndarray:
    """A KServe v2 ``BYTES`` input of a text bundle: shape ``[N]`` (or ``[N, 1]``), ``data`` N JSON strings.
    Returns the texts as an object array (tokenized per micro-batch: :meth:`Runtime.encode_text`)."""
    expected = '{"name": "text", "shape": [N], "datatype": "BYTES", "data": ["...", ...]}'
    if rt.manifest.text is None:
        raise RequestError(422, "this model takes no text", field="inputs[0].datatype", expected=expected_dtype(rt))
    if t.get("datatype") != "BYTES":
        raise RequestError(422, f"datatype {t.get('datatype')!r}: text goes in a BYTES tensor",
                           field="inputs[0].datatype", expected="BYTES")
    if t.get("name", TEXT_INPUT) != TEXT_INPUT:
        raise RequestError(422, f"unknown input {t.get('name')!r}", field="inputs[0].name", expected=repr(TEXT_INPUT))
    data, shape = t.get("data"), t.get("shape")
    if not isinstance(data, list):
        raise RequestError(422, "data must be a list of strings", field="inputs[0].data", expected=expected)
    n = len(data)
    if not isinstance(shape, list) or shape not in ([n], [n, 1]):
        raise RequestError(422, f"shape {shape!r} does not match {n} strings", field="inputs[0].shape",
                           expected=f"[{n}] (or [{n}, 1])")
    if n > max_samples:
        raise RequestError(422, f"batch of {n} samples is larger than this server accepts",
                           field="inputs[0].shape", expected=f"N <= {max_samples}")
    try:
        texts = check_texts(data, "inputs[0].data")
    except InputError as exc:
        raise RequestError(422, str(exc), field="inputs[0].data", expected="non-empty UTF-8 strings") from None
    return np.asarray(texts, dtype=object)


def text_truncated(rt: Runtime, x: np.ndarray) -> list[bool] | None:
    """Per text of a request, whether it is longer than the bundle's ``max_length`` (None: not a text request)."""
    if x.dtype != object:
        return None
    return rt.encode_text(list(x)).truncated.tolist()


def batch_feeds(rt: Runtime, x: np.ndarray) -> dict[str, np.ndarray]:
    """A micro-batch as model inputs: texts tokenized together (padded to the batch's longest), else the array."""
    if x.dtype == object:
        return rt.encode_text(list(x)).feeds
    return {rt.input_spec.name: x}


def metadata(rt: Runtime, version: str) -> dict[str, Any]:
    """KServe v2 model metadata plus the early-exit specifics (exits, policy, thresholds, modes)."""
    spec = rt.input_spec
    pol = rt.default_policy
    return {
        "name": rt.name, "versions": [version], "platform": f"edge-runtime/{rt.backend.name}",
        "inputs": [{"name": s.name, "datatype": NUMPY_TO_V2.get(s.dtype, s.dtype),
                    "shape": [-1 if d is None else d for d in s.shape]} for s in rt.inputs],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, len(rt.labels)]},
                    {"name": "prediction", "datatype": "INT64", "shape": [-1]},
                    {"name": "exit_index", "datatype": "INT64", "shape": [-1]}],
        "labels": rt.labels,
        "exits": [{"index": e.index, "segment": e.segment, "head_type": e.head_type,
                   "cumulative_flops": e.cumulative_flops} for e in rt.manifest.exits],
        "policy": {"name": rt.manifest.policy.name, "kwargs": rt.manifest.policy.kwargs,
                   "thresholds": list(pol.thresholds)},
        "modes": rt.modes(),
        "precision": rt.precision,
        "energy_source": getattr(rt.meter, "source", None),
        "preprocessing": spec.preprocessing.to_dict() if spec.preprocessing is not None else {},
        **({"text": {"input": {"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]},
                     "max_length": rt.manifest.text.max_length}} if rt.manifest.text is not None else {}),
    }


def self_served_request(rt: Runtime, body: bytes, ctype: str, params: Mapping[str, Any]) -> tuple[Any, dict] | None:
    """``(mode, parsed JSON body)`` when the request's mode answers whole requests itself
    (:attr:`edge_runtime.modes.Mode.handles_requests`); None for the usual tensor path."""
    if ctype not in ("application/json", ""):
        return None
    if not any(MODES.get(m).handles_requests for m in rt.modes()):
        return None  # no mode of this bundle answers whole requests: the tensor path parses the body, once
    name = params.get("mode")
    doc: Any = None
    if name is None:
        try:
            doc = loads(body)
        except RequestError:
            return None  # the tensor path reports the bad body
        name = (doc.get("parameters") or {}).get("mode") if isinstance(doc, dict) else None
    if name is None and "early_exit" not in rt.modes():
        name = next(iter(rt.modes()), None)  # a bundle with its own modes only answers in its first by default
    if not isinstance(name, str) or name not in MODES or not MODES.get(name).handles_requests:
        return None
    if name not in rt.modes():
        raise RequestError(422, f"this model cannot run mode {name!r}", field="parameters.mode",
                           expected="one of " + ", ".join(rt.modes()))
    if doc is None:
        doc = loads(body)
    if not isinstance(doc, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(doc).__name__}", field="body")
    return MODES.get(name), doc


def serve_with_mode(mode: Any, rt: Runtime, doc: dict[str, Any]) -> dict[str, Any]:
    """Run a self-served request; project input and settings errors become 422s naming the field when they say one."""
    try:
        return mode.serve_request(rt, doc)
    except RequestError:
        raise
    except (InputError, ConfigError) as exc:
        raise RequestError(422, str(exc), field=getattr(exc, "field", None)) from None
