"""Install as a user does on the board: the built wheel, non-editable, in a fresh venv, run from outside the tree.

The wheel must carry every data file the device side reads (device profiles, schemas): a source checkout finds
them in the tree, an installed wheel only in itself. Slow tier: builds a wheel and a venv (about 30 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _aarch64_tool import tool_module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tool_module("aarch64_board").build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (its dependencies come from this environment's site-packages)."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", root], check=True, timeout=300)
    subprocess.run([root / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--force-reinstall", wheel], check=True, timeout=300)
    return root


@pytest.mark.slow
def test_the_wheel_carries_every_profile_and_schema(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for f in sorted((REPO / "device_profiles").glob("*.yaml")):
            assert z.read(f"edge_runtime/device_profiles/{f.name}") == f.read_bytes()
    for f in sorted((REPO / "edge_runtime" / "schemas").glob("*.json")):
        assert f"edge_runtime/schemas/{f.name}" in names
    assert tool_module("aarch64_board").check_wheel(wheel, "rpi4")["profiles"] == sorted(
        f.stem for f in (REPO / "device_profiles").glob("*.yaml"))


def _cli(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([venv / "bin" / "edge-runtime", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_profile_list_show_detect_and_run_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run([venv / "bin" / "python", "-c", "import edge_runtime, edge_runtime.profiles as p; "
                            "print(edge_runtime.__file__); print(p.BUILTIN_DIR)"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(where[0]).is_relative_to(site), where  # the wheel, not the source tree
    assert Path(where[1]) == site / "edge_runtime" / "device_profiles"

    listed = _cli(venv, "profile", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = sorted(line.split()[0] for line in listed.stdout.splitlines()[1:])
    assert names == sorted(f.stem for f in (REPO / "device_profiles").glob("*.yaml"))
    shown = _cli(venv, "profile", "show", "rpi4", "--json", cwd=tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["wheels"]["onnxruntime"]["bad"]
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    detected = _cli(venv, "profile", "detect", "--device-tree-model", str(model), cwd=tmp_path)
    assert detected.stdout.startswith("rpi4 (score 4)"), detected.stdout + detected.stderr

    subprocess.run([venv / "bin" / "python", "-c", "import sys; from edge_runtime.synthetic import "
                    "write_synthetic_bundle as w; w(sys.argv[1])", tmp_path / "b"], check=True, timeout=120)
    ran = _cli(venv, "run", str(tmp_path / "b"), "--random", "4", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert len(json.loads(ran.stdout)["samples"]) == 4
