"""The estimator: a device profile's power model applied to this process's CPU time (never measured).

energy = idle_w · wall time + (active_w − idle_w) / cores · process CPU seconds

The idle term is dropped with ``subtract_idle=True``. Always labelled ``estimated:<profile>``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from edge_runtime.meters.base import Meter

_WALL = time.perf_counter
_CPU = time.process_time


class EstimateMeter(Meter):
    """Estimates energy from CPU time with a profile's power model; the fallback everywhere.

    Args:
        profile: a :class:`~edge_runtime.profiles.DeviceProfile`, a profile name or a YAML path;
            None detects this machine's profile.
        subtract_idle: report only the energy above idle (drop the idle-power term).

    Example:
        >>> m = EstimateMeter("rpi4")
        >>> m.source
        'estimated:rpi4'
    """

    name: ClassVar[str] = "estimate"
    measured: ClassVar[bool] = False
    auto_priority: ClassVar[int | None] = 1000  # last resort

    def __init__(self, profile: Any = None, *, subtract_idle: bool = False, **kwargs: Any) -> None:
        from edge_runtime.profiles import resolve_profile

        self.profile = resolve_profile(profile)
        power = self.profile.power
        super().__init__(subtract_idle=subtract_idle, idle_w=power.idle_w)
        self._idle_w = power.idle_w
        self._core_w = power.active_w_per_core(self.profile.cpu.cores)
        self._cores = self.profile.cpu.cores

    @property
    def source(self) -> str:
        return f"estimated:{self.profile.name}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "profile": self.profile.name, "idle_w": self._idle_w,
                "active_w_per_core": self._core_w}

    def start_window(self) -> tuple[float, float]:
        return (_WALL(), _CPU())

    def energy_between(self, token: tuple[float, float], end: tuple[float, float]) -> float:
        wall = end[0] - token[0]
        cpu = min(max(0.0, end[1] - token[1]), wall * self._cores)
        return self._idle_w * wall + self._core_w * cpu

    def window_energy(self, token: tuple[float, float]) -> tuple[float, tuple[float, float]]:
        end = (_WALL(), _CPU())
        wall = end[0] - token[0]
        cpu = min(max(0.0, end[1] - token[1]), wall * self._cores)
        active = self._core_w * cpu
        return (active if self.subtract_idle else active + self._idle_w * wall), end

    def measure_idle(self, seconds: float = 1.0) -> float:
        """The estimator's idle power is the profile's; nothing to measure."""
        return self._idle_w
