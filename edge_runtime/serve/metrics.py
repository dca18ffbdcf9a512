"""Prometheus metrics of the daemon (prometheus-client), one registry per app."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge_runtime.runtime import InferenceResult

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Every metric the daemon exports at ``/metrics``.

    Metric names all start with ``edge_runtime_``: ``http_requests_total{route,status}``,
    ``request_latency_seconds{route}``, ``inference_requests_total{model,status}``,
    ``inference_latency_seconds{model}``, ``exits_total{model,exit}``,
    ``segment_latency_seconds{model,segment}``, ``batch_size{model}`` (samples per micro-batch),
    ``batch_requests{model}``, ``energy_joules_total{model,source}``, ``model_loads_total{model,result}``,
    ``queue_samples{model}``, ``model_info{model,version}``; with an SLO or the accuracy monitor:
    ``operating_point{model}``, ``operating_point_info{model,thresholds}``,
    ``operating_point_expected_accuracy{model}``, ``slo_target{model,kind}``, ``slo_observed{model,kind}``,
    ``live_agreement{model}``, ``live_accuracy_estimate{model}``, ``monitor_checked_samples{model}``.

    Example:
        >>> m = ServeMetrics()
        >>> b"edge_runtime_model_loads_total" in m.render()[0]
        True
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "edge_runtime_"
        self.http_requests = Counter(p + "http_requests_total", "HTTP requests by route and status",
                                     ["route", "status"], registry=r)
        self.http_latency = Histogram(p + "request_latency_seconds", "HTTP request latency by route", ["route"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.infer_requests = Counter(p + "inference_requests_total", "inference requests by model and status",
                                      ["model", "status"], registry=r)
        self.infer_latency = Histogram(p + "inference_latency_seconds",
                                       "server-side latency until a request's last sample exited", ["model"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.exits = Counter(p + "exits_total", "samples answered per exit", ["model", "exit"], registry=r)
        self.segment_latency = Histogram(p + "segment_latency_seconds", "wall time per segment run",
                                         ["model", "segment"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(p + "batch_size", "samples per micro-batch", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram(p + "batch_requests", "requests per micro-batch", ["model"],
                                        buckets=_BATCH_BUCKETS, registry=r)
        self.energy = Counter(p + "energy_joules_total", "energy attributed to inference by meter source",
                              ["model", "source"], registry=r)
        self.loads = Counter(p + "model_loads_total", "model load attempts by result (ok/failed)",
                             ["model", "result"], registry=r)
        self.queue = Gauge(p + "queue_samples", "samples waiting for a micro-batch", ["model"], registry=r)
        self.info = Gauge(p + "model_info", "1 for the version each model name serves now",
                          ["model", "version"], registry=r)
        self.operating_point = Gauge(p + "operating_point", "index of the operating point in use on the calibrated "
                                     "front (0 = most accurate; -1 = the bundle's fixed thresholds)", ["model"],
                                     registry=r)
        self.operating_point_info = Gauge(p + "operating_point_info", "1 for the thresholds in use now",
                                          ["model", "thresholds"], registry=r)
        self.expected_accuracy = Gauge(p + "operating_point_expected_accuracy",
                                       "calibrated accuracy of the operating point in use", ["model"], registry=r)
        self.slo_target = Gauge(p + "slo_target", "the service-level objective", ["model", "kind"], registry=r)
        self.slo_observed = Gauge(p + "slo_observed", "the objective's value in the last window (p95 ms or mJ)",
                                  ["model", "kind"], registry=r)
        self.live_agreement = Gauge(p + "live_agreement", "share of monitored samples answered as the final exit "
                                    "answers them (operating point in use)", ["model"], registry=r)
        self.live_accuracy = Gauge(p + "live_accuracy_estimate", "live accuracy estimate at the operating point in "
                                   "use, from the monitored agreement", ["model"], registry=r)
        self.monitor_checked = Gauge(p + "monitor_checked_samples", "samples re-run to the final exit so far",
                                     ["model"], registry=r)
        self._thresholds: dict[str, str] = {}

    def observe_batch(self, model: str, result: InferenceResult, requests: int) -> None:
        """Record one micro-batch run (called from the model's worker thread)."""
        self.batch_size.labels(model).observe(len(result))
        self.batch_requests.labels(model).observe(requests)
        for seg, (lat, size) in enumerate(zip(result.segment_latency_s, result.segment_batch_size)):
            if size > 0:
                self.segment_latency.labels(model, str(seg)).observe(float(lat))
        for exit_i, count in enumerate(np.bincount(result.exit_index)):
            if count:
                self.exits.labels(model, str(exit_i)).inc(int(count))
        if result.energy_j is not None:
            self.energy.labels(model, result.energy_source or "unknown").inc(float(result.energy_j))

    def observe_operating_point(self, model: str, state: dict) -> None:
        """Publish an :class:`edge_runtime.serve.adaptive.AdaptiveModel` state (after each of its decisions)."""
        self.operating_point.labels(model).set(state.get("index", -1))
        thr = ",".join(f"{t:.6g}" for t in state.get("thresholds") or [])
        old = self._thresholds.get(model)
        if old is not None and old != thr:
            self.operating_point_info.remove(model, old)
        self._thresholds[model] = thr
        self.operating_point_info.labels(model, thr).set(1)
        for gauge, key in ((self.expected_accuracy, "expected_accuracy"), (self.live_agreement, "live_agreement"),
                           (self.live_accuracy, "live_accuracy_estimate"),
                           (self.monitor_checked, "monitor_checked_total")):
            if state.get(key) is not None:
                gauge.labels(model).set(float(state[key]))
        if state.get("slo_kind"):
            self.slo_target.labels(model, state["slo_kind"]).set(float(state["slo_target"]))
            if state.get("last_observed") is not None:
                self.slo_observed.labels(model, state["slo_kind"]).set(float(state["last_observed"]))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
