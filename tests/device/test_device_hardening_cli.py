"""The command line as a clumsy operator uses it (issue 16, items 7, 8, 10): one-line errors and exit code 2 for bad
bundles, backend run failures, unbounded ``--random`` and ``--threads``, non-finite thresholds and answers, and
unverified bundles unless ``--allow-unverified``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_edits import edit_manifest

from edge_runtime import _onnx_proto as P
from edge_runtime.cli import main
from edge_runtime.manifest import EXIT_OUTPUT
from edge_runtime.synthetic import synthetic_weights


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip()


def _one_line(rc: int, err: str, command: str = "run") -> None:
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"edge-runtime {command}: error:"), err


@pytest.mark.parametrize(("args", "message"), [
    (["--random", "10000000"], "--random: expected a sample count from 1 to"),
    (["--random", "0"], "--random: expected a sample count from 1 to"),
    (["--random", "2", "--threads", "0"], "threads: expected an integer from 1 to"),
    (["--random", "2", "--threads", "-1"], "threads: expected an integer from 1 to"),
    (["--random", "2", "--threads", "100000"], "threads: expected an integer from 1 to"),
    (["--random", "2", "--thresholds", "nan"], "--thresholds: expected finite numbers"),
    (["--random", "2", "--thresholds", "inf"], "--thresholds: expected finite numbers"),
    (["--random", "2", "--thresholds", "0.5,-inf"], "--thresholds: expected finite numbers"),
])
def test_unbounded_or_non_finite_flags(make_bundle: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                                       args: list[str], message: str) -> None:
    rc, err = _run(capsys, "run", str(make_bundle(num_exits=3)), *args)
    _one_line(rc, err)
    assert message in err


def test_threads_from_the_environment_are_checked_too(make_bundle: Callable[..., Path],
                                                      device_python: Callable[..., subprocess.CompletedProcess[str]]
                                                      ) -> None:
    for value, message in (("abc", "EDGE_RUNTIME_THREADS: expected an integer"),
                           ("100000", "EDGE_RUNTIME_THREADS: expected an integer from 1 to")):
        proc = device_python(f"""
            import os
            os.environ["EDGE_RUNTIME_THREADS"] = {value!r}
            from edge_runtime.cli import main
            sys.exit(main(["run", {str(make_bundle(num_exits=3))!r}, "--random", "2"]))
        """)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
            proc.stderr


def test_non_finite_answers_are_an_error(make_bundle: Callable[..., Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    x = np.full((2, 8), -3e38, np.float32)
    x[:, 0] = 0.0
    np.save(tmp_path / "x.npy", x)
    rc, err = _run(capsys, "run", str(make_bundle(num_exits=3)), "--input", str(tmp_path / "x.npy"), "--policy",
                   "never")
    _one_line(rc, err)
    assert "output is not finite for sample(s) [0, 1]" in err


def test_unverified_bundles_need_the_flag(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_manifest(bundle_copy, lambda m: m["verification"].update(passed=False))
    rc, err = _run(capsys, "run", str(bundle_copy), "--random", "2")
    _one_line(rc, err)
    assert "verification.passed" in err and "--allow-unverified" in err
    assert main(["run", str(bundle_copy), "--random", "2", "--allow-unverified"]) == 0


@pytest.mark.parametrize(("edit", "field"), [
    (lambda m: m["policy"].update(kwargs={"bogus": 1}), "policy.kwargs"),
    (lambda m: m["segments"][0]["files"][0].update(path="segments/seg\x00.onnx"), "segments.0.files.0.path"),
    (lambda m: m["inputs"][0].update(shape=[None, 8.0]), "inputs.0.shape.1"),
    (lambda m: m["inputs"][0].update(shape=[None, 10 ** 12]), "inputs.0.shape.1"),
    (lambda m: m["labels"].append("extra") or m["segments"][2]["outputs"][0].update(shape=[None, 5]),
     "segments.2.outputs"),
])
def test_broken_manifests_are_one_line_errors(bundle_copy: Path, capsys: pytest.CaptureFixture[str],
                                              edit: Callable[[dict[str, Any]], Any], field: str) -> None:
    edit_manifest(bundle_copy, edit)
    for command in ("run", "inspect"):
        argv = [command, str(bundle_copy)] + (["--random", "2"] if command == "run" else [])
        rc, err = _run(capsys, *argv)
        if command == "inspect" and field in ("segments.2.outputs", "policy.kwargs"):
            assert rc == 0  # inspect reads the manifest; building the policy and the graphs shows these
            continue
        _one_line(rc, err, command)
        assert f"field {field!r}" in err


def test_a_backend_run_failure_is_one_line(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shape = P._int(1, 2) + P._int(2, 7) + P._str(8, "shape") + P._bytes(9, np.array([2, 4], "<i8").tobytes())
    w = synthetic_weights(3, 8, 4)[0]
    nodes = [P.node("MatMul", ["input", "w0"], ["pre0"]), P.node("Relu", ["pre0"], ["hidden_0"]),
             P.node("MatMul", ["hidden_0", "head0"], ["flat"]), P.node("Reshape", ["flat", "shape"], [EXIT_OUTPUT])]
    data = P.model(nodes, [P.value_info("input", ["N", 8])],
                   [P.value_info("hidden_0", ["N", 8]), P.value_info(EXIT_OUTPUT, ["N", 4])],
                   [P.tensor("w0", w.w), P.tensor("head0", w.head), shape])
    (bundle_copy / "segments" / "segment_0.onnx").write_bytes(data)
    edit_manifest(bundle_copy, lambda m: m["segments"][0]["files"][0].update(sha256=hashlib.sha256(data).hexdigest()))
    rc, err = _run(capsys, "run", str(bundle_copy), "--random", "3")
    _one_line(rc, err)
    assert "segment_0.onnx" in err and "onnxruntime failed to run the graph" in err and ".cc:" not in err


def test_inspect_and_run_refuse_an_unreadable_bundle_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "manifest.json")
    rc, err = _run(capsys, "inspect", str(tmp_path / "b"))
    _one_line(rc, err, "inspect")
    assert "not a regular file" in err

