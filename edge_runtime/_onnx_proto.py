"""A minimal ONNX protobuf writer, so the device can build micro-benchmark graphs without the onnx package.

Encodes just enough of ``onnx.proto`` (ModelProto > GraphProto > NodeProto / TensorProto /
ValueInfoProto, float32 only) for :mod:`edge_runtime.profile_fit`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

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
