"""The parts of ``tools/aarch64/run-device-tests`` that run without emulation: its tool check (what CI's skip
message says), the emulated board's files (read back by ``detect_profile``), its boards vs the profiles, the
pytest settings of the copied device tier, and the exit comparison."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _aarch64_tool import TOOL, tool_module

from edge_runtime.profiles import PROFILES, detect_profile, get_profile

REPO = Path(__file__).resolve().parents[1]


def test_check_tools_names_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    res = subprocess.run([TOOL, "--check-tools"], env={**os.environ, "PATH": str(bin_dir)}, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "qemu-aarch64-static (apt-get install qemu-user-static)" in res.stderr
    assert "dpkg-deb (apt-get install dpkg)" in res.stderr


@pytest.mark.parametrize("board", sorted(tool_module("aarch64_board").BOARDS))
def test_the_emulated_board_is_detected_as_its_profile(board: str, tmp_path: Path) -> None:
    tool, prof = tool_module("aarch64_board"), get_profile(board)
    tool.dress_board(tmp_path, tool.BOARDS[board], prof.cpu.cores)
    found = detect_profile({"device_tree_model": tmp_path / "proc/device-tree/model",
                            "cpuinfo": tmp_path / "proc/cpuinfo", "tegra_release": tmp_path / "none"},
                           machine="aarch64")
    assert found.name == board
    cpuinfo = (tmp_path / "proc/cpuinfo").read_text()
    assert cpuinfo.count("processor\t:") == prof.cpu.cores
    assert f"CPU part\t: {tool.BOARDS[board].cpu_part}" in cpuinfo


def test_every_board_is_an_aarch64_profile_with_its_core() -> None:
    boards = tool_module("aarch64_board").BOARDS
    for name, board in boards.items():
        prof = get_profile(name)
        assert prof.cpu.arch == "aarch64" and board.qemu_cpu == prof.cpu.type.lower(), name
    # every package a profile lists wheels for can be probed
    listed = {pkg for n in PROFILES.names() for pkg in get_profile(n).wheels}
    assert listed <= set(tool_module("aarch64_checks").PROBE_IMPORTS)


def test_device_tier_ini_keeps_the_project_settings_without_testpaths() -> None:
    setup_cfg = (REPO / "setup.cfg").read_text()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(tool_module("aarch64_checks").device_tier_ini(setup_cfg))
    project = configparser.ConfigParser(interpolation=None)
    project.read_string(setup_cfg)
    assert "testpaths" not in ini["pytest"] and "--doctest-modules" not in ini["pytest"]["addopts"]
    assert ini["pytest"]["markers"].split() == project["tool:pytest"]["markers"].split()


def test_compare_exits_reports_the_max_difference_per_exit(tmp_path: Path) -> None:
    a = {"exit_0": np.zeros((2, 3), np.float32), "exit_1": np.ones((2, 3), np.float32)}
    b = {"exit_0": np.full((2, 3), 1e-6, np.float32), "exit_1": np.ones((2, 3), np.float32) + 1e-3}
    np.savez(tmp_path / "a.npz", **a)
    np.savez(tmp_path / "b.npz", **b)
    ok, diffs = tool_module("aarch64_checks").compare_exits(tmp_path / "a.npz", tmp_path / "b.npz", 1e-4)
    assert not ok and diffs == pytest.approx([1e-6, 1e-3], rel=1e-3)
    ok, _ = tool_module("aarch64_checks").compare_exits(tmp_path / "a.npz", tmp_path / "b.npz", 1e-2)
    assert ok
