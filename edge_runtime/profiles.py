"""Device profiles: data files (``device_profiles/*.yaml``) loaded through the ``PROFILES`` registry.

A profile describes a device (CPU, memory, accelerator), the runtime settings it prefers
(backend, threads, precision), a power model for the energy estimator and a latency model
for :mod:`edge_runtime.estimate`. Every figure is ``{value: ..., source: "..."}``: where it
came from is part of the data. :func:`detect_profile` matches this machine against each
profile's ``detect`` rules (device-tree model, Tegra release, ``/proc/cpuinfo``); a profile's ``wheels`` lists
package versions known to work or to fail on its board, and :func:`wheel_warnings` names an installed bad one.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_runtime import _env
from edge_runtime.errors import ConfigError
from edge_runtime.registry import Registry

_SOURCE_PROFILES = Path(__file__).resolve().parents[1] / "device_profiles"
#: the built-in profiles: the top-level ``device_profiles/`` in a source checkout, else the copy an installed
#: wheel carries inside the package (setup.py packages the folder as ``edge_runtime/device_profiles/``)
BUILTIN_DIR = _SOURCE_PROFILES if _SOURCE_PROFILES.is_dir() else Path(__file__).resolve().parent / "device_profiles"
DETECT_PATHS = {"device_tree_model": "/proc/device-tree/model", "tegra_release": "/etc/nv_tegra_release",
                "cpuinfo": "/proc/cpuinfo"}
#: points per matching rule kind: a device-tree model is the strongest evidence
DETECT_WEIGHTS = {"device_tree_model": 4, "tegra_release": 2, "cpuinfo": 1, "machine": 1}


@dataclass(frozen=True)
class Figure:
    """A number and where it came from (datasheet, measurement, derivation)."""

    value: float
    source: str


@dataclass(frozen=True)
class CpuSpec:
    cores: int
    type: str
    arch: str
    max_ghz: Figure | None = None


@dataclass(frozen=True)
class PowerModel:
    """Whole-device power: ``idle_w`` doing nothing, ``active_w`` with every core busy."""

    idle_w: float
    active_w: float
    sources: Mapping[str, str] = field(default_factory=dict)

    def active_w_per_core(self, cores: int) -> float:
        """Extra watts per fully busy core above idle."""
        return max(0.0, self.active_w - self.idle_w) / max(1, cores)

    def watts(self, busy_cores: float, cores: int) -> float:
        """Power with ``busy_cores`` cores busy."""
        return self.idle_w + self.active_w_per_core(cores) * min(busy_cores, cores)


@dataclass(frozen=True)
class LatencyModel:
    """Backend cost model: per call, per graph node by kind, and sustained GFLOP/s by op kind.

    segment latency = call_overhead_s + Σ_kind nodes_kind · op_s[kind] + Σ_kind flops_kind / (gflops[kind]·1e9)
                      + other nodes · elements · other_elem_s
                      + the executor's own cost: first_s (segment 0; default decision_s), decision_s
                        (other non-final segments) or final_s (the last)
    """

    call_overhead_s: float
    op_s: Mapping[str, float]
    gflops: Mapping[str, float]
    decision_s: float = 0.0
    final_s: float = 0.0
    first_s: float | None = None
    other_elem_s: float = 0.0
    elem_s: Mapping[str, float] = field(default_factory=dict)
    threads: int | None = None
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WheelVersions:
    """Versions of one pip package known to work (``good``) or to fail (``bad``) on a board: version -> how it
    is known (an issue, a measurement, an emulated run)."""

    good: Mapping[str, str] = field(default_factory=dict)
    bad: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceProfile:
    """One device's description, preferences and models. Build with :func:`load_profile`."""

    name: str
    description: str
    cpu: CpuSpec
    memory_gb: Figure | None
    accelerator: str | None
    backend: str
    threads: int | None
    precision: str
    power: PowerModel
    latency: LatencyModel | None
    detect: Mapping[str, list[str]]
    path: Path | None = None
    wheels: Mapping[str, WheelVersions] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# -- loading ------------------------------------------------------------------------------
def _figure(data: Any, where: str) -> Figure:
    if not isinstance(data, Mapping) or "value" not in data or not str(data.get("source", "")).strip():
        raise ConfigError(f"{where}: expected {{value: NUMBER, source: 'where the figure comes from'}}, got {data!r}")
    try:
        return Figure(float(data["value"]), str(data["source"]))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.value: expected a number, got {data['value']!r}") from None


def _section(data: Mapping[str, Any], key: str, where: str, required: bool = True) -> Any:
    if key not in data:
        if required:
            raise ConfigError(f"{where}: missing key {key!r}")
        return None
    return data[key]


_TOP_KEYS = {"name", "description", "cpu", "memory_gb", "accelerator", "preferred", "power", "latency",
             "detect", "measured", "notes", "wheels"}


def _wheels(data: Any, where: str) -> dict[str, WheelVersions]:
    """``wheels: {PACKAGE: {good: {VERSION: source}, bad: {VERSION: reason}}}``, validated."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected {{PACKAGE: {{good: {{VERSION: source}}, bad: {{VERSION: reason}}}}}}")
    out = {}
    for package, entry in data.items():
        at = f"{where}.{package}"
        if not isinstance(entry, Mapping) or not entry or set(entry) - {"good", "bad"}:
            raise ConfigError(f"{at}: expected good: and/or bad: (VERSION: 'how it is known'), got {entry!r}")
        known: dict[str, dict[str, str]] = {}
        for kind in ("good", "bad"):
            versions = entry.get(kind) or {}
            if not isinstance(versions, Mapping) or any(not isinstance(v, str) for v in versions):
                raise ConfigError(f"{at}.{kind}: expected quoted versions, {{\"1.2.3\": 'how it is known'}}, "
                                  f"got {versions!r}")
            for version, source in versions.items():
                if not str(source or "").strip():
                    raise ConfigError(f"{at}.{kind}.{version}: say how it is known (an issue, a measurement)")
            known[kind] = {v: str(s) for v, s in versions.items()}
        both = sorted(set(known["good"]) & set(known["bad"]))
        if both:
            raise ConfigError(f"{at}: version(s) {both} listed as both good and bad")
        out[str(package)] = WheelVersions(**known)
    return out


def profile_from_dict(data: Mapping[str, Any], where: str = "profile", path: Path | None = None) -> DeviceProfile:
    """Validate a profile mapping (as loaded from YAML) into a :class:`DeviceProfile`.

    Raises:
        ConfigError: a missing/unknown key or a figure without its source; the message names it.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    name = str(_section(data, "name", where))
    cpu = _section(data, "cpu", where)
    try:
        cpu_spec = CpuSpec(int(cpu["cores"]), str(cpu["type"]), str(cpu.get("arch", "")),
                           _figure(cpu["max_ghz"], f"{where}.cpu.max_ghz") if "max_ghz" in cpu else None)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{where}.cpu: expected cores, type, arch (missing {exc})") from None
    pref = _section(data, "preferred", where)
    power = _section(data, "power", where)
    idle = _figure(_section(power, "idle_w", f"{where}.power"), f"{where}.power.idle_w")
    active = _figure(_section(power, "active_w", f"{where}.power"), f"{where}.power.active_w")
    if active.value < idle.value:
        raise ConfigError(f"{where}.power: active_w {active.value} is below idle_w {idle.value}")
    latency = None
    lat = data.get("latency")
    if lat is not None:
        figs = {k: _figure(v, f"{where}.latency.{k}") for k, v in lat.items() if k != "threads"}
        for req in ("call_overhead_s", "other_op_s", "conv_gflops", "matmul_gflops"):
            if req not in figs:
                raise ConfigError(f"{where}.latency: missing key {req!r}")
        latency = LatencyModel(
            call_overhead_s=figs["call_overhead_s"].value,
            op_s={k[:-len("_op_s")]: f.value for k, f in figs.items() if k.endswith("_op_s")},
            gflops={k[:-len("_gflops")]: f.value for k, f in figs.items() if k.endswith("_gflops")},
            decision_s=figs["decision_s"].value if "decision_s" in figs else 0.0,
            final_s=figs["final_s"].value if "final_s" in figs else 0.0,
            first_s=figs["first_s"].value if "first_s" in figs else None,
            other_elem_s=figs["other_elem_s"].value if "other_elem_s" in figs else 0.0,
            elem_s={k[:-len("_elem_s")]: f.value for k, f in figs.items() if k.endswith("_elem_s")},
            threads=lat.get("threads"),
            sources={k: f.source for k, f in figs.items()},
        )
    detect = data.get("detect") or {}
    bad = sorted(set(detect) - set(DETECT_WEIGHTS))
    if bad:
        raise ConfigError(f"{where}.detect: unknown rule(s) {bad}; known: {sorted(DETECT_WEIGHTS)}")
    return DeviceProfile(
        name=name, description=str(data.get("description", "")), cpu=cpu_spec,
        memory_gb=_figure(data["memory_gb"], f"{where}.memory_gb") if "memory_gb" in data else None,
        accelerator=data.get("accelerator"), backend=str(pref.get("backend", "onnxruntime")),
        threads=pref.get("threads"), precision=str(pref.get("precision", "fp32")),
        power=PowerModel(idle.value, active.value, {"idle_w": idle.source, "active_w": active.source}),
        latency=latency, detect={k: [str(p) for p in v] for k, v in detect.items()}, path=path,
        wheels=_wheels(data.get("wheels"), f"{where}.wheels"), raw=dict(data),
    )


def load_profile(path: str | Path) -> DeviceProfile:
    """Load and validate one profile YAML file (``yaml.safe_load``; no code runs)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read profile ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})".splitlines()[0]) from None
    return profile_from_dict(data, where=str(p), path=p)


#: device profiles by name; each entry loads its YAML file on first use
PROFILES: Registry[Any] = Registry("device profile")


def _register_dir(directory: Path) -> None:
    for f in sorted(directory.glob("*.yaml")):
        if f.stem not in PROFILES:
            PROFILES.register(f.stem, functools.lru_cache(maxsize=1)(functools.partial(load_profile, f)))


for _d in [*_env.profile_dirs(), BUILTIN_DIR]:
    if _d.is_dir():
        _register_dir(_d)


def get_profile(name: str) -> DeviceProfile:
    """A registered profile by name, or a profile YAML file by path.

    Example:
        >>> get_profile("rpi4").cpu.cores
        4
    """
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return load_profile(name)
    return PROFILES.create(name)


def resolve_profile(profile: DeviceProfile | str | None) -> DeviceProfile:
    """A profile object from an object, a name/path, or None (``EDGE_RUNTIME_PROFILE``, else detected)."""
    if isinstance(profile, DeviceProfile):
        return profile
    if profile is None:
        profile = _env.profile_name()
        if profile is None:
            return get_profile(detect_profile().name)
    return get_profile(profile)


# -- detection ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """Which profile matched this machine, with the evidence."""

    name: str
    score: int
    evidence: tuple[str, ...]


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_bytes().replace(b"\x00", b"").decode(errors="replace")
    except OSError:
        return ""


def read_machine_facts(paths: Mapping[str, str | Path] | None = None, machine: str | None = None) -> dict[str, str]:
    """The text :func:`detect_profile` matches on (``paths`` override the default files, for tests)."""
    paths = {**DETECT_PATHS, **(paths or {})}
    facts = {k: _read_text(v) for k, v in paths.items()}
    facts["machine"] = machine if machine is not None else platform.machine()
    return facts


def detect_profile(paths: Mapping[str, str | Path] | None = None, machine: str | None = None,
                   fallback: str = "generic_x86_64") -> Detection:
    """Match this machine against every registered profile's ``detect`` rules; best score wins.

    Args:
        paths: override ``device_tree_model``/``tegra_release``/``cpuinfo`` file paths.
        machine: override ``platform.machine()``.
        fallback: profile used when nothing matches.

    Example:
        >>> detect_profile({"device_tree_model": "/nonexistent"}, machine="x86_64").name
        'generic_x86_64'
    """
    facts = read_machine_facts(paths, machine)
    best = Detection(fallback, 0, ("no profile's detect rules matched",))
    for name in PROFILES.names():
        prof = PROFILES.create(name)
        score, evidence = 0, []
        for kind, patterns in prof.detect.items():
            text = facts.get(kind, "")
            hit = next((p for p in patterns if p and p.lower() in text.lower()), None)
            if hit is not None:
                score += DETECT_WEIGHTS[kind]
                evidence.append(f"{kind} contains {hit!r}")
        if score > best.score:
            best = Detection(name, score, tuple(evidence))
    return best


def profile_to_dict(profile: DeviceProfile) -> dict[str, Any]:
    """The profile's data as loaded (for ``profile show --json``)."""
    return dict(profile.raw)


def wheel_warnings(profile: DeviceProfile, installed: Mapping[str, str | None] | None = None) -> list[str]:
    """One line per installed package version that ``profile`` lists as known bad on its board.

    Reads package metadata only (nothing is imported: a bad wheel may kill the process on import).

    Args:
        profile: the board's profile (its ``wheels`` section).
        installed: package -> version (None: not installed); default: this environment's installed versions.

    Example:
        >>> wheel_warnings(get_profile("rpi4"), {"onnxruntime": "1.21.0"})[0][:40]
        'onnxruntime 1.21.0 is known bad on rpi4:'
    """
    lines = []
    for package, known in profile.wheels.items():
        version = installed.get(package) if installed is not None else _installed_version(package)
        reason = known.bad.get(version.split("+")[0]) if version else None
        if reason:
            good = ", ".join(known.good) or "none recorded"
            lines.append(f"{package} {version} is known bad on {profile.name}: {reason} (known good: {good})")
    return lines


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
