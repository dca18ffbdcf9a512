"""Writing outputs as a clumsy operator would ask for them (issue 16, items 3, 5 and 7): ``--overwrite`` replaces only
a bundle this project wrote and leaves no old copy behind; odd or unwritable output paths and a full disk are
one-line errors that leave nothing behind; bundles get the modes a service account can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError, OutputError
from edge_runtime.files import check_output_dir, replace_dir, staging_dir, write_bytes_atomic
from edge_runtime.synthetic import write_synthetic_bundle

REPO = Path(__file__).resolve().parents[2]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("what", ["home", "project", "file", "foreign_manifest", "symlink"])
def test_overwrite_refuses_anything_but_a_bundle(tmp_path: Path, what: str) -> None:
    out = tmp_path / "out"
    if what in ("home", "project", "foreign_manifest"):
        out.mkdir()
        (out / ".bashrc" if what == "home" else out / "setup.py").write_text("keep me")
        if what == "foreign_manifest":
            (out / "manifest.json").write_text('{"name": "some other tool"}')
    elif what == "file":
        out.write_text("keep me")
    else:
        real = write_synthetic_bundle(tmp_path / "real")
        out.symlink_to(real)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="replaces only a bundle directory this project wrote") as info:
        write_synthetic_bundle(out, overwrite=True)
    assert "\n" not in str(info.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing touched or left


def test_overwrite_replaces_a_bundle_and_leaves_no_old_copy(tmp_path: Path) -> None:
    out = write_synthetic_bundle(tmp_path / "b", seed=0)
    first = (out / "segments" / "segment_0.onnx").read_bytes()
    write_synthetic_bundle(out, seed=1, overwrite=True)
    assert (out / "segments" / "segment_0.onnx").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no .b.old-*, no .b.staging-*


def test_replace_dir_refuses_before_moving_anything(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    with staging_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("new")
        with pytest.raises(ConfigError, match="replaces only a bundle"):
            replace_dir(tmp, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("out", "error", "message"), [
    (".", ConfigError, "name the directory to write"),
    ("..", ConfigError, "name the directory to write"),
    ("{file}/bundle", OutputError, "is not a directory"),
    ("{file}/deeper/bundle", OutputError, "is not a directory"),
    ("/proc/edge-runtime-x/bundle", OutputError, "cannot create"),
])
def test_odd_output_paths_are_one_line_errors(tmp_path: Path, out: str, error: type, message: str) -> None:
    (tmp_path / "file").write_text("a regular file")
    target = out.format(file=tmp_path / "file")
    with pytest.raises(error, match=message) as info:
        write_synthetic_bundle(target)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_check_output_dir_says_it_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(ConfigError, match="output exists"):
        check_output_dir(tmp_path / "exists")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check, not a mkdir


def test_a_failed_write_leaves_no_temporary_file_and_no_new_directory(tmp_path: Path) -> None:
    """Disk full, simulated with a file-size limit (the write fails with EFBIG): a one-line OutputError naming the
    file, and neither the temporary file nor the directories created for it are left."""
    target = tmp_path / "new" / "deeper" / "checkpoint.pt"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from edge_runtime.errors import OutputError
        from edge_runtime.files import write_bytes_atomic
        try:
            write_bytes_atomic({str(target)!r}, b"x" * 4096)
        except OutputError as exc:
            print(exc)
            sys.exit(0)
        sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().startswith(f"{target}: cannot write the file (File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_write_into_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        write_bytes_atomic(tmp_path / "f" / "x.json", b"{}")


def _assert_user_modes(root: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    if umask & 0o044:
        pytest.skip(f"umask {umask:04o} hides files from group/other anyway")
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        want = (0o777 if p.is_dir() else 0o666) & ~umask
        assert mode == want, f"{p}: mode {mode:04o}, expected {want:04o}"


def test_bundles_are_written_with_the_modes_a_user_expects(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    _assert_user_modes(make_bundle(num_exits=3))
    _assert_user_modes(write_synthetic_bundle(tmp_path / "again"))
    _assert_user_modes(write_synthetic_bundle(tmp_path / "again", seed=3, overwrite=True))

