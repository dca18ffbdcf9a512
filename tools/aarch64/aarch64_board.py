"""The emulated board for ``run-device-tests``: a Debian bookworm arm64 sysroot run by qemu user-mode emulation,
the project's wheel, the aarch64 wheelhouse and the board's venv — each cached under ``$EDGE_RUNTIME_CACHE/aarch64``.

Host side: the standard library only (and PyYAML for the profiles). The board's venv ``bin/python`` is a shell
wrapper that execs qemu with the board's CPU, so the venv's console scripts and every
``subprocess.run([sys.executable, ...])`` inside it run emulated without binfmt_misc.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: bump to rebuild every cache entry written by an older version of this script
SCRIPT_VERSION = "1"
QEMU = "qemu-aarch64-static"
#: the board's OS: Raspberry Pi OS (64-bit) is Debian bookworm; its Python is 3.11.2
DEBIAN_SOURCES = (("http://deb.debian.org/debian", "bookworm bookworm-updates"),
                  ("http://deb.debian.org/debian-security", "bookworm-security"))
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SYSROOT_PACKAGES = ("python3.11", "python3.11-venv", "libstdc++6")
PYTHON = "python3.11"
#: the extras a device installs (never convert/bench/tflite/dev: those are the workstation's)
DEVICE_EXTRAS = ("serve", "litert", "sensors")
#: what the device tier needs besides the package (the dev extra would bring torch)
TEST_REQUIREMENTS = ("pytest>=7", "httpx>=0.27")
#: what pip on the board accepts: CPython 3.11, glibc 2.36 (bookworm)
PIP_TARGET = ("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
              "--abi", "abi3", "--abi", "none", "--platform", "manylinux2014_aarch64",
              *[a for v in range(17, 37) for a in ("--platform", f"manylinux_2_{v}_aarch64")])
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Board:
    """What the emulated board looks like: qemu's CPU model and the files ``profile detect`` reads."""

    qemu_cpu: str
    cpu_part: str
    features: str
    model: str
    hardware: str = ""


ARMV80 = "fp asimd evtstrm crc32 cpuid"
#: boards this script can emulate (profile name -> board); the profile supplies cores, detect rules and wheels
BOARDS = {
    "rpi4": Board("cortex-a72", "0xd08", ARMV80, "Raspberry Pi 4 Model B Rev 1.5", "BCM2835"),
    "rpi5": Board("cortex-a76", "0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                  "asimdrdm lrcpc dcpop asimddp", "Raspberry Pi 5 Model B Rev 1.0", "BCM2835"),
    "jetson_nano": Board("cortex-a57", "0xd07", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid",
                         "NVIDIA Jetson Nano Developer Kit"),
}


def log(msg: str) -> None:
    """One progress line."""
    print(f"[aarch64] {msg}", flush=True)


def cache_root() -> Path:
    """``$EDGE_RUNTIME_CACHE/aarch64`` (default ``$XDG_CACHE_HOME/edge-runtime`` or ``~/.cache/edge-runtime``)."""
    base = os.environ.get("EDGE_RUNTIME_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-runtime")
    return Path(base) / "aarch64"


def key_of(*parts: Any) -> str:
    """A cache entry's name: a hash of what it is built from (and of this script's version)."""
    return hashlib.sha256(json.dumps([SCRIPT_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:12]


def run(cmd: Sequence[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = TIMEOUT_S, check: bool = True, stream: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command; ``stream`` echoes its output live (and still returns it)."""
    cmd = [str(c) for c in cmd]
    if not stream:
        proc = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True)
    else:
        lines: list[str] = []
        with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as p:
            assert p.stdout is not None
            for line in p.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            p.wait(timeout=timeout)
        proc = subprocess.CompletedProcess(cmd, p.returncode, "".join(lines), "")
    if check and proc.returncode != 0:
        raise StepFailed(f"{' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''} exited with {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


class StepFailed(RuntimeError):
    """A step could not be done; the message says what ran and what it printed."""


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished cache entry into place (an existing one, from a concurrent run, wins)."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def missing_tools() -> list[str]:
    """What this machine lacks to run the emulated board (empty: all there)."""
    lacks = [f"{tool} (apt-get install {pkg})" for tool, pkg in
             ((QEMU, "qemu-user-static"), ("apt-get", "apt"), ("dpkg-deb", "dpkg")) if shutil.which(tool) is None]
    if not DEBIAN_KEYRING.is_file():
        lacks.append(f"{DEBIAN_KEYRING} (apt-get install debian-archive-keyring)")
    return lacks


def load_profile(board: str) -> dict[str, Any]:
    """The board's profile as written in ``device_profiles/`` (plain data: cores, detect rules, wheels)."""
    import yaml

    path = REPO / "device_profiles" / f"{board}.yaml"
    if not path.is_file():
        raise StepFailed(f"no device profile {path}")
    return yaml.safe_load(path.read_text())


def apt_config(root: Path) -> Path:
    """A private apt configuration for Debian bookworm arm64 under ``root`` (the host's apt is left alone)."""
    for d in ("etc/apt.conf.d", "etc/preferences.d", "etc/sources.list.d", "state/lists/partial",
              "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "state/status").touch()
    (root / "etc/sources.list.d/bookworm.sources").write_text("\n".join(
        f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\nArchitectures: arm64\n"
        f"Signed-By: {DEBIAN_KEYRING}\n" for uri, suites in DEBIAN_SOURCES))
    conf = root / "apt.conf"
    sandbox = 'APT::Sandbox::User "root";\n' if os.geteuid() == 0 else ""
    conf.write_text(f'Dir::Etc "{root}/etc";\nDir::Etc::sourcelist "/dev/null";\n'
                    f'Dir::Etc::sourceparts "{root}/etc/sources.list.d";\nDir::Etc::parts "{root}/etc/apt.conf.d";\n'
                    f'Dir::Etc::preferencesparts "{root}/etc/preferences.d";\nDir::State "{root}/state";\n'
                    f'Dir::State::status "{root}/state/status";\nDir::Cache "{root}/cache";\n'
                    'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\nDebug::NoLocking "true";\n'
                    f'Acquire::Languages "none";\n{sandbox}')
    return conf


def build_sysroot(cache: Path) -> tuple[Path, dict[str, str]]:
    """The unpacked arm64 Debian packages (cached); returns the sysroot and {package: version}."""
    final = cache / f"sysroot-{key_of(SYSROOT_PACKAGES, DEBIAN_SOURCES)}"
    if (final / ".complete").is_file():
        return final, json.loads((final / ".complete").read_text())
    env = {**os.environ, "APT_CONFIG": str(apt_config(cache / "apt"))}
    run(["apt-get", "update", "-qq"], env=env)
    sim = run(["apt-get", "-s", "install", "--no-install-recommends", *SYSROOT_PACKAGES], env=env).stdout
    packages = dict(re.findall(r"^Inst (\S+) \((\S+)", sim, re.M))
    if PYTHON not in packages:
        raise StepFailed(f"apt could not resolve {PYTHON} for arm64:\n{sim[-2000:]}")
    debs = Path(tempfile.mkdtemp(prefix="debs-", dir=cache))
    tmp = Path(tempfile.mkdtemp(prefix="sysroot-", dir=cache))
    try:
        run(["apt-get", "download", "-qq", *packages], env=env, cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            run(["dpkg-deb", "-x", deb, tmp])
    finally:
        shutil.rmtree(debs, ignore_errors=True)
    (tmp / ".complete").write_text(json.dumps(packages, indent=1))
    log(f"sysroot: {len(packages)} Debian bookworm arm64 packages ({PYTHON} {packages[PYTHON]})")
    return publish(tmp, final), packages


def dress_board(sysroot: Path, board: Board, cores: int) -> None:
    """Write the board's ``/proc/cpuinfo`` and ``/proc/device-tree/model`` into the sysroot."""
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {board.features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {board.cpu_part}\nCPU revision\t: 3\n"
              for i in range(cores)]
    tail = f"Hardware\t: {board.hardware}\n" if board.hardware else ""
    (sysroot / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (sysroot / "proc/cpuinfo").write_text("\n".join(blocks) + f"\n{tail}Model\t\t: {board.model}\n")
    (sysroot / "proc/device-tree/model").write_bytes(board.model.encode() + b"\0")


def source_files() -> list[str]:
    """The tree's files a build may see: tracked and untracked-but-not-ignored (never build/, *.egg-info)."""
    try:
        out = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        return [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (StepFailed, FileNotFoundError):
        skip = {".git", "build", "dist", "__pycache__", ".pytest_cache"}
        return [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                and not skip.intersection(p.relative_to(REPO).parts) and ".egg-info" not in str(p)]


def build_wheel(work: Path) -> Path:
    """``pip wheel`` of a clean copy of the tree (stale build/ output cannot leak into it)."""
    src = work / "src"
    for f in source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    # the host's setuptools when it has one (no download); else pip fetches the build requirements
    no_iso = ["--no-build-isolation"] if all(importable(m) for m in ("setuptools", "wheel")) else []
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_iso, "-w", work / "dist", src])
    wheels = sorted((work / "dist").glob("edge_runtime-*.whl"))
    if len(wheels) != 1:
        raise StepFailed(f"pip wheel made {len(wheels)} edge_runtime wheels in {work / 'dist'}")
    return wheels[0]


def importable(module: str) -> bool:
    """Whether the host's Python can import ``module`` (without importing it)."""
    return importlib.util.find_spec(module) is not None


def check_wheel(wheel: Path, board: str) -> dict[str, Any]:
    """The wheel must carry every data file the device side reads; returns its requirements per extra."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    profiles = sorted(n for n in names if n.startswith("edge_runtime/device_profiles/"))
    wanted = {f"edge_runtime/device_profiles/{board}.yaml", "edge_runtime/schemas/manifest.schema.json",
              "edge_runtime/schemas/bench_results.schema.json"}
    absent = sorted(wanted - names)
    if absent:
        raise StepFailed(f"{wheel.name} lacks {absent}: a device installing it could not read them")
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    return {"profiles": [Path(p).stem for p in profiles], "requires": requires}


def build_wheelhouse(cache: Path, wheel: Path, requires: list[str]) -> Path:
    """The aarch64 wheels of the device requirements (cached per requirement set)."""
    device = [r for r in requires if "extra ==" not in r or any(f'extra == "{e}"' in r for e in DEVICE_EXTRAS)]
    final = cache / f"wheelhouse-{key_of(device, TEST_REQUIREMENTS, PIP_TARGET)}"
    if (final / ".complete").is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=cache))
    run([sys.executable, "-m", "pip", "download", "-q", "--dest", tmp, *PIP_TARGET,
         f"{wheel}[{','.join(DEVICE_EXTRAS)}]", *TEST_REQUIREMENTS])
    for own in tmp.glob("edge_runtime-*.whl"):
        own.unlink()
    (tmp / ".complete").write_text("\n".join(sorted(p.name for p in tmp.glob("*.whl"))))
    log(f"wheelhouse: {len(list(tmp.glob('*.whl')))} aarch64 wheels")
    return publish(tmp, final)


WRAPPER = """#!/bin/sh
# CPython {version} for aarch64 (Debian bookworm) run by qemu user-mode emulation; written by
# tools/aarch64/run-device-tests. Console scripts and sys.executable re-execs come through here.
export QEMU_LD_PREFIX="{sysroot}"
export QEMU_CPU="${{QEMU_CPU:-{cpu}}}"
exec "{qemu}" -0 "$0" "{binary}" "$@"
"""


def board_env(board: Board) -> dict[str, str]:
    """The environment a command on the board gets: the board's CPU, none of the host's Python settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV"))}
    env.update(QEMU_CPU=board.qemu_cpu, PYTHONDONTWRITEBYTECODE="1")
    return env


def build_venv(cache: Path, sysroot: Path, wheelhouse: Path, wheel: Path, board: Board) -> tuple[Path, bool]:
    """``python3.11 -m venv`` on the board, pip from Debian's ensurepip, then the user's install command (the
    dependencies stay cached with the venv); returns (venv, whether it was built now)."""
    final = cache / f"venv-{key_of(sysroot.name, wheelhouse.name)}"
    if (final / ".complete").is_file():
        return final, False
    qemu = shutil.which(QEMU)
    assert qemu is not None
    shutil.rmtree(final, ignore_errors=True)  # the venv's paths are absolute: it is built in place
    env = {**board_env(board), "QEMU_LD_PREFIX": str(sysroot)}
    run([qemu, sysroot / "usr/bin" / PYTHON, "-m", "venv", "--copies", "--without-pip", final], env=env)
    binary = final / "bin" / f".{PYTHON}-aarch64"
    (final / "bin" / PYTHON).rename(binary)
    for name in ("python", "python3"):
        (final / "bin" / name).unlink()
        (final / "bin" / name).symlink_to(PYTHON)
    (final / "bin" / PYTHON).write_text(WRAPPER.format(version=PYTHON, sysroot=sysroot, cpu=board.qemu_cpu,
                                                       qemu=qemu, binary=binary))
    (final / "bin" / PYTHON).chmod(0o755)
    run([final / "bin" / "python", "-m", "ensurepip", "--default-pip"], env=board_env(board))
    run(install_command(final, wheel, wheelhouse), env=board_env(board))
    (final / ".complete").write_text(key_of(sysroot.name, wheelhouse.name))
    return final, True


def install_command(venv: Path, wheel: Path, wheelhouse: Path) -> list[str]:
    """The user's command on the board: ``pip install --no-index --find-links WHEELHOUSE 'WHEEL[extras]'``."""
    return [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
            str(wheelhouse), f"{wheel}[{','.join(DEVICE_EXTRAS)}]", *TEST_REQUIREMENTS]


def reinstall_wheel(venv: Path, wheel: Path, board: Board) -> None:
    """This run's wheel into a cached venv (its dependencies are there: the venv's key is their requirements)."""
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--force-reinstall",
         wheel], env=board_env(board))
