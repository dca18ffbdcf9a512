"""The daemon with a service-level objective: the controller moves along the calibrated front, the accuracy monitor
reports live agreement, and both show in /metrics and the model's metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _serve_helpers import Daemon  # noqa: E402

import edge_runtime  # noqa: E402
from edge_runtime.calibration import calibrate  # noqa: E402
from edge_runtime.synthetic import write_synthetic_bundle  # noqa: E402


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic bundle with a calibration curve (labels: the final exit's own answers)."""
    root = write_synthetic_bundle(tmp_path_factory.mktemp("slo") / "b", num_exits=3)
    rt = edge_runtime.load_bundle(root, threads=1)
    x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    outs = rt.exit_outputs(x)
    cal = calibrate(outs, outs[-1].argmax(-1), "entropy", {}, flops=[1, 2, 3], max_accuracy_drop=20.0, levels=12)
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    m["calibration"] = cal.to_manifest()
    m["policy"]["thresholds"] = list(cal.chosen.thresholds)
    path.write_text(json.dumps(m))
    assert len(cal.front) >= 3
    return root


def _v2(x: np.ndarray, **params: object) -> dict:
    body: dict = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return body


def test_an_unreachable_slo_moves_to_the_cheapest_point_and_the_monitor_reports(calibrated: Path) -> None:
    d = Daemon([f"syn={calibrated}"], "--slo", "p95_latency_ms=0.0001", "--monitor-fraction", "1.0",
               "--max-batch-size", "1")
    try:
        c = d.client
        meta = c.get("/v2/models/syn").json()["operating_point"]
        assert meta["adaptive"] is True and meta["index"] == 0 and meta["slo"] == "p95_latency_ms=0.0001"
        first = meta["thresholds"]
        xs = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
        deadline = time.monotonic() + 3.5
        i = 0
        while time.monotonic() < deadline:
            r = c.post("/v2/models/syn/infer", json=_v2(xs[i % 64:i % 64 + 1]))
            assert r.status_code == 200, r.text
            i += 1
        meta = c.get("/v2/models/syn").json()["operating_point"]
        assert meta["index"] == meta["points"] - 1 and meta["thresholds"] != first  # the cheapest point
        assert meta["last_observed"] is not None and meta["moves"] >= 1
        assert meta["monitor_checked_total"] > 0 and meta["per_point"]  # every sample was re-checked
        text = c.get("/metrics").text
        for name in ("edge_runtime_operating_point{", "edge_runtime_slo_target{", "edge_runtime_slo_observed{",
                     "edge_runtime_live_agreement{", "edge_runtime_operating_point_info{"):
            assert name in text, name
        # a request with its own thresholds is not governed by the controller
        own = c.post("/v2/models/syn/infer", json=_v2(xs[:2], thresholds=[0.5, 0.5])).json()
        assert own["parameters"]["thresholds"] == [0.5, 0.5] and own["parameters"]["mode"] == "early_exit"
    finally:
        assert d.stop() == 0, d.output()


def test_bad_slo_flags_fail_at_start_up(calibrated: Path) -> None:
    with pytest.raises(RuntimeError, match="--slo"):
        Daemon([f"syn={calibrated}"], "--slo", "latency=5", startup_s=20)


def test_the_library_runtime_takes_an_slo_too(calibrated: Path) -> None:
    from edge_runtime.serve import SLORuntime

    rt = edge_runtime.load_bundle(calibrated, threads=1)
    clock = {"t": 0.0}
    slo = SLORuntime(rt, "p95_latency_ms=0.0001", clock=lambda: clock["t"])
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    first = list(slo.controller.point.thresholds)
    for _ in range(30):
        clock["t"] += 0.1
        res = slo.infer(x)
    assert slo.controller.index == len(slo.controller.points) - 1 and list(res.exit_index) in ([0], [1], [2])
    assert slo.controller.point.thresholds != first
