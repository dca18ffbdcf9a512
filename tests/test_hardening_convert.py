"""``convert`` as a clumsy operator runs it (issue 16, items 1, 3, 5, 7): ``--overwrite`` never deletes what is not a
bundle, odd ``--out`` paths and a failing checkpoint write are one-line errors (exit 2) that leave nothing behind,
exported bundles get user modes, and the exporter refuses ONNX external data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from _helpers import assert_user_modes

from edge_runtime.cli import main
from edge_runtime.errors import ExportError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "converters" / "recipes" / "tiny_cnn.yaml"


def _convert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["convert", str(TINY), "--no-progress", *args])
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("kind", ["project", "home", "file"])
def test_overwrite_never_deletes_what_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      kind: str) -> None:
    out = tmp_path / kind
    if kind == "file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / ("setup.py" if kind == "project" else ".profile")).write_text("keep me")
    rc, err = _convert(capsys, "--out", str(out), "--overwrite")
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("edge-runtime convert: error:") and "replaces only a bundle directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [kind]  # intact; no hidden .NAME.old-* copy
    assert (out.read_text() if kind == "file" else next(out.iterdir()).read_text()) == "keep me"


@pytest.mark.parametrize(("out", "message"), [
    ("{file}/bundle", "is not a directory"),
    ("/proc/edge-runtime-x/bundle", "cannot"),
    (".", "name the directory to write"),
])
def test_odd_out_paths_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str,
                                           message: str) -> None:
    (tmp_path / "file").write_text("x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc, err = _convert(capsys, "--out", out.format(file=tmp_path / "file"))
    finally:
        os.chdir(cwd)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failing_checkpoint_write_is_one_line_and_leaves_no_train_dir(tmp_path: Path) -> None:
    """Disk full while training (a file-size limit makes the checkpoint write fail with EFBIG): exit 2 with one line
    naming the checkpoint, and no empty ``<out>.train/`` or staging directory left."""
    recipe = {
        "name": "tiny_trained", "seed": 0,
        "data": {"name": "digits", "kwargs": {"size": 16}},
        "model": {"name": "tiny_cnn", "kwargs": {"widths": [8, 8, 16, 16]}},
        "train": {"threads": 1, "stages": [{"name": "s", "epochs": 1, "batch_size": 256, "lr": 0.01}]},
        "policy": {"name": "entropy", "thresholds": 0.5},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from edge_runtime.cli import main
        sys.exit(main(["convert", {str(tmp_path / "r.yaml")!r}, "--out", {str(tmp_path / "b")!r}, "--no-progress"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "EDGE_RUNTIME_CACHE": str(tmp_path / "cache")})
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "checkpoint.pt: cannot write the file (File too large)" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["r.yaml"]


def test_converted_bundles_have_user_modes(bundles: dict[str, Path]) -> None:
    for bundle in bundles.values():
        assert_user_modes(bundle)


def test_the_exporter_refuses_onnx_external_data(tmp_path: Path) -> None:
    import onnx
    import torch
    from onnx.external_data_helper import convert_model_to_external_data

    from converters.export.onnx import export_onnx, file_entry

    path = tmp_path / "g.onnx"
    export_onnx(torch.nn.Linear(4, 3), torch.randn(1, 4), path, input_names=["x"], output_names=["y"])
    assert file_entry(path, tmp_path)["sha256"]  # a graph with its weights inside is fine
    model = onnx.load(str(path))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="g.bin", size_threshold=0)
    onnx.save_model(model, str(path))
    with pytest.raises(ExportError, match=r"g\.onnx: the exported graph keeps 2 tensor\(s\) as ONNX external data"):
        file_entry(path, tmp_path)
