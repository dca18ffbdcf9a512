"""Profiles that know their boards' wheels: the ``wheels`` section (validation), ``wheel_warnings``, the warning of
``profile detect`` read from real package metadata, and setup.cfg keeping pip off every known-bad version."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edge_runtime.errors import ConfigError
from edge_runtime.profiles import PROFILES, WheelVersions, get_profile, profile_from_dict, wheel_warnings

REPO = Path(__file__).resolve().parents[1]


def _minimal(**over):
    data = {"name": "x", "cpu": {"cores": 2, "type": "t", "arch": "a"}, "preferred": {"threads": 2},
            "power": {"idle_w": {"value": 1.0, "source": "s"}, "active_w": {"value": 3.0, "source": "s"}}}
    data.update(over)
    return data


def test_wheels_section_is_parsed():
    prof = profile_from_dict(_minimal(wheels={"onnxruntime": {"bad": {"1.21.0": "SIGILL, issue 1"},
                                                              "good": {"1.21.1": "probed"}}}))
    assert prof.wheels == {"onnxruntime": WheelVersions(good={"1.21.1": "probed"}, bad={"1.21.0": "SIGILL, issue 1"})}
    assert profile_from_dict(_minimal()).wheels == {}


@pytest.mark.parametrize("wheels,message", [
    (["onnxruntime"], r"x\.wheels: expected \{PACKAGE: \{good:"),
    ({"onnxruntime": {"broken": {"1.0.0": "s"}}}, r"x\.wheels\.onnxruntime: expected good: and/or bad:"),
    ({"onnxruntime": {}}, r"x\.wheels\.onnxruntime: expected good: and/or bad:"),
    ({"onnxruntime": {"bad": {1.21: "unquoted in YAML, a float"}}}, r"x\.wheels\.onnxruntime\.bad: expected quoted"),
    ({"onnxruntime": {"bad": ["1.21.0"]}}, r"x\.wheels\.onnxruntime\.bad: expected quoted"),
    ({"onnxruntime": {"good": {"1.21.1": " "}}}, r"x\.wheels\.onnxruntime\.good\.1\.21\.1: say how it is known"),
    ({"onnxruntime": {"good": {"1.0.0": "a"}, "bad": {"1.0.0": "b"}}}, r"\['1\.0\.0'\] listed as both good and bad"),
])
def test_wheels_section_errors_name_the_key(wheels, message):
    with pytest.raises(ConfigError, match=message):
        profile_from_dict(_minimal(wheels=wheels), where="x")


def test_wheel_warnings_name_the_bad_version_the_reason_and_the_good_ones():
    rpi4 = get_profile("rpi4")
    (line,) = wheel_warnings(rpi4, {"onnxruntime": "1.21.0", "ai-edge-litert": "2.3.0"})
    assert line.startswith("onnxruntime 1.21.0 is known bad on rpi4: 'import onnxruntime' dies with Illegal "
                           "instruction (SIGILL)")
    assert "issues/23957" in line and "issues/24112" in line
    assert line.endswith(f"(known good: {', '.join(rpi4.wheels['onnxruntime'].good)})")
    assert wheel_warnings(rpi4, {"onnxruntime": "1.21.0+cpu"})  # a local version label is the same release
    assert wheel_warnings(rpi4, {"onnxruntime": "1.21.1"}) == []
    assert wheel_warnings(rpi4, {"onnxruntime": None}) == []  # not installed
    assert wheel_warnings(rpi4, {}) == []
    # the same wheel on a board whose core has the instructions: no warning
    assert wheel_warnings(get_profile("rpi5"), {"onnxruntime": "1.21.0"}) == []
    assert wheel_warnings(get_profile("generic_x86_64"), {"onnxruntime": "1.21.0"}) == []


def _fake_installed(root: Path, dist: str, version: str) -> None:
    """Package metadata as pip leaves it (``NAME-VERSION.dist-info/METADATA``): what ``profile detect`` reads."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


@pytest.mark.parametrize("version,warned", [("1.21.0", True), ("1.21.1", False)])
def test_profile_detect_warns_on_an_installed_bad_wheel(tmp_path, version, warned):
    site = tmp_path / "site"
    _fake_installed(site, "onnxruntime", version)
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    code = ("import sys, importlib.metadata as m; print(m.version('onnxruntime'), file=sys.stderr); "
            "from edge_runtime.cli import main; rc = main(['profile', 'detect', '--device-tree-model', sys.argv[1]]); "
            "assert 'onnxruntime' not in sys.modules, 'detect imported the backend'; sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code, str(model)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("rpi4 (score 4): device_tree_model contains 'Raspberry Pi 4'")
    assert res.stderr.splitlines()[0] == version  # the metadata the command saw is the fake one
    assert ("warning: onnxruntime 1.21.0 is known bad on rpi4" in res.stderr) is warned


def _requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    return [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()
            and not ln.strip().startswith("edge-runtime")]


@pytest.mark.parametrize("name", [n for n in PROFILES.names() if get_profile(n).cpu.arch == "aarch64"])
def test_setup_cfg_keeps_pip_off_every_known_bad_wheel(name):
    reqs = _requirements()
    for package, known in get_profile(name).wheels.items():
        mine = [r for r in reqs if r.name == package]
        assert mine, f"{name} lists wheels of {package}, which setup.cfg does not require"
        for version in known.bad:
            aarch64 = [r for r in mine if r.marker is None or r.marker.evaluate({"platform_machine": "aarch64"})]
            assert all(not r.specifier.contains(version, prereleases=True) for r in aarch64), \
                f"setup.cfg lets pip install {package} {version}, known bad on {name}"
        # a version good here may be refused for another board of the same architecture, but never all of them
        assert not known.good or any(r.specifier.contains(v) for r in mine for v in known.good), \
            f"setup.cfg refuses every {package} version known good on {name}"
