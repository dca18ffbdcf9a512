"""The energy-meter interface: a meter reports joules over a window and says what it is.

Two kinds of meters share :class:`Meter`:

* window meters read something cheap at the window's start and end (the estimator's
  CPU time, a powercap counter read directly);
* :class:`SampledMeter` subclasses read a sensor in a background thread at ``rate_hz``
  and keep a cumulative-energy trace; a window's energy is the trace's increase between
  its two timestamps (linear interpolation between samples, the last power held after
  the newest sample), so windows shorter than the sample period still get a figure.

Energy is attributed to samples by :func:`attribute`: each segment's energy is shared by
the samples that entered it, so a sample that left at exit 0 pays only for segment 0.
"""

from __future__ import annotations

import bisect
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from edge_runtime.errors import ConfigError

_CLOCK = time.perf_counter


def attribute(result: Any, energy_j: float, segment_energy_j: np.ndarray | None = None) -> np.ndarray:
    """Per-sample energy: each segment's energy split equally among the samples that entered it.

    ``segment_energy_j`` defaults to ``energy_j`` split by the result's per-segment latency. The
    per-sample figures sum to ``energy_j``.

    Example:
        >>> r = type("R", (), {})()
        >>> r.exit_index = np.array([0, 1]); r.segment_batch_size = np.array([2, 1])
        >>> r.segment_latency_s = np.array([1.0, 1.0])
        >>> attribute(r, 4.0).tolist()          # segment 0: 2 J shared by 2; segment 1: 2 J for sample 1
        [1.0, 3.0]
    """
    exit_index = result.exit_index
    n = exit_index.shape[0]
    if n == 1:
        return np.array([energy_j])
    batch = np.asarray(result.segment_batch_size, dtype=np.float64)
    if segment_energy_j is None:
        seg_lat = np.asarray(result.segment_latency_s, dtype=np.float64)
        total = seg_lat.sum()
        if total <= 0 or batch.shape != seg_lat.shape:
            return np.full(n, energy_j / n)
        segment_energy_j = energy_j * seg_lat / total
    per_sample = np.divide(segment_energy_j, batch, out=np.zeros_like(batch), where=batch > 0)
    # consistency: a sample that answered at exit k ran segments 0..k
    cum = np.cumsum(per_sample)
    out = cum[np.minimum(exit_index, cum.shape[0] - 1)]
    s = out.sum()
    return out * (energy_j / s) if s > 0 else np.full(n, energy_j / n)


class Meter(ABC):
    """One way of measuring (or estimating) the energy of an inference window.

    Subclasses set :attr:`name` and implement :meth:`energy_between`; the runtime calls
    :meth:`start_window` before and :meth:`finish_window` after each inference.

    Attributes:
        name: registry name; the source label is ``measured:<name>`` (or ``estimated:<profile>``).
        measured: False only for estimators.
        auto_priority: order in auto-selection (lower first); None: never auto-selected.
        rate_hz: sampling rate of a sampled meter; None for window meters (read at the window's ends).
        idle_w: the idle power subtracted from each window when ``subtract_idle`` is set.
    """

    name: ClassVar[str] = ""
    measured: ClassVar[bool] = True
    auto_priority: ClassVar[int | None] = None
    rate_hz: float | None = None

    def __init__(self, *, subtract_idle: bool = False, idle_w: float | None = None) -> None:
        self.subtract_idle = subtract_idle
        self.idle_w = idle_w
        if subtract_idle and idle_w is not None and idle_w < 0:
            raise ConfigError(f"meter {self.name!r}: idle_w must be >= 0, got {idle_w}")

    # -- what it is -----------------------------------------------------------------------
    @property
    def source(self) -> str:
        """``measured:<meter>`` or ``estimated:<profile>``; copied into every result."""
        return f"measured:{self.name}"

    @classmethod
    def probe(cls, **kwargs: Any) -> tuple[bool, str]:
        """Whether this meter can work here, and why (not); must not start anything."""
        return True, "always available"

    def describe(self) -> dict[str, Any]:
        """Settings for reports."""
        return {"name": self.name, "source": self.source, "rate_hz": self.rate_hz,
                "subtract_idle": self.subtract_idle, "idle_w": self.idle_w}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Meter:
        """Start sampling (no-op for window meters); returns self."""
        return self

    def stop(self) -> None:  # noqa: B027 - optional hook: window meters have nothing to stop
        """Stop sampling and release the sensor (idempotent)."""

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- windows --------------------------------------------------------------------------
    def start_window(self) -> Any:
        """Mark a window's start; returns an opaque token for :meth:`finish_window`."""
        return _CLOCK()

    @abstractmethod
    def energy_between(self, token: Any, end: Any) -> float:
        """Joules between a start token and an end token (both from :meth:`start_window`)."""

    def measure_idle(self, seconds: float = 1.0) -> float:
        """Measure the idle power over ``seconds`` of sleep and keep it as :attr:`idle_w`."""
        t0 = self.start_window()
        time.sleep(seconds)
        t1 = self.start_window()
        self.idle_w = self.energy_between(t0, t1) / max(_seconds(t1) - _seconds(t0), 1e-9)
        return self.idle_w

    def window_energy(self, token: Any) -> tuple[float, Any]:
        """(joules since ``token``, end token), idle power removed when asked."""
        end = self.start_window()
        energy = self.energy_between(token, end)
        if self.subtract_idle and self.idle_w:
            energy = max(0.0, energy - self.idle_w * (_seconds(end) - _seconds(token)))
        return energy, end

    def segment_energy(self, token: Any, end: Any, result: Any, energy_j: float) -> np.ndarray | None:
        """Per-segment energy when this meter can resolve segments; None: split by latency."""
        return None

    def finish_window(self, token: Any, result: Any) -> None:
        """Fill ``result.energy_j``, ``energy_source``, ``sample_energy_j`` and ``segment_energy_j``.

        Kept lean: it runs after every inference (a few microseconds at batch 1).
        """
        energy, end = self.window_energy(token)
        seg = self.segment_energy(token, end, result, energy)
        result.energy_j = energy
        result.energy_source = self.source
        lat = result.segment_latency_s
        if seg is None and lat is not None:
            total = sum(lat.tolist())
            seg = lat * (energy / total) if total > 0 else None
        result.segment_energy_j = seg
        result.sample_energy_j = np.array([energy]) if len(result.exit_index) == 1 else attribute(result, energy, seg)


def _seconds(token: Any) -> float:
    return token[0] if isinstance(token, tuple) else float(token)


class SampledMeter(Meter):
    """A meter whose sensor is read in a background thread and integrated over time.

    Subclasses implement :meth:`read` returning either instantaneous watts
    (``reading = "power"``) or a cumulative joule counter (``reading = "energy"``).

    Args:
        rate_hz: samples per second (default 100).
        history_s: seconds of trace kept (older samples are dropped).
    """

    reading: ClassVar[str] = "power"
    rate_hz: float  # always set (> 0) by __init__, unlike a window meter's None

    def __init__(self, *, rate_hz: float = 100.0, history_s: float = 600.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not rate_hz or rate_hz <= 0:
            raise ConfigError(f"meter {self.name!r}: rate_hz must be > 0, got {rate_hz}")
        self.rate_hz = float(rate_hz)
        self._max = max(16, int(history_s * rate_hz))
        self._t: list[float] = []
        self._e: list[float] = []   # cumulative joules at each sample
        self._p: list[float] = []   # power at each sample (watts)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def read(self) -> float:
        """One sensor reading: watts, or cumulative joules when ``reading == 'energy'``."""

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> None:
        """Take one reading now and append it to the trace (the background thread calls this)."""
        value = self.read()
        t = _CLOCK()
        with self._lock:
            if not self._t:
                self._t.append(t)
                self._e.append(value if self.reading == "energy" else 0.0)
                self._p.append(0.0 if self.reading == "energy" else value)
                return
            dt = t - self._t[-1]
            if self.reading == "energy":
                e = value
                p = (e - self._e[-1]) / dt if dt > 0 else self._p[-1]
            else:
                p = value
                e = self._e[-1] + 0.5 * (p + self._p[-1]) * dt
            self._t.append(t)
            self._e.append(e)
            self._p.append(p)
            if len(self._t) > self._max:
                cut = len(self._t) - self._max // 2
                del self._t[:cut], self._e[:cut], self._p[:cut]

    def start(self) -> SampledMeter:
        if self._thread is not None:
            return self
        self.sample()
        self.sample()  # two samples: the trace has a power from the start
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"meter-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        nxt = _CLOCK() + period
        while not self._stop.wait(max(0.0, nxt - _CLOCK())):
            try:
                self.sample()
            except Exception:  # a transient read failure must not kill the sampler
                pass
            nxt += period
            now = _CLOCK()
            if nxt < now:  # fell behind (suspended process): skip, do not burst
                nxt = now + period

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5.0)
        self._close()

    def _close(self) -> None:
        """Release the sensor (files, bus); subclasses override."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- integration ----------------------------------------------------------------------
    def cumulative(self, t: float) -> float:
        """Cumulative joules at time ``t`` (perf_counter seconds), interpolated on the trace."""
        with self._lock:
            ts = self._t
            if not ts:
                raise ConfigError(f"meter {self.name!r} has no samples; call start() first "
                                  "(load_bundle(..., meter=...) starts it)")
            k = bisect.bisect_right(ts, t)
            if k == 0:
                return self._e[0] - self._p[0] * (ts[0] - t)
            if k == len(ts):
                return self._e[-1] + self._p[-1] * (t - ts[-1])
            t0, t1 = ts[k - 1], ts[k]
            e0, e1 = self._e[k - 1], self._e[k]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e1

    def energy_between(self, token: Any, end: Any) -> float:
        return max(0.0, self.cumulative(_seconds(end)) - self.cumulative(_seconds(token)))

    def power_now(self) -> float:
        """The latest power sample in watts."""
        with self._lock:
            return self._p[-1] if self._p else float("nan")

    def segment_energy(self, token: Any, end: Any, result: Any, energy_j: float) -> np.ndarray | None:
        """Integrate each segment's own interval when samples are at least as dense as the segments."""
        lat_s = result.segment_latency_s
        ran = [t for t in lat_s.tolist() if t > 0] if lat_s is not None else []
        if len(ran) < 2 or min(ran) < 1.0 / self.rate_hz or energy_j <= 0:
            return None
        lat = np.asarray(lat_s, dtype=np.float64)
        start = _seconds(token)
        bounds = start + np.concatenate([[0.0], np.cumsum(lat)])
        cum = np.array([self.cumulative(float(b)) for b in bounds])
        seg = np.maximum(np.diff(cum), 0.0)
        total = seg.sum()
        return seg * (energy_j / total) if total > 0 else None
