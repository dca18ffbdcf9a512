"""A broken bundle or a bad input raises one project error naming the file/field; the CLI exits 2."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import BundleError, InputError


@pytest.fixture()
def bundle_copy(cnn_bundle, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(cnn_bundle, dst)
    return dst


def _edit(path: Path, fn) -> None:
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_missing_file(bundle_copy):
    (bundle_copy / "segments" / "segment_1.onnx").unlink()
    with pytest.raises(BundleError, match=r"segment_1\.onnx.*segments\.1\.files\.0.*missing"):
        edge_runtime.load_bundle(bundle_copy)


def test_sha256_mismatch(bundle_copy):
    p = bundle_copy / "segments" / "segment_0.onnx"
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"segment_0\.onnx.*segments\.0\.files\.0\.sha256.*mismatch"):
        edge_runtime.load_bundle(bundle_copy)


def test_unknown_format_version(bundle_copy):
    _edit(bundle_copy, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match=r"manifest\.json.*format_version.*unsupported bundle format version 99"):
        edge_runtime.load_bundle(bundle_copy)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "segments/../../x.onnx"])
def test_path_outside_bundle(bundle_copy, bad):
    _edit(bundle_copy, lambda m: m["segments"][0]["files"][0].update(path=bad))
    with pytest.raises(BundleError, match=r"segments\.0\.files\.0\.path.*outside the bundle"):
        edge_runtime.load_bundle(bundle_copy)


def test_symlink_escaping_bundle(bundle_copy, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_copy / "segments" / "segment_0.onnx", target)
    (bundle_copy / "segments" / "segment_0.onnx").unlink()
    (bundle_copy / "segments" / "segment_0.onnx").symlink_to(target)
    with pytest.raises(BundleError, match="outside the bundle"):
        edge_runtime.load_bundle(bundle_copy)


def test_malformed_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json.*not valid JSON"):
        edge_runtime.load_bundle(bundle_copy)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("segments"), "(top level)"),
        (lambda m: m["inputs"][0].update(dtype="complex64"), "inputs.0.dtype"),
        (lambda m: m["segments"][1]["files"][0].update(sha256="xyz"), "segments.1.files.0.sha256"),
        (lambda m: m["policy"].update(thresholds=[0.1]), "policy.thresholds"),
        (lambda m: m["exits"].pop(), "exits"),
        (lambda m: m.update(surprise=1), "(top level)"),
    ],
)
def test_malformed_manifest_names_field(bundle_copy, edit, field):
    _edit(bundle_copy, edit)
    with pytest.raises(BundleError) as info:
        edge_runtime.load_bundle(bundle_copy)
    assert info.value.field == field
    assert str(info.value).startswith(str(bundle_copy / "manifest.json"))


def test_missing_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        edge_runtime.load_bundle(tmp_path / "nope")


def test_corrupt_model_file_with_matching_hash_is_a_bundle_error(bundle_copy):
    """A garbage .onnx whose hash was updated still fails cleanly, not with an onnxruntime traceback."""
    from edge_runtime.files import sha256_file

    p = bundle_copy / "segments" / "segment_2.onnx"
    p.write_bytes(b"garbage")
    _edit(bundle_copy, lambda m: m["segments"][2]["files"][0].update(sha256=sha256_file(p)))
    with pytest.raises(BundleError, match=r"segment_2\.onnx.*onnxruntime could not load"):
        edge_runtime.load_bundle(bundle_copy)


@pytest.fixture(scope="module")
def rt(bundles):
    return edge_runtime.load_bundle(bundles["tiny_cnn"])


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((1, 16, 16), np.float32), r"rank 3.*expected rank 4, shape \(N, 1, 16, 16\)"),
        (np.zeros((2, 1, 16, 15), np.float32), r"does not match \(N, 1, 16, 16\) at axis 3"),
        (np.zeros((2, 1, 16, 16), np.float64), r"dtype is float64; expected float32"),
        (np.zeros((2, 1, 16, 16), np.int64), r"dtype is int64; expected float32"),
        (np.full((2, 1, 16, 16), np.nan, np.float32), r"NaN or Inf values in 2 sample"),
        (np.array([[[[np.inf] * 16] * 16]], np.float32), r"NaN or Inf"),
        (np.zeros((0, 1, 16, 16), np.float32), "empty"),
        ([[1.0]], "numpy array"),
    ],
)
def test_bad_inputs(rt, x, message):
    with pytest.raises(InputError, match=message):
        rt.infer(x)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], capture_output=True, text=True, timeout=120)


def test_cli_turns_errors_into_one_line_and_exit_2(bundle_copy, tmp_path):
    (bundle_copy / "segments" / "segment_1.onnx").unlink()
    proc = _cli("run", str(bundle_copy), "--random", "2")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_input_file(cnn_bundle, tmp_path):
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((2, 3), np.float32))
    proc = _cli("run", str(cnn_bundle), "--input", str(bad))
    assert proc.returncode == 2 and "rank 2" in proc.stderr and proc.stderr.count("\n") == 1
    garbage = tmp_path / "g.npy"
    garbage.write_bytes(b"nope")
    proc = _cli("run", str(cnn_bundle), "--input", str(garbage))
    assert proc.returncode == 2 and "not a readable .npy" in proc.stderr
