"""The checks ``run-device-tests`` drives from the host: the device tier on the board, the CLI smoke (profile, run,
serve), cross-architecture equality of every exit, and the wheel probe. What runs on the board itself is
``device_checks.py``."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aarch64_board import PIP_TARGET, REPO, Board, StepFailed, board_env, importable, run

CHECKS = Path(__file__).resolve().parent / "device_checks.py"
#: how a probed package is imported and which backend runs the probe bundle
PROBE_IMPORTS = {"onnxruntime": ("onnxruntime", "onnxruntime"), "ai-edge-litert": ("ai_edge_litert.interpreter",
                                                                                    "litert")}


@dataclass
class Outcome:
    """One check's verdict and what it saw."""

    name: str
    passed: bool
    detail: str
    seconds: float = 0.0


def checks_json(python: Path | str, args: Sequence[str | Path], env: dict[str, str],
                timeout: float = 900) -> dict[str, Any]:
    """Run ``device_checks.py ARGS`` with ``python`` (the host's or the board's) and return its JSON answer."""
    out = run([python, "-P", CHECKS, *args], env=env, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def host_env() -> dict[str, str]:
    """The host's checks import this tree's edge_runtime (the workstation side)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def device_tier_ini(setup_cfg: str) -> str:
    """The project's ``[tool:pytest]`` settings as a ``pytest.ini`` for the copied tier (no testpaths, no doctests:
    the tier's copy holds only ``tests/device``)."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(setup_cfg)
    section = dict(cfg["tool:pytest"]) if cfg.has_section("tool:pytest") else {}
    section.pop("testpaths", None)
    section["addopts"] = section.get("addopts", "").replace("--doctest-modules", "").strip()
    lines = ["[pytest]"]
    for k, v in section.items():
        lines.append(f"{k} = " + "\n    ".join(v.strip().splitlines()))
    return "\n".join(lines) + "\n"


def run_pytest(venv: Path, work: Path, board: Board, extra: Sequence[str]) -> tuple[int, str]:
    """``pytest tests/device`` on the board, from a copy of the tier (nothing of the source tree importable)."""
    src = REPO / "tests" / "device"
    if not src.is_dir():
        return 5, "tests/device is not in this tree"
    dest = work / "device-tier" / "tests" / "device"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "tests" / "conftest.py").is_file():  # the tier's shared fixtures (rng, ...) live one level up
        shutil.copy2(REPO / "tests" / "conftest.py", dest.parent / "conftest.py")
    (work / "device-tier" / "pytest.ini").write_text(device_tier_ini((REPO / "setup.cfg").read_text()))
    (work / "device-tier" / "conftest.py").write_text(GUARD)
    cmd = [venv / "bin/python", "-P", "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/device", *extra]
    proc = run(cmd, env=board_env(board), cwd=work / "device-tier", check=False, stream=True)
    summary = next((ln.strip("= \n") for ln in reversed(proc.stdout.splitlines()) if re.search(
        r"\d+ (passed|failed|error)|no tests ran", ln)), "no pytest summary")
    return proc.returncode, summary


#: the device tier's root conftest: refuse to run unless edge_runtime comes from the installed wheel
GUARD = '''"""Written by tools/aarch64/run-device-tests: the tier must import edge_runtime from the board's venv."""
import sys
from pathlib import Path

import edge_runtime


def pytest_report_header(config):
    return f"edge_runtime from {Path(edge_runtime.__file__).parent} (sys.prefix {sys.prefix})"


def pytest_sessionstart(session):
    if not Path(edge_runtime.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()):
        raise SystemExit(f"edge_runtime was imported from {edge_runtime.__file__}, not from the installed wheel")
'''


def smoke_profile(venv: Path, board_name: str, board: Board) -> list[Outcome]:
    """``profile list`` must show the wheel's profiles; ``profile detect`` must name the board (from the fake
    device-tree model) and warn about nothing installed."""
    cli = venv / "bin" / "edge-runtime"
    env = board_env(board)
    listing = run([cli, "profile", "list"], env=env, check=False)
    names = [ln.split()[0] for ln in listing.stdout.splitlines()[1:] if ln.strip()]
    out = [Outcome("profile list", listing.returncode == 0 and board_name in names,
                   f"profiles in the installed wheel: {', '.join(names) or '(none)'}")]
    det = run([cli, "profile", "detect"], env=env, check=False)
    ok = det.returncode == 0 and det.stdout.startswith(f"{board_name} (score") and "warning" not in det.stderr
    out.append(Outcome("profile detect", ok, (det.stdout.strip() + " " + det.stderr.strip()).strip()))
    return out


def smoke_run(venv: Path, board: Board, bundle: Path, x: Path, reference: dict[str, Any],
              tolerance: float) -> Outcome:
    """``edge-runtime run --input X --json`` on the board: the same exits, predictions and outputs as the host's."""
    import numpy as np

    res = run([venv / "bin/edge-runtime", "run", bundle, "--input", x, "--json", "--threads", "1"],
              env=board_env(board), check=False)
    if res.returncode != 0:
        return Outcome("run", False, f"exited with {res.returncode}: {(res.stdout + res.stderr)[-1500:]}")
    samples = json.loads(res.stdout)["samples"]
    same = ([s["exit_index"] for s in samples] == reference["exit_index"]
            and [s["prediction"] for s in samples] == reference["predictions"])
    diff = float(np.max(np.abs(np.asarray([s["output"] for s in samples]) - np.asarray(reference["outputs"]))))
    return Outcome("run", same and diff <= tolerance,
                   f"{len(samples)} samples, exits {[s['exit_index'] for s in samples]} "
                   f"{'==' if same else '!='} host's; max |output - host| {diff:.2e} (tolerance {tolerance:g})")


def _free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON) and return (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def smoke_serve(venv: Path, board: Board, bundle: Path, x: Path, reference: dict[str, Any], tolerance: float,
                work: Path, ready_s: float = 300) -> Outcome:
    """``edge-runtime serve`` on the board answering one KServe v2 request from the host over loopback."""
    import numpy as np

    port = _free_port()
    logf = work / "serve.log"
    with logf.open("w") as out:
        proc = subprocess.Popen([str(venv / "bin/edge-runtime"), "serve", f"syn={bundle}", "--port", str(port),
                                 "--threads", "1", "--max-wait-ms", "1"], env=board_env(board), stdout=out,
                                stderr=subprocess.STDOUT)
    url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                return Outcome("serve", False, f"daemon exited with {proc.returncode}: {logf.read_text()[-1500:]}")
            if time.monotonic() - t0 > ready_s:
                return Outcome("serve", False, f"not ready after {ready_s:.0f} s: {logf.read_text()[-1500:]}")
            try:
                if _http(f"{url}/v2/health/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        ready = time.monotonic() - t0
        arr = np.load(x)
        body = {"id": "aarch64-smoke", "inputs": [{"name": "input", "shape": list(arr.shape), "datatype": "FP32",
                                                   "data": arr.ravel().tolist()}]}
        status, doc = _http(f"{url}/v2/models/syn/infer", body)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    if status != 200:
        return Outcome("serve", False, f"HTTP {status}: {doc}")
    got = doc["samples"]
    same = ([s["exit_index"] for s in got] == reference["exit_index"]
            and [s["prediction"] for s in got] == reference["predictions"])
    diff = float(np.max(np.abs(np.asarray([s["output"] for s in got]) - np.asarray(reference["outputs"]))))
    return Outcome("serve", same and diff <= tolerance and rc == 0,
                   f"ready after {ready:.0f} s; POST /v2/models/syn/infer -> {status}, {len(got)} samples, exits "
                   f"{'==' if same else '!='} host's, max |output - host| {diff:.2e}; SIGTERM -> exit {rc}")


def compare_exits(board_npz: Path, host_npz: Path, tolerance: float) -> tuple[bool, list[float]]:
    """(every exit within ``tolerance``, the max absolute difference per exit) of two ``exit_<i>`` archives."""
    import numpy as np

    b, h = np.load(board_npz), np.load(host_npz)
    if sorted(b.files) != sorted(h.files):
        return False, []
    diffs = [float(np.max(np.abs(b[k].astype(np.float64) - h[k].astype(np.float64))))
             for k in sorted(b.files, key=lambda k: int(k.split("_")[1]))]
    return all(d <= tolerance for d in diffs), diffs


def host_bundles(work: Path) -> tuple[dict[str, Path], list[str]]:
    """Bundles built on the host: the synthetic one always; the tiny CNN with TFLite files and the tiny transformer
    when the host has the workstation side (converters, torch, litert-torch)."""
    env = host_env()
    out = {"synthetic": Path(checks_json(sys.executable, ["synthetic", work / "bundles/synthetic"], env)["bundle"])}
    notes = []
    if not (importable("torch") and importable("converters")):
        return out, ["the host has no workstation side (torch/converters): only the synthetic bundle"]
    import yaml

    recipes = {"tiny_cnn": {"backends": ["onnx", "tflite"], "tflite_batch_sizes": [4]}, "tiny_transformer": {}}
    if not importable("litert_torch"):
        recipes["tiny_cnn"] = {}
        notes.append("the host has no litert-torch: no TFLite files, LiteRT is not compared")
    for name, export in recipes.items():
        recipe = yaml.safe_load((REPO / "converters/recipes" / f"{name}.yaml").read_text())
        recipe.setdefault("export", {}).update(export)
        path = work / "recipes" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        run([sys.executable, "-m", "edge_runtime", "convert", path, "--out", work / "bundles" / name], env=env,
            timeout=900)
        out[name] = work / "bundles" / name
    return out, notes


def cross_arch(venv: Path, board: Board, bundles: dict[str, Path], work: Path) -> list[Outcome]:
    """Every exit output on the board vs on the host, per bundle and backend, within the bundle's tolerance."""
    outcomes = []
    for name, bundle in bundles.items():
        x = work / "inputs" / f"{name}.npy"
        x.parent.mkdir(exist_ok=True)
        made = checks_json(sys.executable, ["batch", bundle, "--out", x], host_env())
        shape = "x".join(str(d) for d in made["shape"])
        backends = ["onnxruntime"] + (["litert"] if any(bundle.glob("segments/*.tflite")) else [])
        for backend in backends:
            t0 = time.monotonic()
            host_npz, board_npz = work / f"host-{name}-{backend}.npz", work / f"board-{name}-{backend}.npz"
            h = checks_json(sys.executable, ["exits", bundle, "--input", x, "--backend", backend, "--out", host_npz],
                            host_env())
            try:
                checks_json(venv / "bin/python", ["exits", bundle, "--input", x, "--backend", backend,
                                                  "--out", board_npz], board_env(board))
            except StepFailed as exc:
                outcomes.append(Outcome(f"equal {name}/{backend}", False, str(exc)[-1500:]))
                continue
            ok, diffs = compare_exits(board_npz, host_npz, h["tolerance"])
            per_exit = ", ".join(f"exit {i}: {d:.2e}" for i, d in enumerate(diffs))
            outcomes.append(Outcome(f"equal {name}/{backend}", ok, f"max |board - host| per exit: {per_exit} "
                                    f"(tolerance {h['tolerance']:g}, batch {shape})",
                                    time.monotonic() - t0))
    return outcomes


def probe_wheels(cache: Path, venv: Path, board_name: str, board: Board, wheels: dict[str, Any],
                 bundles: dict[str, Path]) -> list[Outcome]:
    """Install each version the profile lists on the board (shadowing the venv's own) and check its verdict."""
    outcomes = []
    for package, known in wheels.items():
        if package not in PROBE_IMPORTS:
            outcomes.append(Outcome(f"probe {package}", False, f"no probe for {package}; known: {list(PROBE_IMPORTS)}"))
            continue
        module, backend = PROBE_IMPORTS[package]
        bundle = bundles["synthetic"] if backend == "onnxruntime" else next(
            (b for b in bundles.values() if any(b.glob("segments/*.tflite"))), None)
        for verdict in ("good", "bad"):
            for version in (known.get(verdict) or {}):
                t0 = time.monotonic()
                target = cache / "probe" / f"{package}-{version}"
                if not (target / ".complete").is_file():
                    shutil.rmtree(target, ignore_errors=True)
                    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *PIP_TARGET,
                         f"{package}=={version}"])
                    (target / ".complete").touch()
                env = {**board_env(board), "PYTHONPATH": str(target)}
                py = venv / "bin/python"
                if verdict == "good" and bundle is not None:
                    res = run([py, "-P", CHECKS, "probe", bundle, "--backend", backend], env=env, check=False)
                    got = json.loads(res.stdout.splitlines()[-1]) if res.returncode == 0 else {}
                    ok = got.get("versions", {}).get(package) == version
                    detail = (f"imports and runs a bundle on {board.qemu_cpu}" if ok else
                              f"failed (exit {res.returncode}): {(res.stdout + res.stderr)[-800:]}")
                elif verdict == "good":  # no bundle for this backend (a host without litert-torch): import only
                    res = run([py, "-c", f"import {module}"], env=env, check=False)
                    ok = res.returncode == 0
                    detail = (f"imports on {board.qemu_cpu} (no bundle for {backend} on this host to run)" if ok
                              else f"import failed (exit {res.returncode}): {(res.stdout + res.stderr)[-800:]}")
                else:
                    res = run([py, "-c", f"import {module}"], env=env, check=False)
                    det = run([py, "-m", "edge_runtime", "profile", "detect"], env=env, check=False)
                    died = res.returncode < 0  # killed by a signal (SIGILL as reported), not an ImportError
                    warned = det.returncode == 0 and f"{package} {version} is known bad on {board_name}" in det.stderr
                    ok = died and warned
                    detail = (f"import {module} -> exit {res.returncode} "
                              f"({_signal_name(res.returncode)}); profile detect warns: {warned}")
                outcomes.append(Outcome(f"probe {package} {version} ({verdict})", ok, detail,
                                        time.monotonic() - t0))
    return outcomes


def _signal_name(rc: int) -> str:
    # the wrapper execs qemu, which re-raises the guest's signal: a negative code, or 128+N through a shell
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    try:
        return signal.Signals(sig).name if sig else "no signal"
    except ValueError:
        return f"signal {sig}"
