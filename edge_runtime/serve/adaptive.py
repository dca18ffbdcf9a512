"""The daemon's side of an SLO and of the accuracy monitor for one loaded model (the logic is in
:mod:`edge_runtime.serve.controller`; this module feeds it and applies its decisions).

Requests that leave the policy to the daemon (no ``policy``, ``thresholds`` or ``mode`` of their own) run early exit
at the controller's current operating point; every micro-batch then reports its requests' server-side latencies (or
energy per inference) to the controller, and the monitor re-runs a sampled fraction of the batch's samples to the
final exit (in the model's worker thread, after the batch's answers went out). The operating point, the objective,
the last observed value and the live agreement/accuracy estimate are exported as Prometheus gauges and in the
model's metadata.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError
from edge_runtime.policies import ExitPolicy
from edge_runtime.runtime import InferenceResult, Runtime
from edge_runtime.serve.codec import batch_feeds
from edge_runtime.serve.controller import SLO, AccuracyMonitor, SLOController, front_points

#: the batching-key tag of requests the controller chose the thresholds for
ADAPTIVE = "operating_point"


class AdaptiveModel:
    """Controller + monitor + the policy of each operating point, for one model.

    Args:
        runtime: the loaded model (its manifest's calibration curve is the front).
        slo: the objective (None: no controller, only the monitor).
        floor_accuracy: the operator's accuracy floor (a fraction).
        monitor_fraction: share of samples re-run to the final exit (0: no monitor).
        backlog: queued samples above which the controller steps cheaper at once (None: never).
        publish: called with :meth:`state` after every decision (the metrics).
        clock: seconds (monotonic); replaceable for tests.
    """

    def __init__(self, runtime: Runtime, slo: SLO | None, *, floor_accuracy: float | None = None,
                 monitor_fraction: float = 0.0, backlog: int | None = None,
                 publish: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        m = runtime.manifest
        self.runtime = runtime
        self.controller = SLOController(front_points(m), slo, floor_accuracy=floor_accuracy) if slo else None
        if slo is not None and slo.kind == "energy_mj" and runtime.meter is None:
            raise ConfigError(f"--slo {slo}: an energy objective needs an energy meter (--meter)")
        final = m.calibration.final_exit_accuracy if m.calibration is not None else None
        self.monitor = AccuracyMonitor(monitor_fraction, final)
        self.floor_accuracy = floor_accuracy
        self.backlog = backlog
        self.publish = publish
        self.clock = clock
        self._lock = threading.Lock()
        self._policies: dict[int, ExitPolicy] = {}
        self.fallbacks = 0

    # -- request side (event loop) --------------------------------------------------------------------------------
    def current(self) -> tuple[Hashable, ExitPolicy] | None:
        """(batching key, policy) of the current operating point; None without a controller."""
        if self.controller is None:
            return None
        with self._lock:
            i = self.controller.index
            pol = self._policies.get(i)
            if pol is None:
                pol = self._policies[i] = self.runtime.make_policy(None, list(self.controller.points[i].thresholds))
        return (ADAPTIVE, i), pol

    # -- worker side (after each micro-batch) ---------------------------------------------------------------------
    def after_batch(self, x: np.ndarray, result: InferenceResult, requests: Sequence[Any], queued: int) -> None:
        """Feed the controller (requests' latencies, or energy) and the monitor (a sample re-run to the final exit)."""
        key = requests[0].key if requests else None
        index = key[1] if isinstance(key, tuple) and len(key) == 2 and key[0] == ADAPTIVE else None
        now = self.clock()
        ctl = self.controller
        with self._lock:
            if ctl is not None and index is not None:
                if ctl.slo.kind == "p95_latency_ms":
                    for r in requests:
                        ctl.observe(1e3 * float(np.max(r.latency)), now=now)
                elif result.sample_energy_j is not None:
                    for e in np.asarray(result.sample_energy_j).reshape(-1):
                        ctl.observe(1e3 * float(e), now=now)
                if self.backlog is not None and queued >= self.backlog:
                    ctl.backlog(now=now)
                ctl.step(now=now)
        if self.monitor.fraction > 0 and (index is not None or ctl is None):
            self._check(x, result, -1 if index is None else index, now)
        if self.publish is not None:
            self.publish(self.state())

    def _check(self, x: np.ndarray, result: InferenceResult, index: int, now: float) -> None:
        picked = np.flatnonzero(self.monitor.sample(len(x)))
        if not len(picked):
            return
        last = self.runtime.num_exits - 1
        early = picked[result.exit_index[picked] < last]
        agree = np.ones(len(picked), dtype=bool)  # answered by the final exit: agreement by definition
        if len(early):
            full = self.runtime.infer(batch_feeds(self.runtime, x[early]), mode="full").predictions
            agree[np.searchsorted(picked, early)] = result.predictions[early] == full
        with self._lock:
            self.monitor.record(index, agree)
            ctl = self.controller
            if ctl is None or self.floor_accuracy is None or index < 0:
                return
            est = self.monitor.accuracy_estimate(index, ctl.points[index])
            if est is not None and est < self.floor_accuracy and index == ctl.index:
                ctl.block(index, now=now)  # live accuracy fell below the floor: safer thresholds for a while
                self.fallbacks += 1

    # -- reporting ------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-ready: the controller's state and the monitor's live figures at the point in use."""
        with self._lock:
            ctl = self.controller
            out: dict[str, Any] = ctl.state() if ctl is not None else {
                "slo": None, "thresholds": list(self.runtime.default_policy.thresholds)}
            index = ctl.index if ctl is not None else -1
            point = ctl.point if ctl is not None else (self.runtime.manifest.calibration.chosen
                                                      if self.runtime.manifest.calibration is not None else None)
            agree, n = self.monitor.agreement(index)
            out.update({"adaptive": ctl is not None, "monitor_fraction": self.monitor.fraction,
                        "live_agreement": agree, "live_checked": n, "monitor_checked_total": self.monitor.checked,
                        "live_accuracy_estimate": self.monitor.accuracy_estimate(index, point)
                        if point is not None else None, "fallbacks": self.fallbacks,
                        "per_point": {str(i): {"agreement": a, "checked": k,
                                               "accuracy_estimate": self.monitor.accuracy_estimate(i, ctl.points[i])
                                               if ctl is not None and i >= 0 else None}
                                      for i in self.monitor.points()
                                      for a, k in [self.monitor.agreement(i)]}})
        return out


class SLORuntime:
    """An SLO for a :class:`~edge_runtime.runtime.Runtime` used as a library: :meth:`infer` runs early exit at the
    controller's operating point and reports the call's latency (or energy, with a meter) to it.

    Example:
        >>> rt = edge_runtime.load_bundle("out/branchynet_resnet")                       # doctest: +SKIP
        >>> slo = SLORuntime(rt, "p95_latency_ms=2", floor_accuracy=0.97)               # doctest: +SKIP
        >>> slo.infer(x).predictions; slo.controller.state()["thresholds"]              # doctest: +SKIP
    """

    def __init__(self, runtime: Runtime, slo: str | SLO, *, floor_accuracy: float | None = None,
                 clock: Callable[[], float] = time.monotonic, **controller_options: Any) -> None:
        self.runtime = runtime
        self.slo = slo if isinstance(slo, SLO) else SLO.parse(slo)
        if self.slo.kind == "energy_mj" and runtime.meter is None:
            raise ConfigError(f"--slo {self.slo}: an energy objective needs an energy meter (load_bundle(meter=...))")
        self.controller = SLOController(front_points(runtime.manifest), self.slo, floor_accuracy=floor_accuracy,
                                        **controller_options)
        self.clock = clock
        self._policies: dict[int, ExitPolicy] = {}

    def infer(self, x: Any) -> InferenceResult:
        """One call at the current operating point; its cost goes to the controller."""
        i = self.controller.index
        pol = self._policies.get(i)
        if pol is None:
            pol = self._policies[i] = self.runtime.make_policy(None, list(self.controller.points[i].thresholds))
        res = self.runtime.infer(x, policy=pol)
        now = self.clock()
        if self.slo.kind == "p95_latency_ms":
            self.controller.observe(1e3 * res.latency_s, now=now)
        elif res.energy_j is not None:
            self.controller.observe(1e3 * res.energy_j / max(len(res), 1), now=now)
        self.controller.step(now=now)
        return res
