"""The daemon's settings: one frozen dataclass, filled from command-line flags."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime import _env
from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """Settings of ``edge-runtime serve``.

    Attributes:
        host: address to bind; loopback unless told otherwise.
        port: TCP port.
        max_batch_size: most samples one micro-batch gathers (1 turns micro-batching off).
        max_wait_ms: longest a request waits for others to join its micro-batch.
        max_queue: most samples waiting per model; beyond it requests get 503 + Retry-After.
        timeout_s: per-request timeout (504 after it).
        max_body_bytes: request body limit (413 above it).
        token: bearer token required on every route but the health probes; None = no auth.
        backend: inference backend name (None: the profile's, else onnxruntime).
        threads: backend threads per model (None: ``EDGE_RUNTIME_THREADS``, the profile's, the backend's).
        precision: precision variant to run (None: the profile's preference when the bundle has it).
        profile: device profile name/path or ``auto`` (None: ``EDGE_RUNTIME_PROFILE``).
        meter: energy meter spec (``auto``, ``estimate``, ``ina219:bus=1``...); None = no energy figures.
        drain_s: how long a graceful shutdown waits for in-flight requests.
        retry_after_s: the ``Retry-After`` value sent with 503.
        log_level: uvicorn's log level.
        header_timeout_s: a request's headers must arrive within this (408 and close after it).
        body_timeout_s: longest wait for the next piece of a request body (408 after it).
        max_header_bytes: request line + headers limit (431 and close above it).
        max_connections: concurrent connections (and requests in flight); more get 503.
        slo: a service-level objective, ``p95_latency_ms=5`` or ``energy_mj=2`` (None: fixed thresholds); requests
            without their own policy then run at the operating point a controller picks from the calibrated front.
        floor_accuracy: the lowest calibrated accuracy (a fraction) the controller may use, and the live accuracy
            estimate below which it falls back to safer thresholds.
        monitor_fraction: share of samples also run to the final exit to estimate live agreement/accuracy.

    Example:
        >>> ServeConfig(port=9000, max_batch_size=16).host
        '127.0.0.1'
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    timeout_s: float = 10.0
    max_body_bytes: int = 8 << 20
    token: str | None = field(default=None, repr=False)
    backend: str | None = None
    threads: int | None = None
    precision: str | None = None
    profile: str | None = None
    meter: str | None = None
    drain_s: float = 20.0
    retry_after_s: int = 1
    log_level: str = "warning"
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_header_bytes: int = 16 << 10
    max_connections: int = 64
    slo: str | None = None
    floor_accuracy: float | None = None
    monitor_fraction: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "max_batch_size": self.max_batch_size >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_queue": self.max_queue >= 1,
            "timeout_s": self.timeout_s > 0,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "drain_s": self.drain_s >= 0,
            "retry_after_s": self.retry_after_s >= 0,
            "header_timeout_s": self.header_timeout_s > 0,
            "body_timeout_s": self.body_timeout_s > 0,
            "max_header_bytes": 1024 <= self.max_header_bytes <= 1 << 20,
            "max_connections": self.max_connections >= 1,
            "monitor_fraction": 0.0 <= self.monitor_fraction <= 1.0,
            "floor_accuracy": self.floor_accuracy is None or 0.0 < self.floor_accuracy <= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"serve settings out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.slo is not None:
            from edge_runtime.serve.controller import SLO

            SLO.parse(self.slo)  # a bad objective fails at start-up, naming the flag
        if self.max_queue < self.max_batch_size:
            raise ConfigError(f"max_queue ({self.max_queue}) must be >= max_batch_size ({self.max_batch_size})")

    def token_matches(self, presented: str | None) -> bool:
        """Constant-time comparison of a presented bearer token with the configured one."""
        if self.token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())


def resolve_token(token_file: str | None) -> str | None:
    """The bearer token: from ``token_file`` when given, else ``EDGE_RUNTIME_TOKEN``, else None.

    Raises:
        ConfigError: the file is missing, unreadable or empty.
    """
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {path}: cannot read ({exc.strerror})") from None
        if not token:
            raise ConfigError(f"--token-file {path}: file is empty; expected one token")
        return token
    return _env.api_token()
