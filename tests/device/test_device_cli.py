"""The command line on the device: ``inspect`` and ``run`` on a synthetic bundle, and a workstation command that
is not there."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.cli import main
from edge_runtime.synthetic import reference_exits, synthetic_weights


@pytest.fixture(scope="module")
def bundle(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle(num_exits=3, thresholds=[0.9, 0.7])


def test_inspect_prints_the_bundle(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "bundle 'synthetic' (format v2), input input [None, 8] float32, 4 classes" in out
    assert "policy: entropy  thresholds ['0.9', '0.7']" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"] and [r[1] for r in rows] == ["linear"] * 3
    assert [r[6] for r in rows] == ["0.9", "0.7", "final"]
    assert "verification: passed at tolerance 1e-05" in out
    assert "modes: early_exit, full" in out


def test_inspect_json_is_the_manifest(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(bundle), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == edge_runtime.load_bundle(bundle).manifest.to_dict()
    assert doc["policy"]["thresholds"] == [0.9, 0.7]


def test_run_on_an_npy_batch_equals_the_library(bundle: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(bundle), "--input", str(tmp_path / "x.npy"), "--json", "--threads", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = edge_runtime.load_bundle(bundle, threads=1).infer(x)
    assert [s["exit_index"] for s in doc["samples"]] == res.exit_index.tolist()
    assert [s["prediction"] for s in doc["samples"]] == res.predictions.tolist()
    assert [s["label"] for s in doc["samples"]] == [f"class_{p}" for p in res.predictions]
    ref = reference_exits(x, synthetic_weights(3, 8, 4))
    np.testing.assert_allclose([s["output"] for s in doc["samples"]],
                               [ref[e][j] for j, e in enumerate(res.exit_index)], atol=1e-5)


def test_run_full_mode_and_overrides(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(bundle), "--random", "4", "--mode", "full"]) == 0
    out = capsys.readouterr().out
    assert "batch of 4" in out and "samples per exit: [0, 0, 4]" in out
    assert main(["run", str(bundle), "--random", "4", "--policy", "never"]) == 0
    assert "samples per exit: [0, 0, 4]" in capsys.readouterr().out
    assert main(["run", str(bundle), "--random", "4", "--thresholds", "1e9"]) == 0  # entropy < 1e9: all at exit 0
    assert "samples per exit: [4, 0, 0]" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["run", "{bundle}", "--random", "2", "--thresholds", "0.1,x"], "--thresholds: expected numbers"),
    (["run", "{bundle}", "--random", "2", "--mode", "cbnet"], "cannot run mode 'cbnet'"),
    (["run", "{bundle}", "--input", "{missing}"], "input file not found"),
    (["inspect", "{missing}"], "bundle directory does not exist"),
])
def test_errors_are_one_line_and_exit_2(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        args: list[str], message: str) -> None:
    argv = [a.format(bundle=bundle, missing=tmp_path / "nope") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith(f"edge-runtime {argv[0]}: error:")


def test_tampered_bundle_fails_inspect(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    with (copy / "full_model.onnx").open("ab") as f:
        f.write(b"\0")
    assert main(["inspect", str(copy)]) == 2
    assert "full_model.files.0.sha256" in capsys.readouterr().err


def test_a_workstation_command_without_the_workstation_side(
        bundle: Path, device_python: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = device_python(f"""
        from edge_runtime.cli import main
        assert main(["inspect", {str(bundle)!r}]) == 0
        sys.exit(main(["convert", "recipe.yaml", "--out", "out"]))
    """)
    assert proc.returncode == 2, proc.stderr
    assert "modes: early_exit, full" in proc.stdout
    assert "edge-runtime convert: error: 'convert' needs the workstation side" in proc.stderr
    assert 'pip install "edge-runtime[convert]"' in proc.stderr
