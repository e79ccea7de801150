"""What the local dev services share: one child process, its log file and its lifecycle.

A service subclasses ServiceProcess and keeps its own command, readiness check,
ports and error messages; this module spawns the process (in its own session,
logging to ``log_path``, optionally dying with the thread that started it),
waits for it to become ready, and stops it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

from convtrack.errors import ConvtrackError


class DevServiceError(ConvtrackError):
    """A local development service could not be found, started or stopped."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started us dies (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _port_is_free(port: int) -> bool:
    """Whether weed could listen on it (Go sets SO_REUSEADDR, so TIME_WAIT is no obstacle)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


class ServiceProcess(ABC):
    """One server process on 127.0.0.1 with its output appended to ``log_path``.

    Subclasses define ``log_path`` and ``start`` (which prepares, calls
    ``_spawn`` and then ``_wait_ready``).
    """

    def __init__(self, *, die_with_parent: bool) -> None:
        self._die_with_parent = die_with_parent and sys.platform == "linux"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.last_start_secs: float | None = None

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Where the service's output goes."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @abstractmethod
    def start(self, timeout_secs: float = 30) -> None:
        """Prepare, ``_spawn`` and ``_wait_ready``; raise DevServiceError when it cannot."""

    def stop(self, timeout_secs: float = 10) -> None:
        """SIGTERM, wait up to timeout_secs, then SIGKILL; returns once it has exited."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_secs)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(10)
        self._close()

    def restart(self, timeout_secs: float = 30) -> None:
        self.stop()
        self.start(timeout_secs)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for subclasses -----------------------------------------------------

    def _spawn(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        """Open the log, note the command in it and start cmd; returns the log offset after."""
        self._log = self.log_path.open("ab")
        self._log.write(f"\n--- {dt.datetime.now(dt.UTC).isoformat()} {' '.join(cmd)}\n".encode())
        self._log.flush()
        log_offset = self._log.tell()
        self._proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if self._die_with_parent else None,  # noqa: PLW1509
        )
        return log_offset

    def _wait_ready(
        self,
        started: float,
        timeout_secs: float,
        *,
        name: str,
        ready: Callable[[], bool],
        interval: float,
    ) -> bool:
        """Poll ready() until it holds (True) or the deadline passes (stop, then False).

        Raises DevServiceError, naming the process as ``name``, if it exits first.
        """
        deadline = started + timeout_secs
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                self._close()
                raise DevServiceError(
                    f"{name} exited with code {code} while starting:\n{self._log_tail()}"
                )
            if ready():
                self.last_start_secs = time.monotonic() - started
                return True
            time.sleep(interval)
        self.stop()
        return False

    def _close(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
