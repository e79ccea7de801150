"""Shared fixtures: a real ``convtrack serve`` process on a free port in a temp dir."""

from __future__ import annotations

import compileall
import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

pytest_plugins = [
    "tests.support.s3_fixtures",
    "tests.support.kafka_fixtures",
    "tests.support.redis_fixtures",
    "tests.support.deliver_fixtures",
]

WRITE_KEY = "test_write_key_0123456789"
SERVER_KEY = "test_server_key_0123456789"
ADMIN_KEY = "test_admin_key_0123456789"


SRC = Path(__file__).resolve().parents[1] / "src" / "convtrack"


@functools.cache
def compile_package_once() -> None:
    """Write the package's bytecode once for the ``serve`` children of this session.

    With PYTHONDONTWRITEBYTECODE set (as in CI and this project's sandboxes) nothing
    writes src/convtrack's __pycache__, so every child compiled its ~150 modules
    again before it could listen: a third of its start-up CPU, on a machine whose
    CPUs the suite shares. Reading bytecode is not writing it, so the children use
    these (stale files are recompiled in memory, as usual).
    """
    if sys.flags.dont_write_bytecode:
        compileall.compile_dir(SRC, quiet=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A ``convtrack serve`` child process; start, stop, kill and restart it."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args or [])  # more `serve` arguments, e.g. --config, --roles
        self.port = free_port()
        self.env = {
            **os.environ,
            "CONVTRACK_WRITE_KEY": WRITE_KEY,
            "CONVTRACK_SERVER_KEY": SERVER_KEY,
            "CONVTRACK_ADMIN_KEY": ADMIN_KEY,
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_secs: float = 10.0) -> float:
        """Start and wait for /healthz; returns the seconds it took."""
        compile_package_once()
        started = time.monotonic()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convtrack",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = started + timeout_secs
        # One client for every probe: a new one per probe builds an SSL context (40 ms of
        # CPU each, 20 times a second), which took the CPU the starting child needed.
        with httpx.Client(timeout=0.5) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited early:\n{self.log_path.read_text()}")
                try:
                    if probe.get(self.url + "/healthz").status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"serve not ready in {timeout_secs}s:\n{self.log_path.read_text()}")

    def terminate(self, timeout_secs: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_secs)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    made: list[ServerProcess] = []

    def make(
        env: dict[str, str] | None = None, name: str = "data", args: list[str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(tmp_path / name, env, args)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def server(server_factory: ServerFactory) -> Iterator[ServerProcess]:
    """A running server with known keys and a high rate limit."""
    proc = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000"})
    proc.start()
    yield proc
    proc.stop()


BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


def auth(key: str) -> dict[str, str]:
    """Headers of a key, sent like a browser would (tools such as httpx count as bots)."""
    return {"Authorization": f"Bearer {key}", "User-Agent": BROWSER_UA}


def logged_payloads(data_dir: Path) -> list[bytes]:
    """Every payload in the event log, in order, read straight from its SQLite file
    (another process may hold it open for writing)."""
    from convtrack.log.sqlite_frames import FrameReader

    conn = sqlite3.connect(f"file:{data_dir / 'log' / 'events.db'}?mode=ro", uri=True)
    try:
        return [entry.payload for entry in FrameReader().read(conn, 0, 10**9)]
    finally:
        conn.close()


def logged_event_ids(data_dir: Path) -> list[str]:
    """Every event_id in the log, read straight from its SQLite file."""
    return [json.loads(payload)["event_id"] for payload in logged_payloads(data_dir)]
