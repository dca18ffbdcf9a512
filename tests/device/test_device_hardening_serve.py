"""The daemon against hostile requests and clients (issue 16, items 6, 7, 9, 10): 4xx naming the field instead of
500s, every 5xx logged with a request id and no server paths or backend source locations in error bodies; header
and body timeouts, a header size cap and a connection cap; large bodies decoded off the event loop; non-finite
answers refused; the reload smoke run at the batch sizes the server uses; a busy port as a one-line error."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import _onnx_proto as P
from edge_runtime.errors import BundleError
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.synthetic import synthetic_weights

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

LIMITS = ["--header-timeout", "1", "--body-timeout", "1", "--max-header-kb", "8", "--max-connections", "6"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, body: bytes | dict[str, Any] | None = None, *, method: str | None = None,
          ctype: str = "application/json") -> tuple[int, Any, dict[str, str]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw.decode("latin-1")
        return err.code, doc, dict(err.headers)


def _pin(bundle: Path, rel: str, data: bytes) -> None:
    (bundle / rel).write_bytes(data)
    m = json.loads((bundle / "manifest.json").read_text())
    for seg in m["segments"]:
        for f in seg["files"]:
            if f["path"] == rel:
                f["sha256"], f["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (bundle / "manifest.json").write_text(json.dumps(m))


def gather_bundle(src: Path, dst: Path) -> Path:
    """A 3-exit synthetic bundle whose segment 0 answers ``exit = table[max(input)]``: it serves inputs in [0, 10)
    and fails inside onnxruntime (index out of bounds) for larger ones — a backend failure on demand."""
    shutil.copytree(src, dst)
    w = synthetic_weights(3, 8, 4)[0]
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    nodes = [P.node("MatMul", ["input", "w0"], ["pre0"]), P.node("Relu", ["pre0"], ["hidden_0"]),
             P.node("ReduceMax", ["input"], ["peak"], [P.attr_ints("axes", [1]), P.attr_int("keepdims", 0)]),
             P.node("Cast", ["peak"], ["idx"], [P.attr_int("to", 7)]),
             P.node("Gather", ["table", "idx"], [EXIT_OUTPUT], [P.attr_int("axis", 0)])]
    graph = P.model(nodes, [P.value_info("input", ["N", 8])],
                    [P.value_info("hidden_0", ["N", 8]), P.value_info(EXIT_OUTPUT, ["N", 4])],
                    [P.tensor("w0", w.w), P.tensor("table", table)])
    _pin(dst, "segments/segment_0.onnx", graph)
    return dst


class _Daemon:
    def __init__(self, code: str, log: Path, port: int) -> None:
        self.url, self.log, self.port = f"http://127.0.0.1:{port}", log, port
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"daemon not ready after 60 s:\n{log.read_text()}"
            try:
                if _call(f"{self.url}/v2/health/ready")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory,
           blocker_prelude: str) -> Iterator[tuple[_Daemon, Path]]:
    root = tmp_path_factory.mktemp("hardened-serve")
    bundle = gather_bundle(make_bundle(num_exits=3), root / "bundle")
    port = _free_port()
    args = ["serve", f"syn={bundle}", "--port", str(port), "--threads", "1", "--max-wait-ms", "1",
            "--max-batch-size", "4", *LIMITS]
    code = blocker_prelude + f"from edge_runtime.cli import main\nsys.exit(main({args!r}))\n"
    daemon = _Daemon(code, root / "daemon.log", port)
    try:
        yield daemon, bundle
    finally:
        rc = daemon.stop()
    assert rc == 0, daemon.log.read_text()


def _infer(daemon: _Daemon, body: bytes | dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    return _call(f"{daemon.url}/v2/models/syn/infer", body)


def _tensor(data: Any, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}], **extra}


# -- 6. 4xx naming the field, not 500 -------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "status", "field"), [
    (_tensor([], [1, 1, 2 ** 32, 2 ** 32]), 422, "inputs[0].shape"),  # int64 product wraps to 0 == len([])
    (_tensor([0.0] * 8, [2 ** 63 - 1, 8]), 422, "inputs[0].shape"),
    (b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [1' + b"0" * 400
     + b', 0, 0, 0, 0, 0, 0, 0]}]}', 422, "inputs[0].data"),
    (b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0]}], '
     b'"parameters": {"thresholds": 1' + b"0" * 400 + b"}}", 422, "parameters.thresholds"),
    (b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0]}], '
     b'"parameters": {"thresholds": [1e400, 1]}}', 422, "parameters.thresholds"),
    (b"[" * 5000 + b"]" * 5000, 400, "body"),
    (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "body"),
    (b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b', "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", '
     b'"data": [0, 0, 0, 0, 0, 0, 0, 0]}]}', 400, "body"),
    (_tensor(["0.5"] * 8, [1, 8]), 422, "inputs[0].data"),
    (_tensor([True] * 8, [1, 8]), 422, "inputs[0].data"),
    (_tensor([0.5] * 7 + [None], [1, 8]), 422, "inputs[0].data"),
    (b'{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0], '
     b'"shape": [2, 4]}]}', 400, "body"),
    (b'{"id": "a", "id": "b", "inputs": []}', 400, "body"),
    (_tensor([0.0] * 8, [1, 8], id=["not", "a", "string"]), 422, "id"),
], ids=["shape-product-wraps", "shape-huge-batch", "int-beyond-float", "threshold-int-beyond-float",
        "threshold-1e400", "nested-5000", "nested-5000-inputs", "nested-5000-id", "numeric-strings", "booleans", "null",
        "duplicate-shape-key", "duplicate-id-key", "id-not-a-string"])
def test_bad_requests_are_4xx_naming_the_field(served: tuple[_Daemon, Path], body: Any, status: int,
                                               field: str) -> None:
    daemon, _ = served
    got, doc, headers = _infer(daemon, body)
    assert (got, doc["field"]) == (status, field), doc
    assert "inference failed" not in doc["error"]
    assert headers.get("x-request-id") or headers.get("X-Request-Id")


def test_a_backend_failure_is_a_logged_500_with_a_request_id_and_no_internals(served: tuple[_Daemon, Path]) -> None:
    daemon, bundle = served
    status, doc, headers = _infer(daemon, _tensor([1000.0] * 8, [1, 8]))
    rid = headers.get("x-request-id") or headers.get("X-Request-Id")
    assert status == 500 and rid and rid in doc["error"], doc
    text = json.dumps(doc)
    assert str(bundle) not in text and ".cc:" not in text and "onnxruntime_src" not in text and "/tmp" not in text
    deadline = time.monotonic() + 10
    while rid not in daemon.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = daemon.log.read_text()
    assert rid in log and "segment_0.onnx" in log  # the operator gets the whole story
    assert _infer(daemon, _tensor([1.0] * 8, [1, 8]))[0] == 200  # and the daemon still serves


def test_a_failed_reload_names_no_server_path(served: tuple[_Daemon, Path]) -> None:
    daemon, bundle = served
    seg = bundle / "segments" / "segment_1.onnx"
    good = seg.read_bytes()
    seg.write_bytes(good + b"\0")
    try:
        status, doc, _ = _call(f"{daemon.url}/v2/repository/models/syn/load", b"", method="POST")
    finally:
        seg.write_bytes(good)
    assert status == 422 and "sha256" in doc["error"] and doc["field"] == "segments.1.files.0.sha256", doc
    assert str(bundle) not in json.dumps(doc) and "/tmp" not in json.dumps(doc)
    assert "segment_1.onnx" in doc["error"]


def test_non_finite_outputs_are_an_error_not_an_answer(served: tuple[_Daemon, Path]) -> None:
    """Finite float32 inputs that overflow inside the model (-3e38) used to answer 200 with ``output: null,
    prediction: 0``."""
    daemon, _ = served
    body = _tensor([0.0] + [-3e38] * 7, [1, 8], parameters={"policy": "never"})  # answered by the last exit
    status, doc, _ = _infer(daemon, body)
    assert status == 422 and doc["field"] == "inputs[0].data" and "not finite" in doc["error"], doc
    assert _infer(daemon, _tensor([0.0] + [-3.0] * 7, [1, 8], parameters={"policy": "never"}))[0] == 200


# -- 9. limits on slow, large and many connections ------------------------------------------------------------------
def _recv_all(sock: socket.socket, timeout: float = 15.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_slow_headers_are_cut_off(served: tuple[_Daemon, Path]) -> None:
    daemon, _ = served
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        reply = _recv_all(s)
    assert reply.startswith(b"HTTP/1.1 408") or reply == b""


def test_trickled_headers_are_cut_off(served: tuple[_Daemon, Path]) -> None:
    daemon, _ = served
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 15:
            try:
                s.sendall(b"X-Slow: a\r\n")  # a new header line every 0.2 s: never idle, never done
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
    assert closed


def test_a_stalled_body_gets_408(served: tuple[_Daemon, Path]) -> None:
    daemon, _ = served
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.sendall(b"POST /v2/models/syn/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\": [")
        reply = _recv_all(s)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"field":"body"' in reply.replace(b" ", b"")


def test_oversized_headers_are_refused(served: tuple[_Daemon, Path]) -> None:
    daemon, _ = served
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        try:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = _recv_all(s)
    assert reply.startswith(b"HTTP/1.1 431") or reply == b"", reply[:200]
    assert _call(f"{daemon.url}/v2/health/live")[0] == 200


def test_exactly_the_cap_of_connections_is_served(served: tuple[_Daemon, Path]) -> None:
    """Five idle connections and the caller's make six, the cap: served (only a seventh is refused)."""
    daemon, _ = served
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(5)]
    try:
        time.sleep(0.2)
        status, _, _ = _call(f"{daemon.url}/v2/health/live")
    finally:
        for s in idle:
            s.close()
    assert status == 200


def test_connections_beyond_the_cap_get_503(served: tuple[_Daemon, Path]) -> None:
    daemon, _ = served
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        status, _, _ = _call(f"{daemon.url}/v2/health/live")
    finally:
        for s in idle:
            s.close()
    assert status == 503
    time.sleep(0.3)
    assert _call(f"{daemon.url}/v2/health/live")[0] == 200


# -- 7. a busy port ----------------------------------------------------------------------------------------------------
def test_a_busy_port_is_a_one_line_error_exit_2(make_bundle: Callable[..., Path], blocker_prelude: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", f"syn={make_bundle(num_exits=3)}", "--port", str(port), "--threads", "1"]
        code = blocker_prelude + f"from edge_runtime.cli import main\nsys.exit(main({args!r}))\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("edge-runtime serve: error:") and str(port) in err[0] and "in use" in err[0]


# -- in process: decoding off the event loop, the reload smoke run -----------------------------------------------
@pytest.fixture()
def app_repo(make_bundle: Callable[..., Path]) -> Iterator[tuple[Any, Any]]:
    from edge_runtime.serve.app import create_app
    from edge_runtime.serve.config import ServeConfig
    from edge_runtime.serve.metrics import ServeMetrics
    from edge_runtime.serve.repository import ModelRepository

    config = ServeConfig(threads=1, max_wait_ms=1)
    metrics = ServeMetrics()
    repo = ModelRepository({"syn": make_bundle(num_exits=3)}, config, metrics)
    repo.load_all()
    try:
        yield create_app(repo, config, metrics), repo
    finally:
        repo.close(5)


def test_large_bodies_are_decoded_off_the_event_loop(app_repo: tuple[Any, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    httpx = pytest.importorskip("httpx")
    from edge_runtime.serve import codec

    app, _ = app_repo
    seen: list[bool] = []
    real = codec.decode_json

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "decode_json", spy)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            small = _tensor([0.5] * 8, [1, 8])
            large = _tensor([0.5] * 8 * 4096, [4096, 8])
            return [(await client.post("/v2/models/syn/infer", json=b)).status_code for b in (small, large)]

    statuses = asyncio.run(go())
    assert statuses[0] == 200 and statuses[1] in (200, 422)  # 4096 samples may exceed the queue: decoded anyway
    assert seen == [True, False]  # the small one inline, the large one in a worker thread


def test_the_reload_smoke_run_uses_the_servers_batch_sizes(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    """A graph that only works at batch 2 (a Reshape to [2, 4]) passed the old smoke run (batch 2 only); the server
    runs batches of 1 .. max_batch_size, so the smoke run does too and refuses it at load."""
    from edge_runtime.serve.config import ServeConfig
    from edge_runtime.serve.metrics import ServeMetrics
    from edge_runtime.serve.repository import ModelRepository

    dst = tmp_path / "b"
    shutil.copytree(make_bundle(num_exits=3), dst)
    w = synthetic_weights(3, 8, 4)[0]
    shape = P._int(1, 2) + P._int(2, 7) + P._str(8, "shape") + P._bytes(9, np.array([2, 4], "<i8").tobytes())
    nodes = [P.node("MatMul", ["input", "w0"], ["pre0"]), P.node("Relu", ["pre0"], ["hidden_0"]),
             P.node("MatMul", ["hidden_0", "head0"], ["flat"]), P.node("Reshape", ["flat", "shape"], [EXIT_OUTPUT])]
    outputs = [P.value_info("hidden_0", ["N", 8]), P.value_info(EXIT_OUTPUT, ["N", 4])]
    _pin(dst, "segments/segment_0.onnx", P.model(nodes, [P.value_info("input", ["N", 8])], outputs,
                                                 [P.tensor("w0", w.w), P.tensor("head0", w.head), shape]))
    repo = ModelRepository({"syn": dst}, ServeConfig(threads=1, max_batch_size=8), ServeMetrics())
    with pytest.raises(BundleError, match="smoke run"):
        repo.load("syn")
