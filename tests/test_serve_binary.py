"""KServe v2 binary tensor data extension (Inference-Header-Content-Length) in the daemon: requests, answers in
kind, and refusals that name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _serve_helpers import Daemon  # noqa: E402

import edge_runtime  # noqa: E402
from edge_runtime.synthetic import write_synthetic_bundle  # noqa: E402

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    bundle = write_synthetic_bundle(tmp_path_factory.mktemp("bin") / "b", num_exits=3, thresholds=[0.9, 0.7])
    d = Daemon([f"syn={bundle}"], "--max-wait-ms", "5")
    yield d, edge_runtime.load_bundle(bundle, threads=1)
    assert d.stop() == 0, d.output()


def _binary(x: np.ndarray, *, binary_output: bool = True, size: int | None = None) -> tuple[bytes, dict]:
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes if size is None else size}}],
              "id": "r1", "parameters": {"binary_data_output": binary_output}}
    head = json.dumps(header).encode()
    return head + x.astype("<f4").tobytes(), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def _split(resp) -> tuple[dict, dict[str, np.ndarray]]:
    n = int(resp.headers[HEADER])
    doc = json.loads(resp.content[:n])
    raw, out, offset = resp.content[n:], {}, 0
    for o in doc["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8"}[o["datatype"]]
        out[o["name"]] = np.frombuffer(raw[offset:offset + size], dtype=dtype).reshape(o["shape"])
        offset += size
    assert offset == len(raw)
    return doc, out


def test_binary_request_and_binary_answer_equal_the_runtime(setup) -> None:
    d, rt = setup
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    body, headers = _binary(x)
    r = d.client.post("/v2/models/syn/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    doc, out = _split(r)
    want = rt.infer(x)
    assert doc["id"] == "r1" and "samples" not in doc
    np.testing.assert_allclose(out["output"], want.outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["exit_index"], want.exit_index)
    np.testing.assert_array_equal(out["prediction"], want.predictions)


def test_binary_request_with_a_json_answer(setup) -> None:
    d, rt = setup
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    body, headers = _binary(x, binary_output=False)
    r = d.client.post("/v2/models/syn/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = r.json()
    assert [s["exit_index"] for s in got["samples"]] == rt.infer(x).exit_index.tolist()


@pytest.mark.parametrize("case,field", [("size", "inputs[0].parameters.binary_data_size"),
                                        ("header", HEADER), ("dtype", "inputs[0].datatype")])
def test_bad_binary_requests_name_the_field(setup, case: str, field: str) -> None:
    d, _ = setup
    x = np.zeros((2, 8), np.float32)
    body, headers = _binary(x, size=x.nbytes - 4 if case == "size" else None)
    if case == "header":
        headers[HEADER] = str(len(body) + 10)
    if case == "dtype":
        body = body.replace(b'"FP32"', b'"FP64"')
        headers[HEADER] = str(int(headers[HEADER]))
    r = d.client.post("/v2/models/syn/infer", content=body, headers=headers)
    assert r.status_code in (400, 422) and r.json()["field"] == field, r.text
