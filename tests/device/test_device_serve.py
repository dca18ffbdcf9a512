"""The daemon on the device (needs the serve extra; skipped without it): a request to a synthetic bundle, answered
like the library answers it, by a daemon process that cannot import the workstation side."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_runtime

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def daemon(make_bundle: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory,
           blocker_prelude: str) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "daemon.log"
    code = blocker_prelude + (
        "from edge_runtime.cli import main\n"
        f"sys.exit(main(['serve', 'syn={make_bundle(num_exits=3)}', '--port', '{port}', '--threads', '1',"
        " '--max-wait-ms', '1']))\n")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"daemon exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"daemon not ready after 60 s:\n{log.read_text()}"
            try:
                if _call(f"{url}/v2/health/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0, log.read_text()


def test_inference_request_answers_like_the_library(daemon: str, make_bundle: Callable[..., Path]) -> None:
    x = np.random.default_rng(5).standard_normal((4, 8)).astype(np.float32)
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [4, 8], "datatype": "FP32",
                                    "data": x.ravel().tolist()}], "parameters": {"thresholds": [1e9, 1e9]}}
    status, doc = _call(f"{daemon}/v2/models/syn/infer", body)
    assert status == 200, doc
    assert doc["model_name"] == "syn" and doc["id"] == "r1"
    res = edge_runtime.load_bundle(make_bundle(num_exits=3), threads=1).infer(x, thresholds=[1e9, 1e9])
    assert [s["exit_index"] for s in doc["samples"]] == res.exit_index.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose([s["output"] for s in doc["samples"]], res.outputs, atol=1e-5)
    status, meta = _call(f"{daemon}/v2/models/syn")
    assert status == 200 and meta["modes"] == ["early_exit", "full"] and len(meta["exits"]) == 3


def test_bad_request_names_the_field(daemon: str) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}]}
    status, doc = _call(f"{daemon}/v2/models/syn/infer", body)
    assert status == 422 and doc["field"] == "inputs[0].shape" and doc["expected"].startswith("shape [N, 8]")
