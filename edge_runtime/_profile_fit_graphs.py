"""The micro-benchmark graphs :mod:`edge_runtime.profile_fit` times, built with ``_onnx_proto``.

Blocks are shaped like exported segments (a pre-norm ViT block with torch's dynamic-batch reshapes; a
BranchyNet-style conv segment with its exit head), so onnxruntime optimises them as it does real bundles.
"""

from __future__ import annotations

import numpy as np

from edge_runtime import _onnx_proto as P


def chain(k: int) -> bytes:
    names = ["x"] + [f"h{i}" for i in range(k)]
    nodes = [P.node("Relu", [names[i]], [names[i + 1]]) for i in range(k)]
    return P.model(nodes, [P.value_info("x", ["N", 16])], [P.value_info(names[-1], ["N", 16])])


def transformer_block(dim: int = 32, tokens: int = 17, heads: int = 4) -> tuple[bytes, np.ndarray, int, dict]:
    """A pre-norm ViT block as torch exports it (dynamic-batch reshapes, attention, Erf GELU), batch 1."""
    rng = np.random.default_rng(0)
    hd = dim // heads
    inits: list[bytes] = []

    def w(*shape: int) -> bytes:
        return P.tensor(f"w{len(inits)}", rng.standard_normal(shape).astype(np.float32) * 0.1)

    names = {}
    for key, shape in (("qkv", (dim, 3 * dim)), ("bqkv", (3 * dim,)), ("o", (dim, dim)), ("bo", (dim,)),
                       ("f1", (dim, 2 * dim)), ("b1", (2 * dim,)), ("f2", (2 * dim, dim)), ("b2", (dim,)),
                       ("g", (dim,)), ("beta", (dim,))):
        names[key] = f"w{len(inits)}"
        inits.append(w(*shape))
    inits += [P.tensor_int64("zero", np.array(0)), P.tensor_int64("one", np.array(1)),
              P.tensor_int64("two", np.array(2)), P.tensor_int64("axes", np.array([0])),
              P.tensor_int64("qkv_shape", np.array([tokens, 3, heads, hd])),
              P.tensor_int64("out_shape", np.array([tokens, dim])),
              P.tensor("scale", np.full((1,), hd ** -0.5, np.float32)),
              P.tensor("sqrt2", np.full((1,), 2 ** 0.5, np.float32)),
              P.tensor("onef", np.ones((1,), np.float32)), P.tensor("half", np.full((1,), 0.5, np.float32))]
    n = names
    ln = [P.attr_int("axis", -1)]
    nodes = [
        P.node("LayerNormalization", ["x", n["g"], n["beta"]], ["ln1"], ln),
        P.node("MatMul", ["ln1", n["qkv"]], ["qkv0"]), P.node("Add", ["qkv0", n["bqkv"]], ["qkv"]),
        P.node("Shape", ["x"], ["s"]), P.node("Gather", ["s", "zero"], ["nb"], [P.attr_int("axis", 0)]),
        P.node("Unsqueeze", ["nb", "axes"], ["nbu"]),
        P.node("Concat", ["nbu", "qkv_shape"], ["shp1"], [P.attr_int("axis", 0)]),
        P.node("Reshape", ["qkv", "shp1"], ["r"]),
        P.node("Transpose", ["r"], ["t"], [P.attr_ints("perm", [2, 0, 3, 1, 4])]),
        P.node("Gather", ["t", "zero"], ["q"], [P.attr_int("axis", 0)]),
        P.node("Gather", ["t", "one"], ["k"], [P.attr_int("axis", 0)]),
        P.node("Gather", ["t", "two"], ["v"], [P.attr_int("axis", 0)]),
        P.node("Transpose", ["k"], ["kt"], [P.attr_ints("perm", [0, 1, 3, 2])]),
        P.node("MatMul", ["q", "kt"], ["a0"]), P.node("Mul", ["a0", "scale"], ["a1"]),
        P.node("Softmax", ["a1"], ["a"], [P.attr_int("axis", -1)]),
        P.node("MatMul", ["a", "v"], ["o0"]),
        P.node("Transpose", ["o0"], ["o1"], [P.attr_ints("perm", [0, 2, 1, 3])]),
        P.node("Concat", ["nbu", "out_shape"], ["shp2"], [P.attr_int("axis", 0)]),
        P.node("Reshape", ["o1", "shp2"], ["o2"]),
        P.node("MatMul", ["o2", n["o"]], ["o3"]), P.node("Add", ["o3", n["bo"]], ["o4"]),
        P.node("Add", ["x", "o4"], ["x2"]),
        P.node("LayerNormalization", ["x2", n["g"], n["beta"]], ["ln2"], ln),
        P.node("MatMul", ["ln2", n["f1"]], ["h0"]), P.node("Add", ["h0", n["b1"]], ["h"]),
        P.node("Div", ["h", "sqrt2"], ["d"]), P.node("Erf", ["d"], ["e"]), P.node("Add", ["e", "onef"], ["e1"]),
        P.node("Mul", ["h", "e1"], ["m"]), P.node("Mul", ["m", "half"], ["gl"]),
        P.node("MatMul", ["gl", n["f2"]], ["y0"]), P.node("Add", ["y0", n["b2"]], ["y"]),
        P.node("Add", ["x2", "y"], ["out"]),
    ]
    model = P.model(nodes, [P.value_info("x", ["N", tokens, dim])], [P.value_info("out", ["N", tokens, dim])], inits)
    flops = 2 * tokens * dim * 3 * dim + 2 * (2 * heads * tokens * tokens * hd) + 2 * tokens * dim * dim \
        + 2 * (2 * tokens * dim * 2 * dim)
    ops = count_ops(nodes)
    x = rng.standard_normal((1, tokens, dim)).astype(np.float32)
    return model, x, flops, {"ops": ops, "elements": tokens * dim, "flops_by_op": {"matmul": flops}}


def conv_block(cin: int = 8, cout: int = 16, hw: int = 16, classes: int = 10) -> tuple[bytes, np.ndarray, int, dict]:
    """A BranchyNet-style CNN segment: 2 x (Conv + Relu), MaxPool; exit head GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [P.tensor("w1", rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.1),
             P.tensor("b1", np.zeros(cout, np.float32)),
             P.tensor("w2", rng.standard_normal((cout, cout, 3, 3)).astype(np.float32) * 0.1),
             P.tensor("b2", np.zeros(cout, np.float32)),
             P.tensor("wh", rng.standard_normal((classes, cout)).astype(np.float32) * 0.1),
             P.tensor("bh", np.zeros(classes, np.float32))]
    pads = [P.attr_ints("pads", [1, 1, 1, 1])]
    nodes = [P.node("Conv", ["x", "w1", "b1"], ["c1"], pads), P.node("Relu", ["c1"], ["r1"]),
             P.node("Conv", ["r1", "w2", "b2"], ["c2"], pads), P.node("Relu", ["c2"], ["r2"]),
             P.node("MaxPool", ["r2"], ["hidden"],
                    [P.attr_ints("kernel_shape", [2, 2]), P.attr_ints("strides", [2, 2])]),
             P.node("GlobalAveragePool", ["hidden"], ["gap"]), P.node("Flatten", ["gap"], ["flat"]),
             P.node("Gemm", ["flat", "wh", "bh"], ["exit"], [P.attr_int("transB", 1)])]
    half = hw // 2
    model = P.model(nodes, [P.value_info("x", ["N", cin, hw, hw])],
                    [P.value_info("hidden", ["N", cout, half, half]), P.value_info("exit", ["N", classes])], inits)
    conv = 2 * cout * cin * 9 * hw * hw + 2 * cout * cout * 9 * hw * hw
    mm = 2 * cout * classes
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    return model, x, conv + mm, {"ops": count_ops(nodes), "elements": max(cin * hw * hw, cout * half * half),
                                 "flops_by_op": {"conv": conv, "matmul": mm}}


def count_ops(nodes: list[bytes]) -> dict[str, int]:
    """op_counts of hand-built nodes (op type is field 4 of NodeProto; read back from our own encoding)."""
    counts: dict[str, int] = {}
    for raw in nodes:
        i = 0
        while i < len(raw):
            key = raw[i]
            field, wire = key >> 3, key & 7
            i += 1
            if wire == 2:
                length, shift = 0, 0
                while True:
                    b = raw[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                if field == 4:
                    op = raw[i:i + length].decode()
                    counts[op] = counts.get(op, 0) + 1
                i += length
            else:
                raise ValueError("unexpected wire type in a node")
    return counts


def conv(cin: int, cout: int, hw: int, k: int = 3) -> tuple[bytes, np.ndarray, int]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.1
    b = np.zeros(cout, np.float32)
    pad = k // 2
    m = P.model([P.node("Conv", ["x", "w", "b"], ["y"], [P.attr_ints("pads", [pad] * 4)])],
                [P.value_info("x", ["N", cin, hw, hw])], [P.value_info("y", ["N", cout, hw, hw])],
                [P.tensor("w", w), P.tensor("b", b)])
    return m, rng.standard_normal((1, cin, hw, hw)).astype(np.float32), 2 * cout * cin * k * k * hw * hw


def matmul(m_rows: int, k: int, n: int) -> tuple[bytes, np.ndarray, int]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.1
    model = P.model([P.node("MatMul", ["x", "w"], ["y"])], [P.value_info("x", ["N", m_rows, k])],
                    [P.value_info("y", ["N", m_rows, n])], [P.tensor("w", w)])
    return model, rng.standard_normal((1, m_rows, k)).astype(np.float32), 2 * m_rows * k * n


CONV_SIZES = [(1, 8, 8), (4, 8, 16), (8, 16, 16), (16, 16, 16), (16, 32, 16), (32, 32, 16), (32, 64, 32),
              (64, 64, 32), (64, 128, 8), (128, 128, 8), (128, 128, 4)]  # (in ch, out ch, H = W): early and deep layers
MATMUL_SIZES = [(1, 16, 16), (17, 32, 32), (17, 32, 128), (64, 64, 64), (17, 128, 128), (64, 256, 256),
                 (128, 256, 512), (256, 512, 512)]
