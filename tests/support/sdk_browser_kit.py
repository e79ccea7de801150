"""What the browser SDK's tests share: the build, Chromium, a counting proxy in
front of the collector and a second origin that serves the shop's pages."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "sdk" / "js"
BUILT = ROOT / "src" / "convtrack" / "collect" / "sdk" / "convtrack.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A person's Chrome: headless Chrome's own user agent says HeadlessChrome, a bot.
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


def build_sdk() -> Path:
    """Build the SDK the way the set-up does (dev.py build-sdk), or skip without Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the browser SDK needs Node.js and npm to build: apt-get install nodejs npm")
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "build-sdk"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return BUILT


def ensure_chromium() -> str:
    """Debian's chromium, installed here when missing (as root, with apt)."""
    if not Path(CHROMIUM).exists():
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            pytest.skip(
                "browser tests need Debian's chromium: apt-get install -y chromium (as root)"
            )
        for args in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "chromium"]):
            result = subprocess.run(
                args,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return CHROMIUM


@dataclass
class Seen:
    """One request that reached the proxy."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: bytes
    at: float
    status: int = 0


@dataclass
class Fault:
    status: int
    retry_after: str | None = None


@dataclass
class ProxyState:
    target: tuple[str, int]
    seen: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ProxyHandler(BaseHTTPRequestHandler):
    state: ProxyState

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = Seen(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            content_type=self.headers.get("content-type", ""),
            body=body,
            at=time.monotonic(),
        )
        fault = None
        with self.state.lock:
            self.state.seen.append(seen)
            if self.command == "POST" and parts.path.startswith("/v1/") and self.state.faults:
                fault = self.state.faults.pop(0)
        if fault is not None:
            seen.status = fault.status
            self._answer_fault(fault)
            return
        connection = http.client.HTTPConnection(*self.state.target, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(self.command, self.path, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        seen.status = response.status
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        connection.close()

    def _answer_fault(self, fault: Fault) -> None:
        body = b'{"error":"unavailable"}'
        self.send_response(fault.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        # What the collector's CORS answers carry (collect/cors.py).
        self.send_header("access-control-allow-origin", self.headers.get("origin", "*"))
        self.send_header("access-control-expose-headers", "retry-after")
        if fault.retry_after is not None:
            self.send_header("retry-after", fault.retry_after)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()


class CountingProxy:
    """Forwards to the collector and records every request (OPTIONS included); can
    answer the next ingest requests itself with an injected status."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None
        self.state = ProxyState(target=(parts.hostname, parts.port))
        handler = type("Handler", (_ProxyHandler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, count: int, status: int, retry_after: str | None = None) -> None:
        with self.state.lock:
            self.state.faults.extend(Fault(status, retry_after) for _ in range(count))

    def requests(self, method: str | None = None) -> list[Seen]:
        with self.state.lock:
            return [s for s in self.state.seen if method is None or s.method == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Site:
    """The shop: pages on another origin (localhost, another port) than the collector."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                page = pages.get(urlsplit(self.path).path)
                body = (page or "not found").encode()
                self.send_response(200 if page is not None else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("cache-control", "no-store")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
