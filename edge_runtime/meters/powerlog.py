"""An external power meter's log (CSV of timestamps and watts, or volts and amps), aligned by timestamp.

USB power meters (and bench supplies) log power at their own rate to a file; this meter
integrates the logged power over each inference window by wall-clock time. The file may
still be growing: new rows are read on demand. Columns (header names, case-insensitive):
a timestamp (``timestamp``/``time``/``t``: Unix seconds or ISO 8601) and either ``watts``
(``power``/``power_w``/``w``) or ``volts`` and ``amps`` (``voltage``/``v``, ``current``/``a``).
"""

from __future__ import annotations

import bisect
import csv
import time
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.meters.base import Meter, attribute

_TIME = ("timestamp", "time", "t", "unix_time", "time_s")
_WATTS = ("watts", "power", "power_w", "w")
_VOLTS = ("volts", "voltage", "v", "voltage_v")
_AMPS = ("amps", "current", "a", "current_a")


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()


class PowerLog:
    """A power log file, read incrementally; timestamps in Unix seconds.

    Example:
        >>> log = PowerLog("usb_meter.csv")                 # doctest: +SKIP
        >>> log.energy(t0, t1), log.mean_power(t0, t1)      # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeRuntimeError(f"{self.path}: power log not found")
        self.t: list[float] = []
        self.w: list[float] = []
        self._pos = 0
        self._cols: tuple[int, ...] | None = None
        self._line = 0
        self.refresh()
        if len(self.t) < 2:
            raise EdgeRuntimeError(f"{self.path}: power log needs at least 2 rows, found {len(self.t)}")

    def _header(self, row: list[str]) -> tuple[int, ...]:
        names = [c.strip().lower() for c in row]

        def find(options: tuple[str, ...]) -> int | None:
            return next((names.index(o) for o in options if o in names), None)

        t, w, v, a = find(_TIME), find(_WATTS), find(_VOLTS), find(_AMPS)
        if t is None or (w is None and (v is None or a is None)):
            raise ConfigError(f"{self.path}: header {row} needs a timestamp column ({'/'.join(_TIME)}) and "
                              f"watts ({'/'.join(_WATTS)}) or volts and amps columns")
        return (t, w) if w is not None else (t, v, a)  # type: ignore[return-value]

    def refresh(self) -> int:
        """Read rows appended since the last call; returns how many were added."""
        with self.path.open("r", newline="") as fh:
            fh.seek(self._pos)
            text = fh.read()
        end = text.rfind("\n") + 1  # only complete lines
        if end == 0:
            return 0
        self._pos += len(text[:end].encode())
        added = 0
        for row in csv.reader(text[:end].splitlines()):
            self._line += 1
            if not row or row[0].startswith("#"):
                continue
            if self._cols is None:
                self._cols = self._header(row)
                continue
            try:
                t = _parse_time(row[self._cols[0]])
                vals = [float(row[c]) for c in self._cols[1:]]
            except (ValueError, IndexError):
                raise ConfigError(f"{self.path}:{self._line}: expected a timestamp and numbers, got {row}") from None
            watts = vals[0] if len(vals) == 1 else vals[0] * vals[1]
            if self.t and t < self.t[-1]:
                raise ConfigError(f"{self.path}:{self._line}: timestamps go backwards ({t} after {self.t[-1]})")
            self.t.append(t)
            self.w.append(watts)
            added += 1
        return added

    @property
    def rate_hz(self) -> float:
        """Median sample rate of the log."""
        return float(1.0 / np.median(np.diff(self.t))) if len(self.t) > 1 else float("nan")

    def covers(self, t0: float, t1: float, max_gap_s: float = 0.0) -> bool:
        return bool(self.t) and self.t[0] - max_gap_s <= t0 and t1 <= self.t[-1] + max_gap_s

    def energy(self, t0: float, t1: float) -> float:
        """Joules between two Unix times (trapezoid on the logged power; ends held constant)."""
        if t1 <= t0:
            return 0.0
        ts, ws = self.t, self.w
        a, b = bisect.bisect_right(ts, t0), bisect.bisect_left(ts, t1)
        pts = [t0] + ts[a:b] + [t1]
        pw = np.interp(pts, ts, ws)
        return float(np.sum(0.5 * (pw[1:] + pw[:-1]) * np.diff(pts)))

    def mean_power(self, t0: float, t1: float) -> float:
        """Mean watts between two Unix times."""
        return self.energy(t0, t1) / (t1 - t0)


class PowerLogMeter(Meter):
    """Energy per window from an external power log.

    Args:
        path: the CSV log (may be growing while the runtime runs).
        offset_s: add to the log's timestamps to get this machine's Unix time (clock skew).
        max_gap_s: how far past the log's last row a window may end (power held) before
            its energy is reported unavailable (default 2 s).

    Example:
        >>> rt = load_bundle("b", meter=PowerLogMeter("um25c.csv"))      # doctest: +SKIP
    """

    name: ClassVar[str] = "powerlog"
    auto_priority: ClassVar[int | None] = None  # needs a file: never picked automatically

    def __init__(self, path: str | Path, *, offset_s: float = 0.0, max_gap_s: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = PowerLog(path)
        self.offset_s = float(offset_s)
        self.max_gap_s = float(max_gap_s)
        self.rate_hz = self.log.rate_hz

    @classmethod
    def probe(cls, path: str | Path | None = None, **_: Any) -> tuple[bool, str]:
        if path is None:
            return False, "needs a log file: --meter powerlog:path=LOG.csv"
        try:
            log = PowerLog(path)
        except EdgeRuntimeError as exc:
            return False, str(exc)
        return True, f"{len(log.t)} rows at {log.rate_hz:.3g} Hz"

    def start_window(self) -> float:
        return time.time()

    def energy_between(self, token: float, end: float) -> float:
        a, b = token - self.offset_s, end - self.offset_s
        if not self.log.covers(a, b, self.max_gap_s):
            self.log.refresh()
        if not self.log.covers(a, b, self.max_gap_s):
            raise EdgeRuntimeError(f"{self.log.path}: log covers {self.log.t[0]:.3f}..{self.log.t[-1]:.3f}, "
                                   f"not the window {a:.3f}..{b:.3f} (clock offset {self.offset_s} s)")
        return self.log.energy(a, b)

    def finish_window(self, token: Any, result: Any) -> None:
        try:
            energy, _ = self.window_energy(token)
        except EdgeRuntimeError as exc:  # the log does not reach this window (yet): say so, do not fail
            result.energy_j, result.sample_energy_j = None, None
            result.energy_source = f"unavailable:powerlog ({exc})"
            return
        result.energy_j = energy
        result.energy_source = self.source
        result.sample_energy_j = attribute(result, energy)
        lat = result.segment_latency_s
        total = float(np.sum(lat)) if lat is not None else 0.0
        result.segment_energy_j = lat * (energy / total) if total > 0 else None
