"""The systemd notify protocol (sd_notify): READY, WATCHDOG, RELOADING, STOPPING, STATUS datagrams."""

from __future__ import annotations

import logging
import os
import socket
import time

from edge_runtime import _env

log = logging.getLogger("edge_runtime.serve")


class Notifier:
    """Sends notify messages to ``NOTIFY_SOCKET`` when systemd set it; does nothing otherwise.

    Args:
        socket_path: the AF_UNIX datagram socket (``@name`` = abstract namespace); None reads
            ``NOTIFY_SOCKET`` through :mod:`edge_runtime._env`.

    Example:
        >>> n = Notifier(socket_path=None)      # outside systemd: a no-op
        >>> n.ready("serving 1 model")          # doctest: +SKIP
    """

    def __init__(self, socket_path: str | None = None) -> None:
        self.socket_path = socket_path if socket_path is not None else _env.notify_socket()
        self.watchdog_s = _env.watchdog_interval_s() if self.socket_path else None
        self.sent: list[str] = []

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    def send(self, message: str) -> bool:
        """Send one datagram; returns False (and logs) when there is no socket or sending failed."""
        if not self.socket_path:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(f"READY=1\nMAINPID={os.getpid()}" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")
