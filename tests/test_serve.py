"""The daemon over real HTTP: endpoints, JSON and .npy inference, bad bodies, metrics, auth, overload."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _serve_helpers import Daemon  # noqa: E402

import edge_runtime  # noqa: E402

MODELS = ("tiny_cnn", "tiny_transformer")


@pytest.fixture(scope="module")
def daemon(bundles):
    d = Daemon([f"{name}={bundles[name]}" for name in MODELS], "--max-wait-ms", "20", "--max-body-mb", "0.25")
    yield d
    assert d.stop() == 0, d.output()


@pytest.fixture(scope="module")
def runtimes(bundles):
    return {name: edge_runtime.load_bundle(bundles[name], threads=1) for name in MODELS}


def _v2(x: np.ndarray, **params) -> dict:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return body


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _spread_thresholds(rt, x) -> list[float]:
    pol = edge_runtime.create_policy("entropy", rt.num_exits, 1.0)
    return [float(np.median(pol.score(o))) for o in rt.exit_outputs(x)[:-1]]


def test_health_server_and_model_metadata(daemon, runtimes):
    c = daemon.client
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").status_code == 200
    assert c.get("/v2").json()["name"] == "edge-runtime"
    for name, rt in runtimes.items():
        meta = c.get(f"/v2/models/{name}").json()
        assert meta["inputs"][0]["shape"] == [-1, 1, 16, 16] and meta["inputs"][0]["datatype"] == "FP32"
        assert len(meta["exits"]) == rt.num_exits
        assert meta["policy"]["name"] == rt.manifest.policy.name
        assert meta["policy"]["thresholds"] == pytest.approx(rt.default_policy.thresholds)
        assert {o["name"] for o in meta["outputs"]} == {"output", "prediction", "exit_index"}
        assert c.get(f"/v2/models/{name}/ready").json()["ready"] is True
    missing = c.get("/v2/models/nope")
    assert missing.status_code == 404 and "tiny_cnn" in missing.json()["expected"]


def test_openapi_documents_both_body_types(daemon):
    doc = daemon.client.get("/openapi.json").json()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {"/v2/health/live", "/v2/health/ready", "/metrics", "/v2/repository/models/{name}/load"} <= set(doc["paths"])


@pytest.mark.parametrize("name", MODELS)
def test_json_inference_equals_the_runtime(daemon, runtimes, name):
    rt = runtimes[name]
    x = np.random.default_rng(7).standard_normal((6, 1, 16, 16)).astype(np.float32)
    thr = _spread_thresholds(rt, x)
    r = daemon.client.post(f"/v2/models/{name}/infer", json=_v2(x, policy="entropy", thresholds=thr))
    assert r.status_code == 200, r.text
    body = r.json()
    local = rt.infer(x, policy="entropy", thresholds=thr)
    assert len(set(local.exit_index.tolist())) > 1
    assert [s["exit_index"] for s in body["samples"]] == local.exit_index.tolist()
    assert [s["prediction"] for s in body["samples"]] == local.predictions.tolist()
    np.testing.assert_allclose(np.array([s["output"] for s in body["samples"]]), local.outputs, atol=1e-5)
    out = {o["name"]: o for o in body["outputs"]}
    assert out["output"]["shape"] == [6, 10] and out["exit_index"]["data"] == local.exit_index.tolist()
    s0 = body["samples"][0]
    assert s0["latency_s"] > 0 and s0["energy_j"] is None and s0["energy_source"] is None  # no meter attached
    assert body["model_version"] and body["parameters"]["policy"] == "entropy"


def test_npy_inference_with_query_overrides_and_full_mode(daemon, runtimes):
    rt = runtimes["tiny_cnn"]
    x = np.random.default_rng(8).standard_normal((4, 1, 16, 16)).astype(np.float32)
    headers = {"Content-Type": "application/octet-stream"}
    r = daemon.client.post("/v2/models/tiny_cnn/infer?policy=never", content=_npy(x), headers=headers)
    assert r.status_code == 200, r.text
    assert [s["exit_index"] for s in r.json()["samples"]] == [rt.num_exits - 1] * 4
    first = daemon.client.post("/v2/models/tiny_cnn/infer?thresholds=100", content=_npy(x), headers=headers)
    assert [s["exit_index"] for s in first.json()["samples"]] == [0] * 4  # every entropy is below 100
    full = daemon.client.post("/v2/models/tiny_cnn/infer?mode=full", content=_npy(x), headers=headers).json()
    np.testing.assert_allclose(np.array([s["output"] for s in full["samples"]]), rt.infer(x, mode="full").outputs,
                               atol=1e-5)
    assert full["parameters"]["mode"] == "full"


def _good():
    return np.zeros((2, 1, 16, 16), np.float32)


BAD_JSON = {
    "wrong shape": (_v2(np.zeros((2, 1, 16, 15), np.float32)), 422, "inputs[0].shape", "[N, 1, 16, 16]"),
    "wrong rank": (_v2(np.zeros((2, 16, 16), np.float32)), 422, "inputs[0].shape", "[N, 1, 16, 16]"),
    "wrong dtype": ({"inputs": [{"name": "input", "shape": [2, 1, 16, 16], "datatype": "INT64",
                                 "data": [0] * 512}]}, 422, "inputs[0].datatype", "FP32"),
    "missing data": ({"inputs": [{"name": "input", "shape": [2, 1, 16, 16], "datatype": "FP32"}]}, 422,
                     "inputs[0].data", "numbers"),
    "missing inputs": ({"id": "x"}, 422, "inputs", "'input'"),
    "short data": ({"inputs": [{"name": "input", "shape": [2, 1, 16, 16], "datatype": "FP32", "data": [0.0] * 5}]},
                   422, "inputs[0].data", "512"),
    "non-numeric data": ({"inputs": [{"name": "input", "shape": [1, 1, 1, 2], "datatype": "FP32",
                                      "data": ["a", "b"]}]}, 422, "inputs[0].data", "numbers"),
    "bad thresholds": (_v2(_good(), thresholds=[0.1, 0.2, 0.3, 0.4]), 422, "parameters.thresholds", "threshold"),
    "unknown policy": (_v2(_good(), policy="bogus"), 422, "parameters.policy", "policy"),
    "unknown mode": (_v2(_good(), mode="bogus"), 422, "parameters.mode", "early_exit"),
    "unknown parameter": (_v2(_good(), temperature=2), 422, "parameters.temperature", "mode"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_json_bodies_name_the_field(daemon, case):
    body, status, field, expected = BAD_JSON[case]
    r = daemon.client.post("/v2/models/tiny_cnn/infer", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field and expected in err["expected"], err


def test_nan_and_garbage_and_oversized_bodies(daemon):
    c = daemon.client
    nan_json = json.dumps(_v2(_good())).replace("0.0", "NaN", 1)
    r = c.post("/v2/models/tiny_cnn/infer", content=nan_json, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "inputs[0].data" and "NaN" in r.json()["error"]
    x = _good()
    x[1, 0, 3, 3] = np.inf
    r = c.post("/v2/models/tiny_cnn/infer", content=_npy(x), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "NaN or Inf" in r.json()["error"]
    r = c.post("/v2/models/tiny_cnn/infer", content=_npy(_good().astype(np.float64)),
               headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 422 and "float32" in r.json()["expected"]
    for ctype in ("application/octet-stream", "application/json"):
        r = c.post("/v2/models/tiny_cnn/infer", content=b"\x00\xffgarbage{", headers={"Content-Type": ctype})
        assert r.status_code == 400 and r.json()["field"] == "body", r.text
    r = c.post("/v2/models/tiny_cnn/infer", content=b"x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    big = np.zeros((400, 1, 16, 16), np.float32)  # ~0.5 MiB of JSON text > the 0.25 MiB limit
    r = c.post("/v2/models/tiny_cnn/infer", json=_v2(big))
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks():  # no Content-Length: the streaming limit must catch it
        for _ in range(40):
            yield b"\x93NUMPY" + b"\0" * 8192

    r = c.post("/v2/models/tiny_cnn/infer", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413
    assert c.get("/v2/health/ready").status_code == 200  # still healthy after all that


def test_value_problems_name_the_data_and_shape_problems_the_shape(runtimes):
    from edge_runtime.serve.codec import RequestError, decode_doc

    rt = runtimes["tiny_cnn"]
    x = _good()
    x[1, 0, 2, 2] = np.nan

    def binary(arr: np.ndarray) -> dict:   # the binary extension's tensor bytes skip the JSON number checks
        return {"inputs": [{"name": "input", "shape": list(arr.shape), "datatype": "FP32",
                            "data": memoryview(arr.tobytes())}]}

    with pytest.raises(RequestError) as exc:
        decode_doc(binary(x), rt, 64)
    assert exc.value.status == 422 and exc.value.field == "inputs[0].data" and "NaN" in str(exc.value)
    with pytest.raises(RequestError) as exc:
        decode_doc(binary(np.zeros((2, 1, 16, 15), np.float32)), rt, 64)
    assert exc.value.field == "inputs[0].shape"


def test_bodies_are_not_parsed_for_self_served_modes_a_bundle_lacks(runtimes, monkeypatch):
    from edge_runtime.serve import codec

    calls = []
    monkeypatch.setattr(codec, "loads", lambda body: calls.append(body) or json.loads(body))
    body = json.dumps(_v2(_good())).encode()
    assert codec.self_served_request(runtimes["tiny_cnn"], body, "application/json", {}) is None
    assert calls == []      # no mode of a classifier answers whole requests: the tensor path parses it once


def test_concurrent_requests_share_micro_batches(daemon, runtimes):
    rt = runtimes["tiny_transformer"]
    xs = np.random.default_rng(9).standard_normal((12, 1, 16, 16)).astype(np.float32)
    local = rt.infer(xs)
    results: dict[int, dict] = {}

    def one(i: int) -> None:
        r = daemon.client.post("/v2/models/tiny_transformer/infer", json=_v2(xs[i:i + 1]))
        results[i] = r.json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(r["parameters"]["batch_size"] for r in results.values()) > 1
    for i, r in results.items():  # each caller got its own sample's answer
        assert r["samples"][0]["exit_index"] == local.exit_index[i]
        np.testing.assert_allclose(r["samples"][0]["output"], local.outputs[i], atol=1e-5)


def test_metrics_count_requests_exits_and_batches(daemon):
    c = daemon.client
    x = np.zeros((3, 1, 16, 16), np.float32)
    assert c.post("/v2/models/tiny_cnn/infer?policy=never", content=_npy(x),
                  headers={"Content-Type": "application/octet-stream"}).status_code == 200
    text = c.get("/metrics").text
    for name in ("edge_runtime_http_requests_total", "edge_runtime_request_latency_seconds_bucket",
                 "edge_runtime_exits_total", "edge_runtime_segment_latency_seconds_bucket",
                 "edge_runtime_batch_size_bucket", "edge_runtime_model_loads_total",
                 "edge_runtime_energy_joules_total"):
        assert name in text, name
    assert 'edge_runtime_inference_requests_total{model="tiny_cnn",status="200"}' in text
    assert 'edge_runtime_inference_requests_total{model="tiny_cnn",status="422"}' in text
    assert 'edge_runtime_model_loads_total{model="tiny_cnn",result="ok"} 1.0' in text
    last_exit = [ln for ln in text.splitlines() if ln.startswith('edge_runtime_exits_total{exit="2",model="tiny_cnn"}')
                 or ln.startswith('edge_runtime_exits_total{model="tiny_cnn",exit="2"}')]
    assert last_exit and float(last_exit[0].split()[-1]) >= 3


@pytest.fixture(scope="module")
def guarded(bundles, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("auth") / "token"
    token_file.write_text("s3cret-token\n")
    d = Daemon([f"cnn={bundles['tiny_cnn']}", "--token-file", str(token_file), "--max-batch-size", "4",
                "--max-queue", "4", "--max-wait-ms", "1500", "--timeout", "0.6", "--meter", "estimate",
                "--profile", "rpi4"], token="s3cret-token")
    yield d
    d.stop()


def test_bearer_token_required_except_for_health(guarded):
    import httpx

    with httpx.Client(base_url=guarded.url) as anon:
        assert anon.get("/v2/health/ready").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            r = anon.get("/v2/models/cnn", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/metrics").status_code == 401
    assert guarded.client.get("/v2/models/cnn").status_code == 200


def test_overload_gets_503_retry_after_and_slow_requests_504(guarded):
    results = {}

    def waiting() -> None:  # 3 samples wait up to 1.5 s for a 4th; the 0.6 s timeout fires first
        results["slow"] = guarded.client.post("/v2/models/cnn/infer", json=_v2(np.zeros((3, 1, 16, 16), np.float32)))

    t = threading.Thread(target=waiting)
    t.start()
    import time

    time.sleep(0.25)
    r = guarded.client.post("/v2/models/cnn/infer", json=_v2(np.zeros((2, 1, 16, 16), np.float32)))
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    t.join()
    assert results["slow"].status_code == 504
    big = guarded.client.post("/v2/models/cnn/infer", json=_v2(np.zeros((5, 1, 16, 16), np.float32)))
    assert big.status_code == 422 and big.json()["expected"] == "N <= 4"
    ok = guarded.client.post("/v2/models/cnn/infer", json=_v2(np.zeros((4, 1, 16, 16), np.float32)))
    assert ok.status_code == 200  # a full batch runs at once, and the timed-out request was dropped


def test_energy_per_sample_and_its_source_when_a_meter_is_attached(guarded):
    r = guarded.client.post("/v2/models/cnn/infer", json=_v2(np.ones((4, 1, 16, 16), np.float32)))
    assert r.status_code == 200, r.text
    samples = r.json()["samples"]
    assert all(s["energy_j"] > 0 and s["energy_source"] == "estimated:rpi4" for s in samples)
    assert guarded.client.get("/v2/models/cnn").json()["energy_source"] == "estimated:rpi4"
    text = guarded.client.get("/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("edge_runtime_energy_joules_total{")
                and 'source="estimated:rpi4"' in ln)
    assert float(line.split()[-1]) >= sum(s["energy_j"] for s in samples) * 0.999
