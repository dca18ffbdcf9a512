"""NVIDIA Jetson INA3221 power rails from sysfs, sampled in a background thread and integrated.

Two sysfs layouts exist:

* hwmon (JetPack 5/6, Orin; upstream ``ina3221`` driver): ``hwmonN/name`` is ``ina3221``,
  ``inK_label`` names the rail (``VDD_IN``...), ``inK_input`` is its bus voltage in mV and
  ``currK_input`` its current in mA (power = V·I); a ``powerK_input`` (µW) is used when present.
* iio (JetPack 4, Jetson Nano; ``ina3221x`` driver): ``rail_name_K`` names the rail
  (``POM_5V_IN``...), ``in_powerK_input`` is its power in mW.

The total input rail (``VDD_IN`` / ``POM_5V_IN``) is the whole module's power and is used
alone when present; otherwise every rail is summed (and :meth:`describe` says so).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.meters.base import SampledMeter

DEFAULT_ROOTS = (Path("/sys/class/hwmon"), Path("/sys/bus/i2c/drivers/ina3221x"))
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its name and the files that give its power.

    ``files`` with ``scale``: power watts = product(values) · scale.
    """

    name: str
    files: tuple[Path, ...]
    scale: float


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise EdgeRuntimeError(f"{path}: permission denied (add the user to the group owning it, or run as root)") \
            from None


def _hwmon_rails(d: Path) -> list[Rail]:
    rails = []
    for label in sorted(d.glob("in*_label")):
        k = label.name[2:-len("_label")]
        power, volt, curr = d / f"power{k}_input", d / f"in{k}_input", d / f"curr{k}_input"
        name = _read(label)
        if power.exists():
            rails.append(Rail(name, (power,), 1e-6))
        elif volt.exists() and curr.exists():
            rails.append(Rail(name, (volt, curr), 1e-6))  # mV · mA = µW
    return rails


def _iio_rails(d: Path) -> list[Rail]:
    rails = []
    for f in sorted(d.glob("in_power*_input")):
        k = f.name[len("in_power"):-len("_input")]
        label = d / f"rail_name_{k}"
        name = _read(label) if label.exists() else f"rail{k}"
        rails.append(Rail(name, (f,), 1e-3))  # mW
    return rails


def find_rails(roots: Sequence[str | Path] = DEFAULT_ROOTS) -> list[Rail]:
    """Every INA3221 rail under ``roots`` (searched up to 3 levels deep).

    Raises:
        EdgeRuntimeError: no INA3221 rail found.
    """
    rails: list[Rail] = []
    seen: set[Path] = set()
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        candidates = [root] + [p for depth in ("*", "*/*", "*/*/*") for p in root.glob(depth) if p.is_dir()]
        for d in candidates:
            real = d.resolve()
            if real in seen:
                continue
            name_file = d / "name"
            if name_file.is_file() and _read(name_file).startswith("ina3221"):
                seen.add(real)
                rails += _hwmon_rails(d)
            elif any(d.glob("in_power*_input")):
                seen.add(real)
                rails += _iio_rails(d)
    if not rails:
        raise EdgeRuntimeError(f"no INA3221 power rails under {', '.join(map(str, roots))} (not a Jetson?)")
    return rails


class JetsonMeter(SampledMeter):
    """Jetson module power from the on-board INA3221 monitor.

    Args:
        roots: directories searched for the rails (default hwmon and the ina3221x driver).
        rails: rail names to sum; default: the total input rail if present, else all rails.
        rate_hz: samples per second (default 100).

    Example:
        >>> with JetsonMeter(rate_hz=200) as m:                 # doctest: +SKIP
        ...     m.power_now()
    """

    name: ClassVar[str] = "jetson"
    auto_priority: ClassVar[int | None] = 10

    def __init__(self, roots: Sequence[str | Path] | str | Path = DEFAULT_ROOTS, *,
                 rails: Sequence[str] | None = None, rate_hz: float = 100.0, **kwargs: Any) -> None:
        super().__init__(rate_hz=rate_hz, **kwargs)
        self.roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
        found = find_rails(self.roots)
        self.all_rails = [r.name for r in found]
        if rails is not None:
            chosen = [r for r in found if r.name in rails]
            missing = sorted(set(rails) - {r.name for r in chosen})
            if missing:
                raise EdgeRuntimeError(f"jetson meter: rails {missing} not found; available: {self.all_rails}")
        else:
            total = [r for r in found if r.name in TOTAL_RAILS]
            chosen = total[:1] or found
        self.rails = chosen
        self._fds: list[list[int]] = []
        self._open()

    def _open(self) -> None:
        """Open every rail file once; reads are ``pread`` at offset 0 (cheap on sysfs)."""
        if not self._fds:
            self._fds = [[os.open(f, os.O_RDONLY) for f in r.files] for r in self.rails]

    @classmethod
    def probe(cls, roots: Sequence[str | Path] | str | Path = DEFAULT_ROOTS, **_: Any) -> tuple[bool, str]:
        roots = [roots] if isinstance(roots, (str, Path)) else roots
        try:
            rails = find_rails(roots)
        except EdgeRuntimeError as exc:
            return False, str(exc)
        return True, "INA3221 rails: " + ", ".join(r.name for r in rails)

    def read_rails(self) -> dict[str, float]:
        """Watts per selected rail, read now."""
        self._open()
        out = {}
        for rail, fds in zip(self.rails, self._fds):
            value = rail.scale
            for fd in fds:
                value *= float(os.pread(fd, 32, 0))
            out[rail.name] = value
        return out

    def read(self) -> float:
        if not self._fds:  # reopened after stop()
            self._open()
        total = 0.0
        for rail, fds in zip(self.rails, self._fds):
            value = rail.scale
            for fd in fds:
                value *= float(os.pread(fd, 32, 0))
            total += value
        return total

    def _close(self) -> None:
        fds, self._fds = self._fds, []
        for group in fds:
            for fd in group:
                os.close(fd)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rails": [r.name for r in self.rails], "all_rails": self.all_rails,
                "total_rail": any(r.name in TOTAL_RAILS for r in self.rails)}
