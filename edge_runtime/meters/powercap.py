"""Linux powercap / Intel RAPL energy counters (``/sys/class/powercap/*/energy_uj``), with wrap-around.

Each RAPL zone exposes a cumulative ``energy_uj`` counter that wraps to 0 after
``max_energy_range_uj``. The meter reads every selected zone in a background thread,
unwraps each counter, and sums the zones: by default the top-level package zones plus
their ``dram`` sub-zones (``psys`` covers the packages too and is left out unless asked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.meters.base import SampledMeter

DEFAULT_ROOT = Path("/sys/class/powercap")
_TOP = re.compile(r"^[a-z-]*rapl:\d+$")
_SUB = re.compile(r"^[a-z-]*rapl:\d+:\d+$")


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone: its directory, name (``package-0``, ``dram``, ``psys``...) and counter range."""

    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        f = self.path / "energy_uj"
        try:
            return int(f.read_text().strip())
        except PermissionError:
            raise EdgeRuntimeError(
                f"{f}: permission denied; RAPL counters are root-only since Linux 5.10 (CVE-2020-8694): run as "
                f"root, or grant read access (e.g. `sudo chmod o+r {f}` or a udev rule), or use another meter"
            ) from None
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"{f}: unreadable energy counter ({exc})") from None


def find_zones(root: Path = DEFAULT_ROOT, domains: Sequence[str] | None = None) -> list[RaplZone]:
    """The zones to sum. ``domains``: zone names to select (default: packages + dram, no psys).

    Raises:
        EdgeRuntimeError: no zone found under ``root``, or a zone's files are unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise EdgeRuntimeError(f"{root}: no powercap sysfs directory (not Linux, or no RAPL driver loaded)")
    zones = []
    for d in sorted(root.iterdir()):
        if not (_TOP.match(d.name) or _SUB.match(d.name)) or d.name.startswith("intel-rapl-mmio"):
            continue  # the mmio interface duplicates the package counter
        try:
            name = (d / "name").read_text().strip()
            max_uj = int((d / "max_energy_range_uj").read_text().strip())
        except PermissionError:
            raise EdgeRuntimeError(f"{d}: permission denied reading the zone's name/max_energy_range_uj") from None
        except (OSError, ValueError) as exc:
            raise EdgeRuntimeError(f"{d}: not a readable powercap zone ({exc})") from None
        top = bool(_TOP.match(d.name))
        if domains is not None:
            keep = name in domains
        else:
            keep = (top and name != "psys") or (not top and name == "dram")
        if keep:
            zones.append(RaplZone(d, name, max_uj))
    if not zones:
        want = f"named {list(domains)}" if domains is not None else "(package/dram)"
        raise EdgeRuntimeError(f"{root}: no RAPL zone {want} found")
    return zones


class PowercapMeter(SampledMeter):
    """RAPL energy counters from powercap sysfs, sampled in a background thread.

    Args:
        root: the powercap directory (default ``/sys/class/powercap``; a temp tree in tests).
        domains: zone names to sum (default: every package, plus dram sub-zones).
        rate_hz: counter reads per second (default 100; RAPL updates about every 1 ms).

    Example:
        >>> with PowercapMeter() as m:                       # doctest: +SKIP
        ...     t = m.start_window(); work(); joules, _ = m.window_energy(t)
    """

    name: ClassVar[str] = "powercap"
    reading: ClassVar[str] = "energy"
    auto_priority: ClassVar[int | None] = 20

    def __init__(self, root: str | Path = DEFAULT_ROOT, *, domains: Sequence[str] | None = None,
                 rate_hz: float = 100.0, **kwargs: Any) -> None:
        super().__init__(rate_hz=rate_hz, **kwargs)
        self.root = Path(root)
        self.zones = find_zones(self.root, domains)
        self._last = [z.read_uj() for z in self.zones]
        self._total_uj = 0

    @classmethod
    def probe(cls, root: str | Path = DEFAULT_ROOT, domains: Sequence[str] | None = None, **_: Any) -> tuple[bool, str]:
        try:
            zones = find_zones(Path(root), domains)
            for z in zones:
                z.read_uj()
        except EdgeRuntimeError as exc:
            return False, str(exc)
        return True, f"{len(zones)} RAPL zone(s): " + ", ".join(f"{z.path.name}={z.name}" for z in zones)

    def read_counters_uj(self) -> list[int]:
        """The raw counters, one per zone (no unwrapping)."""
        return [z.read_uj() for z in self.zones]

    def read(self) -> float:
        """Cumulative joules since the meter was built, every zone unwrapped and summed."""
        raw = self.read_counters_uj()
        for i, (now, zone) in enumerate(zip(raw, self.zones)):
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped past max_energy_range_uj
                delta += zone.max_energy_range_uj
                if delta < 0:
                    raise ConfigError(f"{zone.path}/energy_uj went backwards by more than max_energy_range_uj")
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj * 1e-6

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.root), "zones": [z.name for z in self.zones]}
