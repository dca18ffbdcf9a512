"""Start the real daemon in a subprocess on a free loopback port, and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """``python -m edge_runtime serve ...`` on a free port; ``client`` is an httpx client for it."""

    def __init__(self, models: list[str], *args: str, env: dict[str, str] | None = None, token: str | None = None,
                 startup_s: float = 60.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "EDGE_RUNTIME_TOKEN")}
        full_env.update(env or {})
        full_env.setdefault("EDGE_RUNTIME_THREADS", "1")
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"edge-runtime-serve-{self.port}.log"
        self._log_fh = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", *models, "--port", str(self.port), *args],
            stdout=self._log_fh, stderr=subprocess.STDOUT, env=full_env,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daemon not ready after {startup_s} s:\n{self.output()}")

    def output(self) -> str:
        self._log_fh.flush()
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log_fh.close()
        return int(self.proc.returncode)
