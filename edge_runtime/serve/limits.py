"""Connection limits uvicorn does not have: a deadline for a request's headers and a cap on their size.

uvicorn times out idle keep-alive connections but not a client that opens a connection and sends its headers
slowly (or never finishes them), and with httptools it accepts headers of any size; a Pi would run out of
connections or memory. :func:`limited_protocol` returns uvicorn's HTTP protocol class with both limits: the
headers of every request must arrive within ``header_timeout_s`` of its first byte (of the connection, for the
first request), else ``408`` and close; more than ``max_header_bytes`` before the end of the headers gets ``431``
and close; a request on a connection beyond the first ``max_connections`` gets ``503``. Stalled bodies are
answered by the app (``408``, :mod:`edge_runtime.serve.app`).

The connection cap replaces uvicorn's own ``limit_concurrency`` check, which also counts request tasks: a
keep-alive client's next request can arrive while the task that answered its previous one is still finishing,
so 32 well-behaved clients could momentarily count as 64 and get a spurious 503 under load. A connection carries
one request at a time (uvicorn queues pipelined ones), so capping connections caps the requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("edge_runtime.serve")


def _reply(status: bytes, message: str) -> bytes:
    body = json.dumps({"error": message, "field": "headers", "expected": None}).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


def limited_protocol(header_timeout_s: float, max_header_bytes: int, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a header deadline, a header size cap and a connection cap.

    Raises:
        ImportError: httptools (the ``serve`` extra) is not installed; the caller falls back to h11, whose own
            ``h11_max_incomplete_event_size`` caps the headers.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """HttpToolsProtocol + a deadline for each request's headers, a cap on their size, a connection cap."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            self._in_headers = True  # until the first request's headers are complete
            self._refused = False

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _refuse(self, status: bytes, message: str) -> None:
            self._refused = True
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_reply(status, message))
                self.transport.close()

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._in_headers and not self._refused:
                log.warning("closing a connection from %s: headers not complete within %s s", self.client,
                            header_timeout_s)
                self._refuse(b"408 Request Timeout", f"request headers not complete within {header_timeout_s} s")

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            was_in_headers = self._in_headers
            if was_in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if not was_in_headers and self._in_headers:  # a new request began inside this chunk
                self._header_bytes += len(data)
            if self._in_headers and self._header_bytes > max_header_bytes and not self._refused:
                log.warning("closing a connection from %s: request headers over %d bytes", self.client,
                            max_header_bytes)
                self._refuse(b"431 Request Header Fields Too Large",
                             f"request headers larger than {max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:  # the next request on a kept-alive connection: a new deadline
                self._in_headers, self._header_bytes = True, 0
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            if self._refused:
                return
            # uvicorn answers 503 when len(connections) or len(tasks) >= limit_concurrency: 0 makes this request
            # one of those, None skips the check (see the module docstring for why tasks must not count)
            self.limit_concurrency = 0 if len(self.connections) > max_connections else None
            super().on_headers_complete()

    return LimitedHttpToolsProtocol
