"""Connection guards with real sockets: header size (431), header time (408), connection cap (503).

Most run against a real ``convtrack serve`` process. The memory test runs the
same uvicorn server with the same protocol in this process, so that it can
measure what the server allocates for headers it is sent (tracemalloc), not
a resident size that moves with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from convtrack.clock import SystemClock
from convtrack.collect.protocol import ConnectionLimits, GuardedHttpToolsProtocol, guarded_protocol
from convtrack.config import load_settings
from convtrack.errors import ConfigError
from convtrack.runtime.embedded import Pipeline
from tests.conftest import WRITE_KEY, ServerFactory, ServerProcess, auth, free_port
from tests.support.inprocess import make_pipeline

REQUEST_START = b"GET /healthz HTTP/1.1\r\nHost: test\r\n"


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, json.loads(body)


def serve_with(server_factory: ServerFactory, **settings: str) -> ServerProcess:
    env = {f"CONVTRACK_SERVER_{name.upper()}": value for name, value in settings.items()}
    server = server_factory(env)
    server.start()
    return server


def test_headers_over_the_cap_get_431_at_the_cap(server_factory: ServerFactory) -> None:
    server = serve_with(server_factory, max_header_bytes="4096", header_timeout_secs="30")
    with connect(server.port) as sock:
        # One byte over the cap, then nothing: the answer cannot wait for more to buffer.
        sock.sendall(REQUEST_START + b"X-Big: " + b"a" * (4097 - len(REQUEST_START) - 7))
        status, headers, body = answer(read_until_closed(sock))
    assert status == 431
    assert headers["connection"] == "close"
    assert body == {"error": "headers_too_large", "limit_bytes": 4096}
    # At the cap exactly, the request is served.
    with connect(server.port) as sock:
        filler = 4096 - len(REQUEST_START) - len(b"X-Fill: \r\nConnection: close\r\n\r\n")
        sock.sendall(REQUEST_START + b"X-Fill: " + b"b" * filler + b"\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


def test_twenty_50_mb_headers_are_refused_while_requests_are_served(
    server_factory: ServerFactory,
) -> None:
    server = serve_with(server_factory)
    statuses: list[int] = []
    chunk = b"a" * 65536

    def send_huge_header() -> None:
        with connect(server.port) as sock:
            sock.sendall(REQUEST_START + b"X-Huge: ")
            sent = 0
            try:
                while sent < 50 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused: the server stopped reading after its answer
            status, _, _ = answer(read_until_closed(sock))
            statuses.append(status)

    threads = [threading.Thread(target=send_huge_header) for _ in range(20)]
    for thread in threads:
        thread.start()
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    for thread in threads:
        thread.join(60)
    assert statuses == [431] * 20
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'convtrack_http_requests_total{route="other",status="431"} 20.0' in metrics


def test_a_dripping_connection_is_answered_408_and_closed(server_factory: ServerFactory) -> None:
    server = serve_with(server_factory, header_timeout_secs="1")
    with connect(server.port) as sock:
        sock.sendall(REQUEST_START)
        sock.settimeout(0.2)
        closed = b""
        for line in range(200):  # a header line every 0.2 s: 40 s at most, far past the limit
            try:
                sock.sendall(f"X-Drip-{line}: x\r\n".encode())
                closed = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break
        sock.settimeout(15)
        raw = closed + read_until_closed(sock)
    status, headers, body = answer(raw)
    assert (status, headers["connection"]) == (408, "close")
    assert body["error"] == "request_timeout"
    # A connection that never sends a byte is closed too, without an answer.
    with connect(server.port) as idle:
        assert read_until_closed(idle) == b""


def test_requests_are_served_while_many_slow_connections_are_open(
    server_factory: ServerFactory,
) -> None:
    server = serve_with(server_factory, header_timeout_secs="60", max_connections="1000")
    slow = [connect(server.port) for _ in range(300)]
    try:
        for sock in slow:
            sock.sendall(REQUEST_START + b"X-Slow: ")
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        event = {"event_name": "Purchase", "user_id": "u1", "value": 100, "currency": "USD"}
        track = httpx.post(server.url + "/v1/track", json=event, headers=auth(WRITE_KEY))
        assert track.status_code == 202
    finally:
        for sock in slow:
            sock.close()


def test_connections_past_the_cap_get_503_and_the_cap_frees(
    server_factory: ServerFactory,
) -> None:
    server = serve_with(server_factory, header_timeout_secs="60", max_connections="5")
    held = [connect(server.port) for _ in range(5)]
    for sock in held:
        # A first request answered proves the connection admitted; the second is left unfinished.
        sock.sendall(REQUEST_START + b"\r\n")
        assert read_one_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(REQUEST_START)
    with connect(server.port) as extra:
        extra.sendall(REQUEST_START + b"\r\n")
        status, headers, body = answer(read_until_closed(extra))
    assert (status, headers["retry-after"], body["error"]) == (503, "1", "unavailable")
    for sock in held:
        sock.sendall(b"Connection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200")
        sock.close()
    # Freed: new connections are admitted again (the server learns of the closes as they land).
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(server.url + "/healthz", timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
    assert response.status_code == 200


class InProcessServer:
    """uvicorn with the guarded protocol on a real socket, on a thread of this process."""

    def __init__(self, pipeline: Pipeline, limits: ConnectionLimits) -> None:
        self.port = free_port()
        self.protocol = guarded_protocol(limits, lambda status: None)
        config = uvicorn.Config(
            pipeline.app, host="127.0.0.1", port=self.port, http=self.protocol,
            lifespan="off", access_log=False, log_config=None,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()))

    def connections(self) -> list[GuardedHttpToolsProtocol]:
        return [c for c in self.server.server_state.connections if isinstance(c, self.protocol)]

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    made = make_pipeline(tmp_path, SystemClock())
    try:
        yield made
    finally:
        made.close()


def test_header_memory_does_not_grow_with_what_is_sent(pipeline: Pipeline) -> None:
    limits = ConnectionLimits(max_header_bytes=16_384, header_timeout_secs=60, max_connections=100)
    megabyte = b"a" * (1024 * 1024)
    with InProcessServer(pipeline, limits) as server:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            socks = [connect(server.port) for _ in range(20)]
            for sock in socks:
                sock.sendall(REQUEST_START + b"X-Big: ")
            # 20 connections each sending 1 MB of one header line: each is refused at the cap.
            for sock in socks:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(megabyte)
            statuses = [answer(read_until_closed(sock))[0] for sock in socks]
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        for sock in socks:
            sock.close()
        assert statuses == [431] * 20
        # Unguarded, httptools would hold 20 MB of header (and copies of it) here.
        assert peak < 8 * 1024 * 1024, peak
        for connection in server.connections():
            assert connection.header_bytes <= limits.max_header_bytes


def test_bytes_held_for_incomplete_headers_stay_under_the_cap(pipeline: Pipeline) -> None:
    limits = ConnectionLimits(max_header_bytes=8192, header_timeout_secs=60, max_connections=100)
    with InProcessServer(pipeline, limits) as server:
        socks = [connect(server.port) for _ in range(20)]
        try:
            for sock in socks:
                sock.sendall(REQUEST_START + b"X-Almost: " + b"a" * 8000)
            deadline = time.monotonic() + 10
            while sum(c.header_bytes for c in server.connections()) < 20 * 8000:
                assert time.monotonic() < deadline, "the server did not read the headers"
                time.sleep(0.01)
            assert all(c.header_bytes <= 8192 for c in server.connections())
            assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_header_bytes", 100), ("header_timeout_secs", 0), ("max_connections", 0)],
)
def test_guard_settings_out_of_range_are_named(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"server.{name}"):
        load_settings(environ={}, overrides={"server": {name: value}})
    with pytest.raises(ConfigError, match=f"CONVTRACK_SERVER_{name.upper()}"):
        load_settings(environ={f"CONVTRACK_SERVER_{name.upper()}": str(value)})


def test_guard_settings_defaults() -> None:
    server = load_settings(environ={}).server
    assert (server.max_header_bytes, server.header_timeout_secs, server.max_connections) == (
        16_384,
        10.0,
        2048,
    )
