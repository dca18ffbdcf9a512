"""``edge-runtime serve BUNDLE...``: the inference daemon (KServe v2-style HTTP API, micro-batching, metrics)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_runtime.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve bundles over HTTP (the device daemon)",
                       description="Serve one or more bundles with a KServe v2 / Triton-style HTTP API: "
                                   "micro-batched early exit, Prometheus /metrics, hot reload on SIGHUP or "
                                   "POST /v2/repository/models/NAME/load, systemd notify, graceful drain on SIGTERM.")
    p.add_argument("bundles", nargs="+", metavar="[NAME=]BUNDLE",
                   help="bundle directory, optionally named (default name: the manifest's 'name')")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--max-batch-size", type=int, default=32,
                   help="most samples per micro-batch; 1 turns micro-batching off (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="longest a request waits for others to join its micro-batch (default 2 ms)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="most samples waiting per model before requests get 503 + Retry-After (default 256)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds; 504 after it")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="request body limit in MiB; 413 above it")
    p.add_argument("--token-file", help="file holding the bearer token (default: EDGE_RUNTIME_TOKEN; none = no auth)")
    p.add_argument("--backend", help="inference backend (default: the profile's, else onnxruntime)")
    p.add_argument("--threads", type=int, help="backend threads per model (default: EDGE_RUNTIME_THREADS/profile)")
    p.add_argument("--precision", help="precision variant to run, e.g. fp32, int8 (default: the profile's or fp32)")
    p.add_argument("--profile", help="device profile name, YAML path or 'auto' (default: EDGE_RUNTIME_PROFILE)")
    p.add_argument("--meter", help="energy meter: auto, estimate, powercap, ina219:bus=1,... "
                                   "(default: none; answers then carry energy_j = null)")
    p.add_argument("--slo", metavar="KIND=VALUE",
                   help="service-level objective: p95_latency_ms=5 or energy_mj=2; requests without their own "
                        "policy then run at the operating point a controller picks from the calibrated front")
    p.add_argument("--floor-accuracy", type=float,
                   help="lowest calibrated accuracy (a fraction, e.g. 0.97) the SLO controller may use; with the "
                        "monitor, the live estimate below which it falls back to safer thresholds")
    p.add_argument("--monitor-fraction", type=float, default=None,
                   help="share of samples also run to the final exit to estimate live agreement/accuracy "
                        "(default 0.02 with --slo, else 0)")
    p.add_argument("--drain", type=float, default=20.0,
                   help="seconds a graceful shutdown (SIGTERM) waits for in-flight requests (default 20)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request's headers; 408 and close after (default 10)")
    p.add_argument("--body-timeout", type=float, default=10.0,
                   help="longest wait in seconds for the next piece of a request body; 408 after (default 10)")
    p.add_argument("--max-header-kb", type=float, default=16.0,
                   help="request line + headers limit in KiB; 431 and close above it (default 16)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="concurrent connections (and requests in flight); more get 503 (default 64)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="log level (default warning)")
    p.set_defaults(func=run)


def parse_models(specs: list[str]) -> dict[str, Path]:
    """['tiny=out/t', 'out/u'] -> {'tiny': Path('out/t'), '<manifest name of u>': Path('out/u')}."""
    from edge_runtime.bundle import read_bundle

    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            name = read_bundle(path, verify_hashes=False).name
        if not name or "/" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise ConfigError(f"bundle argument {spec!r}: expected NAME=PATH or PATH with a name without '/' or "
                              "control characters")
        if name in models:
            raise ConfigError(f"bundle argument {spec!r}: model name {name!r} given twice")
        models[name] = Path(path)
    return models


def run(args: argparse.Namespace) -> int:
    from edge_runtime.serve import ServeConfig, resolve_token, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServeConfig(
        host=args.host, port=args.port, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, timeout_s=args.timeout, max_body_bytes=int(args.max_body_mb * (1 << 20)),
        token=resolve_token(args.token_file), backend=args.backend, threads=args.threads, precision=args.precision,
        profile=args.profile, meter=args.meter, drain_s=args.drain, log_level=args.log_level,
        header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
        max_header_bytes=int(args.max_header_kb * 1024), max_connections=args.max_connections, slo=args.slo,
        floor_accuracy=args.floor_accuracy,
        monitor_fraction=args.monitor_fraction if args.monitor_fraction is not None else (0.02 if args.slo else 0.0),
    )
    return serve(parse_models(args.bundles), config)
