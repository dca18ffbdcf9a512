"""Run the daemon: uvicorn + signals (SIGHUP reload, SIGTERM drain) + systemd notify/watchdog."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import uvicorn

from edge_runtime.errors import ConfigError
from edge_runtime.serve.app import create_app
from edge_runtime.serve.config import ServeConfig
from edge_runtime.serve.limits import limited_protocol
from edge_runtime.serve.metrics import ServeMetrics
from edge_runtime.serve.notify import Notifier
from edge_runtime.serve.repository import ModelRepository

log = logging.getLogger("edge_runtime.serve")


class _Server(uvicorn.Server):
    """uvicorn's server plus READY after the sockets are bound, STOPPING + drain on SIGTERM/SIGINT,
    SIGHUP reloads, and watchdog pings from the event loop while every model worker is alive."""

    def __init__(self, config: uvicorn.Config, repo: ModelRepository, notifier: Notifier, app: Any) -> None:
        super().__init__(config)
        self.repo, self.notifier, self.fastapi = repo, notifier, app
        self._tasks: list[asyncio.Task] = []

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._track(loop.create_task(self._reload())))
        if self.notifier.watchdog_s:
            self._track(loop.create_task(self._watchdog(self.notifier.watchdog_s / 2)))
        names = ", ".join(f"{m.name}@{m.version}" for m in self.repo.all())
        host, port = self.config.host, self._bound_port()
        log.warning("edge-runtime serving %s on http://%s:%d", names, host, port)
        print(f"edge-runtime serve: listening on http://{host}:{port} ({names})", flush=True)
        self.notifier.ready(f"serving {names} on {host}:{port}")

    def _track(self, task: asyncio.Task) -> None:
        self._tasks = [t for t in self._tasks if not t.done()] + [task]

    def _bound_port(self) -> int:
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    async def _reload(self) -> None:
        self.notifier.reloading()
        errors = await asyncio.to_thread(self.repo.reload_all)
        failed = {k: v for k, v in errors.items() if v}
        status = "reload failed for " + ", ".join(failed) + "; serving the previous versions" if failed else \
            "reloaded " + ", ".join(f"{m.name}@{m.version}" for m in self.repo.all())
        self.notifier.send(f"READY=1\nSTATUS={status}")

    async def _watchdog(self, interval: float) -> None:
        while True:
            if self.repo.ready:
                self.notifier.watchdog()
            else:
                log.error("a model worker died; withholding the watchdog ping so systemd restarts us")
            await asyncio.sleep(interval)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self.fastapi.state.draining = True
            self.notifier.stopping()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: Any = None) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (RuntimeError, ValueError):
            pass
        await super().shutdown(sockets)
        drained = await asyncio.to_thread(self.repo.close, self.config.timeout_graceful_shutdown or 0)
        if not drained:
            log.error("some queued requests did not finish within the drain timeout")
        # a drained SIGTERM is a clean stop: exit 0 instead of uvicorn re-raising the signal
        self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def serve(models: dict[str, str | Path], config: ServeConfig | None = None, *,
          notifier: Notifier | None = None) -> int:
    """Load every bundle, then serve until SIGTERM/SIGINT; returns the exit code.

    Args:
        models: model name -> bundle directory.
        config: daemon settings (defaults: 127.0.0.1:8080, micro-batching on).
        notifier: systemd notifier (default: from ``NOTIFY_SOCKET``).

    Raises:
        EdgeRuntimeError: a bundle failed to load at start-up.

    Example:
        >>> serve({"tiny": "out/tiny_cnn"}, ServeConfig(port=8080))     # doctest: +SKIP
    """
    config = config or ServeConfig()
    notifier = notifier or Notifier()
    sock = listen(config.host, config.port)  # a busy port fails now, before the bundles load
    metrics = ServeMetrics()
    repo = ModelRepository({k: Path(v) for k, v in models.items()}, config, metrics)
    try:
        repo.load_all()
    except BaseException:
        sock.close()
        raise
    app = create_app(repo, config, metrics)
    try:
        http: Any = limited_protocol(config.header_timeout_s, config.max_header_bytes, config.max_connections)
    except ImportError:  # no httptools: h11, whose h11_max_incomplete_event_size caps the headers (no deadline)
        log.warning("httptools is not installed: request headers are size-capped but have no deadline")
        http = "h11"
    # uvicorn annotates timeout_graceful_shutdown as int, but uses it as an asyncio timeout: float seconds work
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                               access_log=False, timeout_graceful_shutdown=config.drain_s,  # type: ignore[arg-type]
                               lifespan="off", server_header=False, http=http,
                               limit_concurrency=config.max_connections,  # h11's cap; ours replaces it
                               h11_max_incomplete_event_size=config.max_header_bytes)
    server = _Server(uv_config, repo, notifier, app)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6).

    Raises:
        ConfigError: the address cannot be used (in use, not this machine's, a privileged port), one line.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sock = socket.create_server(infos[0][4][:2], family=infos[0][0], backlog=2048)
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); another "
                          "process may be using the port") from None
    sock.set_inheritable(True)
    return sock
