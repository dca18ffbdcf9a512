"""Daemon lifecycle: hot reload (HTTP and SIGHUP), graceful drain, systemd notify and unit, per-sample answers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _serve_helpers import Daemon  # noqa: E402

import edge_runtime  # noqa: E402


def _v2(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def _variant(src: Path, dst: Path, thresholds: list[float]) -> Path:
    """A valid copy of a bundle with other thresholds (so another manifest, another version)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["policy"]["thresholds"] = thresholds
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _point(link: Path, target: Path) -> None:
    """Atomically retarget a symlink (how a deployment swaps bundle directories)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _version(d: Daemon) -> str:
    return d.client.get("/v2/models/cnn").json()["versions"][0]


def test_reload_swaps_verified_bundles_and_keeps_the_old_one_on_failure(cnn_bundle, tmp_path):
    good_a = _variant(cnn_bundle, tmp_path / "a", [0.5, 0.5])
    good_b = _variant(cnn_bundle, tmp_path / "b", [0.1, 0.2])
    flipped = _variant(cnn_bundle, tmp_path / "flipped", [0.3, 0.3])
    seg = flipped / "segments" / "segment_1.onnx"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    broken_json = _variant(cnn_bundle, tmp_path / "broken_json", [0.3, 0.3])
    (broken_json / "manifest.json").write_text('{"format": "edge-runtime-bundle", ')
    link = tmp_path / "current"
    _point(link, good_a)
    d = Daemon([f"cnn={link}", "--max-wait-ms", "400"])
    try:
        v_a = _version(d)
        # in-flight requests finish on the model they started on
        slow: dict = {}
        body = _v2(np.zeros((1, 1, 16, 16), np.float32))
        t = threading.Thread(target=lambda: slow.update(r=d.client.post("/v2/models/cnn/infer", json=body)))
        t.start()
        time.sleep(0.15)
        _point(link, good_b)
        r = d.client.post("/v2/repository/models/cnn/load")
        assert r.status_code == 200, r.text
        v_b = r.json()["version"]
        assert v_b != v_a and _version(d) == v_b
        assert d.client.get("/v2/models/cnn").json()["policy"]["thresholds"] == [0.1, 0.2]
        t.join()
        assert slow["r"].status_code == 200 and slow["r"].json()["model_version"] == v_a
        # failures: sha256 mismatch, unreadable manifest, missing directory -> 422, old model keeps serving
        for bad, words in ((flipped, "sha256"), (broken_json, "manifest"), (tmp_path / "missing", "")):
            _point(link, bad)
            r = d.client.post("/v2/repository/models/cnn/load")
            assert r.status_code == 422, r.text
            assert r.json()["serving"] == v_b and words in r.json()["error"]
            ok = d.client.post("/v2/models/cnn/infer", json=_v2(np.zeros((2, 1, 16, 16), np.float32)))
            assert ok.status_code == 200 and ok.json()["model_version"] == v_b
        assert d.client.get("/v2/health/ready").status_code == 200
        index = d.client.post("/v2/repository/index").json()
        assert index[0]["version"] == v_b and "sha256" not in index[0]["reason"]  # last error: the missing dir
        # SIGHUP reloads from the same path
        _point(link, good_a)
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while _version(d) != v_a and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _version(d) == v_a
        metrics = d.client.get("/metrics").text
        assert 'edge_runtime_model_loads_total{model="cnn",result="failed"} 3.0' in metrics
        assert 'edge_runtime_model_loads_total{model="cnn",result="ok"} 3.0' in metrics
        assert d.client.post("/v2/repository/models/other/load").status_code == 404
    finally:
        assert d.stop() == 0, d.output()


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    return sock


def _drain(sock: socket.socket, seconds: float = 0.5) -> list[str]:
    """Every message that arrives within ``seconds`` (watchdog pings keep coming, so bound it by time)."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
    return out


def test_notify_watchdog_and_graceful_drain_on_sigterm(cnn_bundle, tmp_path):
    sock = _notify_socket(tmp_path)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "300000"}
    d = Daemon([f"cnn={cnn_bundle}", "--max-wait-ms", "600", "--max-batch-size", "64"], env=env)
    try:
        first = _drain(sock)
        assert first[0].startswith("READY=1") and f"MAINPID={d.proc.pid}" in first[0]
        assert "WATCHDOG=1" in first[1:]
        d.signal(signal.SIGHUP)
        msgs = _drain(sock, 1.5)
        assert any(m.startswith("RELOADING=1") for m in msgs) and any(m.startswith("READY=1") for m in msgs)
        results: list = []

        def call() -> None:
            results.append(d.client.post("/v2/models/cnn/infer", json=_v2(np.ones((1, 1, 16, 16), np.float32))))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # all four are now waiting in the micro-batcher (max wait 600 ms)
        d.signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200] * 4  # drained, not dropped
        assert d.proc.wait(20) == 0, d.output()
        assert "STOPPING=1" in _drain(sock, 0.3)
    finally:
        d.stop()
        sock.close()


def test_service_unit_is_valid_systemd(cnn_bundle, tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "service", "unit", f"cnn={cnn_bundle}",
                           "--token-file", str(token), "--watchdog", "20", "--serve-args", "--max-batch-size 16"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in ("Type=notify", "WatchdogSec=20", "Restart=on-failure", "User=edge-runtime", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ExecReload=/bin/kill -HUP $MAINPID", "PrivateDevices=yes"):
        assert line in text.splitlines(), line
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert f"cnn={Path(cnn_bundle).resolve()}" in exec_start and "--max-batch-size 16" in exec_start
    assert "--host 127.0.0.1" in exec_start
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "edge-runtime.service"
    unit.write_text(text)
    check = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "edge-runtime.service" not in check.stderr, check.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    bad = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in bad.stderr  # the check can fail


def test_token_comes_from_file_or_environment(tmp_path, monkeypatch):
    from edge_runtime.errors import ConfigError
    from edge_runtime.serve import ServeConfig, resolve_token

    monkeypatch.setenv("EDGE_RUNTIME_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    (tmp_path / "tok").write_text("from-file\n")
    assert resolve_token(str(tmp_path / "tok")) == "from-file"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        resolve_token(str(tmp_path / "empty"))
    cfg = ServeConfig(token="abc")
    assert cfg.token_matches("abc") and not cfg.token_matches("abd") and not cfg.token_matches(None)
    assert "abc" not in repr(cfg)
    with pytest.raises(ConfigError, match="max_queue"):
        ServeConfig(max_batch_size=8, max_queue=4)


class _SlowRunner:
    """A segment runner that sleeps before running (makes 'answered before the batch ends' measurable)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.output_names, self.input_names = inner.output_names, inner.input_names

    def run(self, x):
        time.sleep(self.delay)
        return self.inner.run(x)


def test_each_request_is_answered_when_its_sample_exits(cnn_bundle):
    from edge_runtime.serve import MicroBatcher

    rt = edge_runtime.load_bundle(cnn_bundle, threads=1)
    x = np.random.default_rng(3).standard_normal((8, 1, 16, 16)).astype(np.float32)
    pol = edge_runtime.create_policy("entropy", rt.num_exits, 1.0)
    thr = [float(np.median(pol.score(o))) for o in rt.exit_outputs(x)[:-1]]
    policy = rt.make_policy("entropy", thr)
    expected = rt.infer(x, policy=policy)
    assert 0 in expected.exit_index and rt.num_exits - 1 in expected.exit_index
    rt.segments[-1] = _SlowRunner(rt.segments[-1], 0.3)
    batcher = MicroBatcher(rt, max_batch_size=8, max_wait_s=0.2, max_queue=8)

    async def main() -> tuple[list, list[float]]:
        reqs = [batcher.submit(x[i:i + 1], key="k", mode="early_exit", policy=policy) for i in range(8)]
        loop = asyncio.get_running_loop()
        done_at = [0.0] * 8
        for i, r in enumerate(reqs):
            r.future.add_done_callback(lambda _f, i=i: done_at.__setitem__(i, loop.time()))
        answers = await asyncio.gather(*(r.future for r in reqs))
        return answers, done_at

    answers, done_at = asyncio.run(main())
    batcher.close()
    assert batcher.join(5)
    assert all(a.batch_size == 8 for a in answers)  # one micro-batch
    exits = np.array([int(a.exit_index[0]) for a in answers])
    np.testing.assert_array_equal(exits, expected.exit_index)
    for i, a in enumerate(answers):
        np.testing.assert_allclose(a.outputs[0], expected.outputs[i], atol=1e-5)
    early = max(t for t, e in zip(done_at, exits) if e == 0)
    late = min(t for t, e in zip(done_at, exits) if e == rt.num_exits - 1)
    assert late - early > 0.25  # exit-0 callers had their answer before the slow last segment finished


@pytest.mark.slow
def test_serve_load_benchmark_soak_passes(cnn_bundle, tmp_path):
    """The load benchmark end to end, shortened: wrk on/off rounds, a soak with good and corrupted reloads."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk not installed (apt-get install wrk)")
    out = tmp_path / "serve_load.json"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "serve_load.py"), "--bundle", str(cnn_bundle),
                           "--duration", "6", "--rounds", "2", "--warmup", "1", "--soak", "30", "--soak-warmup", "8",
                           "--reloads", "6", "--json", str(out)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    soak = report["soak"]
    assert soak["pass"], proc.stdout
    assert set(soak["versions_seen"]) <= set(soak["good_versions"]) and soak["wrk"]["non_2xx"] == 0
    assert [r["status"] for r in soak["reloads"]] == [200, 422] * 3
    for run in report["throughput"]["runs"].values():
        assert run["non_2xx"] == 0 and run["socket_errors"] == 0 and run["exit_code"] == 0
