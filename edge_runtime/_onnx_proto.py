"""A minimal ONNX protobuf writer and reader, so the device can build and check graphs without the onnx package.

The writer encodes just enough of ``onnx.proto`` (ModelProto > GraphProto > NodeProto / TensorProto /
ValueInfoProto, float32 only) for :mod:`edge_runtime.profile_fit` and :mod:`edge_runtime.synthetic`.
The reader walks a serialized model for what the loader must refuse before a backend sees the bytes:
tensors stored as *external data* (:func:`external_data_tensors`), which onnxruntime would read from other
files — files no sha256 in the manifest pins, possibly outside the bundle.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_VARINT, _LEN, _F32 = 0, 2, 5


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def attr_ints(name: str, values: Sequence[int]) -> bytes:
    """AttributeProto of type INTS."""
    return _str(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)


def attr_int(name: str, value: int) -> bytes:
    """AttributeProto of type INT."""
    return _str(1, name) + _int(3, value) + _int(20, 2)


def attr_float(name: str, value: float) -> bytes:
    """AttributeProto of type FLOAT."""
    return _str(1, name) + _key(2, _F32) + struct.pack("<f", value) + _int(20, 1)


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], attrs: Sequence[bytes] = ()) -> bytes:
    """NodeProto."""
    return (b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
            + _str(4, op_type) + b"".join(_bytes(5, a) for a in attrs))


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto (float32, raw_data)."""
    a = np.ascontiguousarray(array, dtype="<f4")
    return b"".join(_int(1, d) for d in a.shape) + _int(2, 1) + _str(8, name) + _bytes(9, a.tobytes())


def tensor_int64(name: str, array: np.ndarray) -> bytes:
    """TensorProto (int64, raw_data); a 0-d array gives a scalar."""
    a = np.asarray(array, dtype="<i8")  # (ascontiguousarray would turn a scalar into shape (1,))
    return b"".join(_int(1, d) for d in a.shape) + _int(2, 7) + _str(8, name) + _bytes(9, a.tobytes())


def tensor_external(name: str, shape: Sequence[int], location: str, offset: int = 0,
                    length: int | None = None) -> bytes:
    """TensorProto (float32) whose data lives in another file (``data_location: EXTERNAL``), as large exports
    write them; the device refuses such graphs (for tests of that refusal)."""
    entries = [("location", location), ("offset", str(offset))]
    if length is not None:
        entries.append(("length", str(length)))
    external = b"".join(_bytes(13, _str(1, k) + _str(2, v)) for k, v in entries)
    return b"".join(_int(1, d) for d in shape) + _int(2, 1) + _str(8, name) + external + _int(14, 1)


def value_info(name: str, shape: Sequence[int | str]) -> bytes:
    """ValueInfoProto of a float32 tensor; str dims are symbolic."""
    dims = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, 1) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(nodes: Sequence[bytes], inputs: Sequence[bytes], outputs: Sequence[bytes],
          initializers: Sequence[bytes] = (), opset: int = 17, name: str = "g") -> bytes:
    """A serialized ModelProto (IR version 8)."""
    graph = (b"".join(_bytes(1, n) for n in nodes) + _str(2, name) + b"".join(_bytes(5, t) for t in initializers)
             + b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs))
    opset_id = _str(1, "") + _int(2, opset)
    return _int(1, 8) + _str(2, "edge-runtime") + _bytes(7, graph) + _bytes(8, opset_id)


# -- reading ------------------------------------------------------------------------------------------------------
#: how deep graphs may nest (If/Loop/Scan bodies inside attributes) before the reader refuses the file
MAX_GRAPH_DEPTH = 32
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one serialized message: an int for varint and fixed-size fields, a
    view of the bytes for length-delimited ones (never copied: raw weights are skipped, not read)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == _LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError(f"field {field} runs past the end of its message")
            yield field, wire, buf[pos:pos + size]
            pos += size
        elif wire in (1, _F32):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise ValueError(f"field {field} runs past the end of its message")
            yield field, wire, int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")


def _tensor_external(t: memoryview) -> tuple[str, str] | None:
    """(tensor name, location) when a TensorProto keeps its data in another file, else None."""
    name, location, external = "", "", False
    for field, wire, value in _fields(t):
        if field == 8 and wire == _LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif field == 14 and wire == _VARINT and value == _EXTERNAL:
            external = True
        elif field == 13 and wire == _LEN:
            external = True
            entry = {k: bytes(v).decode("utf-8", "replace") for k, w, v in _fields(value)
                     if w == _LEN}
            if entry.get(1) == "location":
                location = entry.get(2, "")
    return (name, location) if external else None


def _walk_graph(g: memoryview, depth: int, found: list[tuple[str, str]]) -> None:
    if depth > MAX_GRAPH_DEPTH:
        raise ValueError(f"graphs nested more than {MAX_GRAPH_DEPTH} deep")
    for field, wire, value in _fields(g):
        if wire != _LEN:
            continue
        if field == 5:  # initializer
            _check_tensor(value, found)
        elif field == 15:  # sparse_initializer
            _walk_sparse(value, found)
        elif field == 1:  # node
            _walk_node(value, depth, found)


def _check_tensor(t: memoryview, found: list[tuple[str, str]]) -> None:
    hit = _tensor_external(t)
    if hit is not None:
        found.append(hit)


def _walk_sparse(s: memoryview, found: list[tuple[str, str]]) -> None:
    for field, wire, value in _fields(s):
        if wire == _LEN and field in (1, 2):  # values, indices
            _check_tensor(value, found)


def _walk_node(n: memoryview, depth: int, found: list[tuple[str, str]]) -> None:
    for field, wire, attr in _fields(n):
        if field != 5 or wire != _LEN:  # attribute
            continue
        for afield, awire, value in _fields(attr):
            if awire != _LEN:
                continue
            if afield in (5, 10):  # t, tensors
                _check_tensor(value, found)
            elif afield in (22, 23):  # sparse_tensor, sparse_tensors
                _walk_sparse(value, found)
            elif afield in (6, 11):  # g, graphs (If/Loop/Scan bodies)
                _walk_graph(value, depth + 1, found)


def external_data_tensors(model_bytes: bytes) -> list[tuple[str, str]]:
    """Every tensor of a serialized ONNX model that keeps its data in another file: ``(name, location)``.

    Walks initializers, sparse initializers, node attributes (``Constant`` values, ...), subgraphs of
    control-flow nodes and model-local functions — wherever onnxruntime would load external data from.

    Raises:
        ValueError: the bytes are not a well-formed protobuf message (or nest graphs too deep).

    Example:
        >>> w = tensor_external("w", [2, 2], "../../etc/passwd")
        >>> io = [value_info("x", ["N", 2])], [value_info("y", ["N", 2])]
        >>> m = model([node("MatMul", ["x", "w"], ["y"])], *io, [w])
        >>> external_data_tensors(m)
        [('w', '../../etc/passwd')]
    """
    found: list[tuple[str, str]] = []
    for field, wire, value in _fields(memoryview(model_bytes)):
        if wire != _LEN:
            continue
        if field == 7:  # graph
            _walk_graph(value, 0, found)
        elif field == 25:  # functions: FunctionProto.node = 7
            for ffield, fwire, fvalue in _fields(value):
                if ffield == 7 and fwire == _LEN:
                    _walk_node(fvalue, 0, found)
    return found
