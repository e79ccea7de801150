"""uvicorn's httptools protocol with the guards it lacks: header size, header time, connections.

httptools accumulates a request line and header fields for as long as they
come, and uvicorn sets no deadline for them: 20 requests with a 50 MB header
each grew the process by 400 MB, and 2,000 connections dripping a header line
every 2 s were held open for ever. Here, per connection:

- the bytes handed to the parser before the headers are complete are counted,
  and past ``max_header_bytes`` the request is answered 431 without reading
  (or buffering) any more of it;
- a connection that has not sent a complete request line and headers within
  ``header_timeout_secs`` of connecting (or of the first byte of its next
  request) is answered 408, or simply closed when it sent nothing at all;
- past ``max_connections`` open connections, a new one is answered 503 with
  ``Retry-After`` at once, before the server reads or parses anything of it.

Refusals are "lingering" closes: the answer is written, the sending half shut,
and whatever the client still sends is read and dropped for a moment, so that
the client reads the answer instead of a reset from a close with unread data.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from typing import Any, ClassVar, Final, NamedTuple

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from convtrack.model import codes

# How long a refused connection is read (and the bytes dropped) before it is closed.
LINGER_SECS: Final = 2.0
_encode = msgspec.json.Encoder().encode


class ConnectionLimits(NamedTuple):
    max_header_bytes: int
    header_timeout_secs: float
    max_connections: int


class ServerGuard:
    """One server's limits, and the connections it has admitted; shared by its connections."""

    def __init__(self, limits: ConnectionLimits, on_refusal: Callable[[int], None]) -> None:
        self.limits = limits
        self.on_refusal = on_refusal  # told the status of every refusal (431, 408, 503)
        self.admitted = 0

    def admit(self) -> bool:
        if self.admitted >= self.limits.max_connections:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1


def refusal(status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, written without the app."""
    content = _encode(body)
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}".encode()]
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
        *extra,
    ]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + content


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection; ``guarded_protocol`` makes the subclass that holds a server's limits."""

    guard: ClassVar[ServerGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_headers = True  # no complete request line and headers yet
        self.header_bytes = 0  # bytes handed to the parser while awaiting them
        self._admitted = False
        self._lingering = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._admitted = self.guard.admit()
        if not self._admitted:
            body = {"error": codes.ERR_UNAVAILABLE, "message": "too many connections"}
            self._refuse(503, body, [(b"retry-after", b"1")])
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._admitted:
            self._admitted = False
            self.guard.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # a refused connection: read and dropped until it closes
        # While the headers are incomplete, feed the parser no more than the cap allows.
        while data and self.awaiting_headers and not self.transport.is_closing():
            room = self.guard.limits.max_header_bytes - self.header_bytes
            if room <= 0:
                body = {
                    "error": codes.ERR_HEADERS_TOO_LARGE,
                    "limit_bytes": self.guard.limits.max_header_bytes,
                }
                self._refuse(431, body, [])
                return
            piece, data = data[:room], data[room:]
            self.header_bytes += len(piece)
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def shutdown(self) -> None:
        if self._lingering:
            self.transport.close()
            return
        super().shutdown()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # the time limit runs from a request's first byte

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self.header_bytes = 0
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_headers = True  # what comes next is the next request's headers

    # Guards

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.guard.limits.header_timeout_secs, self._header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self.awaiting_headers:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still going out (the next request came early): finish it, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if self.cycle is None and self.header_bytes == 0:
            self.guard.on_refusal(408)
            self.transport.close()  # connected and sent nothing: no one to answer
            return
        message = f"no complete headers within {self.guard.limits.header_timeout_secs:g} s"
        self._refuse(408, {"error": codes.ERR_REQUEST_TIMEOUT, "message": message}, [])

    def _refuse(self, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
        self.guard.on_refusal(status)
        self._cancel_header_timer()
        self._lingering = True
        self.flow.resume_reading()
        self.transport.write(refusal(status, body, extra))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECS, self.transport.close)
        else:
            self.transport.close()


def guarded_protocol(
    limits: ConnectionLimits, on_refusal: Callable[[int], None]
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class of one server (uvicorn's ``http=``): its limits and its admission."""
    guard = ServerGuard(limits, on_refusal)
    return type("ServerHttpProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})
