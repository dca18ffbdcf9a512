"""What to deploy (edge_runtime/calibration/deploy.py): the rule on crafted candidates, every configuration of a
synthetic bundle measured, and the runtime following the manifest's ``deployment`` record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.bundle import read_bundle
from edge_runtime.calibration.deploy import Candidate, measure_candidates, recommend
from edge_runtime.cli.inspect import format_bundle
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.synthetic import write_synthetic_bundle


def _c(mode: str, precision: str, acc: float, ms: float | None, fmt: str = "onnx") -> Candidate:
    return Candidate(mode, "onnxruntime" if fmt == "onnx" else "litert", fmt, precision,
                     [0.5] if mode == "early_exit" else None, acc, None if ms is None else ms / 1e3)


def test_early_exit_within_budget_and_faster_is_recommended() -> None:
    rec = recommend([_c("full", "fp32", 0.99, 2.0), _c("early_exit", "fp32", 0.985, 0.8)], budget_pts=1.0)
    assert (rec.mode, rec.precision, rec.thresholds) == ("early_exit", "fp32", [0.5])
    assert "2.50x" in rec.why and rec.reference == "full@onnx/fp32"


def test_the_one_graph_model_wins_when_early_exit_does_not_pay() -> None:
    rec = recommend([_c("full", "fp32", 0.99, 1.0), _c("early_exit", "fp32", 0.99, 1.3)], budget_pts=1.0)
    assert rec.mode == "full" and "every other configuration is slower" in rec.why


def test_a_faster_int8_one_graph_beats_every_early_exit_setting() -> None:
    cands = [_c("full", "fp32", 0.99, 2.0), _c("early_exit", "fp32", 0.985, 1.6),
             _c("full", "int8", 0.986, 0.7, fmt="tflite"), _c("early_exit", "int8", 0.975, 0.5, fmt="tflite")]
    rec = recommend(cands, budget_pts=1.0)
    assert (rec.mode, rec.format, rec.precision) == ("full", "tflite", "int8")  # the int8 early exit drops 1.5 points
    judged = {c.name: c for c in rec.candidates}
    assert not judged["early_exit@tflite/int8"].eligible and "drop 1.50 > 1" in judged["early_exit@tflite/int8"].note


def test_unknown_costs_are_not_eligible_and_a_reference_is_needed() -> None:
    rec = recommend([_c("full", "fp32", 0.99, 1.0), _c("cbnet", "fp32", 0.99, None)], budget_pts=1.0)
    assert rec.mode == "full" and not {c.name: c for c in rec.candidates}["cbnet@onnx/fp32"].eligible
    with pytest.raises(EdgeRuntimeError, match="one-graph"):
        recommend([_c("early_exit", "fp32", 0.99, 1.0)], budget_pts=1.0)


@pytest.fixture()
def synthetic(tmp_path: Path) -> Path:
    return write_synthetic_bundle(tmp_path / "b", num_exits=3, thresholds=[0.9, 0.7])


def test_every_configuration_of_a_bundle_is_measured(synthetic: Path) -> None:
    rt = edge_runtime.load_bundle(synthetic, threads=1)
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    y = rt.infer(x, mode="full").predictions
    cands = measure_candidates(synthetic, x, y, repeats=2)
    by = {c.name: c for c in cands}
    assert set(by) == {"early_exit@onnx/fp32", "full@onnx/fp32"}
    assert by["full@onnx/fp32"].accuracy == 1.0
    assert by["early_exit@onnx/fp32"].accuracy == float((rt.infer(x).predictions == y).mean())
    assert by["early_exit@onnx/fp32"].thresholds == [0.9, 0.7] and by["full@onnx/fp32"].thresholds is None
    assert all(c.latency_s is not None and c.latency_s > 0 for c in cands)
    rec = recommend(cands, budget_pts=100.0)
    assert rec.mode in ("early_exit", "full")


def _with_deployment(bundle: Path, **record: object) -> Path:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    m["deployment"] = {"format": "onnx", "precision": "fp32", "thresholds": None, "why": "test", **record}
    path.write_text(json.dumps(m))
    return bundle


def test_the_runtime_follows_the_deployment_record(synthetic: Path) -> None:
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    plain = edge_runtime.load_bundle(synthetic, threads=1)
    assert plain.default_mode == "early_exit" and plain.infer(x).mode == "early_exit"
    rt = edge_runtime.load_bundle(_with_deployment(synthetic, mode="full"), threads=1)
    assert rt.manifest.deployment is not None and rt.manifest.deployment.variant == "onnx/fp32"
    assert rt.default_mode == "full" and rt.infer(x).mode == "full"
    assert rt.infer(x, thresholds=[0.9, 0.7]).mode == "early_exit"  # a policy override means early exit
    assert rt.infer(x, mode="early_exit").mode == "early_exit"
    assert "recommended: full on onnx/fp32 -- test" in format_bundle(read_bundle(synthetic).manifest)


def test_a_record_for_other_files_does_not_apply(synthetic: Path) -> None:
    rt = edge_runtime.load_bundle(_with_deployment(synthetic, mode="full", format="tflite", precision="int8"),
                                  threads=1, backend="onnxruntime")
    assert rt.variant == "onnx/fp32" and rt.default_mode == "early_exit"


def test_a_record_whose_backend_is_missing_falls_back(synthetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_runtime.backends import FORMAT_BACKENDS

    monkeypatch.setitem(FORMAT_BACKENDS, "nowhere", "no_such_backend")
    rt = edge_runtime.load_bundle(_with_deployment(synthetic, mode="full", format="nowhere"), threads=1)
    assert rt.backend.name == "onnxruntime" and rt.default_mode == "early_exit"


def test_costs_predicted_for_another_board(synthetic: Path) -> None:
    """Converting on a workstation for a Pi 4: the fp32 ONNX early exit and one graph get the profile's predicted
    latencies (early exit at the calibrated exit fractions); other modes would have none."""
    path = synthetic / "manifest.json"
    m = json.loads(path.read_text())
    m["calibration"] = {"chosen": {"thresholds": [0.9, 0.7], "accuracy": 1.0, "mean_flops": 1.0,
                                   "flops_fraction": 0.5, "exit_fractions": [0.5, 0.25, 0.25]}, "curve": []}
    path.write_text(json.dumps(m))
    x = np.random.default_rng(4).standard_normal((10, 8)).astype(np.float32)
    y = edge_runtime.load_bundle(synthetic, threads=1).infer(x, mode="full").predictions
    cands = {c.name: c for c in measure_candidates(synthetic, x, y, repeats=1, profile="rpi4")}
    full, ee = cands["full@onnx/fp32"], cands["early_exit@onnx/fp32"]
    assert full.cost_source == ee.cost_source == "predicted for rpi4"
    assert full.latency_s is not None and ee.latency_s is not None and 0 < ee.latency_s
    from edge_runtime.estimate import estimate_segment_latency
    from edge_runtime.profiles import resolve_profile

    man = read_bundle(synthetic).manifest
    assert man.full_model is not None
    assert full.latency_s == pytest.approx(estimate_segment_latency(man.full_model, resolve_profile("rpi4"), last=True))
