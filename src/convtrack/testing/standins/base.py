"""A stand-in platform server on a free port, with a fault plan.

A subclass implements ``check`` (the platform's contract: returns the answer
for a request that reached the platform) and records what it accepted in
``accepted`` (event ids, in arrival order; a platform that deduplicates keeps
its own table too). Tests queue faults in ``plan``; each request takes the
next one before ``check`` runs:

- ``Answer(status, headers, body)``: answered as given, nothing accepted;
- ``Slow(secs)``: waits ``secs`` before answering normally (a client timeout);
- ``Hangup()``: closes the connection without an answer;
- ``After(fault)``: the request is checked and accepted normally, then the
  fault's answer replaces the platform's (a lost acknowledgement).

``latency_secs`` (0 by default) makes every request take that long before the
platform checks it, like a real platform's 200-800 ms (benchmarks set it;
requests in flight together wait together).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Slow:
    secs: float


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class After:
    fault: Answer | Hangup


Fault = Answer | Slow | Hangup | After


class StandIn(ABC):
    """Subclass and implement ``check``; use as a context manager or call ``close``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plan: list[Fault] = []
        self.requests: list[Request] = []
        self.accepted: list[str] = []
        self.answers: list[int] = []
        self.latency_secs = 0.0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm the
            # body waits for the client's delayed ACK, ~40 ms on every answer.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=query,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                answer = standin.serve(request)
                if answer is None:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_POST = do_GET = do_PUT = _serve  # noqa: N815 (http.server names)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @abstractmethod
    def check(self, request: Request) -> Answer:
        """The platform's answer to a request that reached it (records what it accepted)."""

    def serve(self, request: Request) -> Answer | None:
        with self.lock:
            self.requests.append(request)
            fault = self.plan.pop(0) if self.plan else None
        if self.latency_secs > 0:
            time.sleep(self.latency_secs)
        if isinstance(fault, Slow):
            time.sleep(fault.secs)
            fault = None
        if isinstance(fault, Hangup):
            return None
        if isinstance(fault, Answer):
            self.answers.append(fault.status)
            return fault
        with self.lock:
            answer = self.check(request)
        if isinstance(fault, After):
            if isinstance(fault.fault, Hangup):
                return None
            answer = fault.fault
        self.answers.append(answer.status)
        return answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
