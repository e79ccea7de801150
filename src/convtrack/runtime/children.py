"""The embedded default's roles in child processes of ``serve`` (``server.child_roles``).

One CPython process runs one thread of Python at a time: with every role in it, the
processor and the lake writer share the collector's core, and under load live
counters fall behind what the collector accepts. So ``serve`` keeps the collect
role and starts one child per ``server.child_roles`` entry (by default the
processor, and the lake writer with the deliveries), each with its own
interpreter. They work on the same data dir exactly as ``serve --roles`` processes
do (the SQLite files are shared, see docs/operations.md, "Roles and scaling"), so
the delivery guarantees are those of the split roles, crash tests included.

The serving process stays the one to talk to: it holds the role locks (each child
inherits them, so a child left behind still holds them), answers /readyz with the
children's components, /metrics with their series summed in
(``observe/merge.py``) and forwards ``POST /v1/admin/flush`` to the lake writer's
child. A child that exits while the server runs is started again (backoff from
0.5 s to 30 s); a child dies with the serving process (``runtime/child.py``). On
SIGTERM the children stop after the collector's last appends are committed, in
pipeline order: the processor drains, then the lake flushes.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import msgspec

from convtrack.api.flush import FlushRefused
from convtrack.config import Settings
from convtrack.errors import ConfigError
from convtrack.model import codes
from convtrack.observe.metrics import Metrics
from convtrack.runtime.health import CHILD_FLUSH_PATH, CHILD_TOKEN_HEADER, Report
from convtrack.runtime.roles import Role, Roles

log = logging.getLogger("convtrack.children")

SUPERVISOR_ENV = "CONVTRACK_SUPERVISOR_PID"  # set in each child: who serves (failpoints.py)
RESTART_FIRST_SECS = 0.5
RESTART_MAX_SECS = 30.0
STEADY_SECS = 60.0  # a child up this long that exits is restarted after the first delay again
POLL_SECS = 1.0  # how often a child's /readyz is read
REQUEST_SECS = 2.0  # a child's /readyz or /metrics
SILENT_SECS = 5.0  # a running child whose /readyz has not answered for this long is down
FLUSH_REQUEST_SECS = 40.0  # longer than the child's own flush waits (runtime/flush.py)
_META = frozenset({"status", "roles", "draining", "degraded"})  # /readyz keys that are not parts


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a child reads on its stdin (runtime/child.py)."""

    settings: Settings  # the serving process's, listening on a loopback port of its own
    roles: list[str]
    token: str  # the serving process sends it with its flush requests
    ready_fd: int  # the port is written here once listening, then it is closed
    parent_pid: int


def child_groups(settings: Settings) -> list[Roles]:
    """The roles of each child, from ``server.child_roles`` (``"store+deliver"``: two roles)."""
    groups: list[Roles] = []
    taken: set[Role] = set()
    for entry in settings.server.child_roles:
        roles = Roles(name.strip().lower() for name in entry.split("+") if name.strip())
        where = f"server.child_roles entry {entry!r}"
        if not roles:
            raise ConfigError(f"{where} names no role; the child roles are process, store, deliver")
        if roles.collects:
            raise ConfigError(f"{where}: collect always runs in the serving process")
        if taken & set(roles):
            twice = ", ".join(sorted(taken & set(roles)))
            raise ConfigError(f"{where}: {twice} is already in another entry (one child each)")
        taken |= set(roles)
        groups.append(roles)
    return groups


def component_names(settings: Settings, roles: Roles) -> list[str]:
    """The readiness components a child of ``roles`` reports (``Node``'s, without collect),
    so that /readyz names them all from the start, before the child first answers."""
    names = []
    if roles.processes:
        names += ["hot", "log"]
    names.append("processed_log")
    if roles.processes:
        names.append("processor")
    if roles.stores:
        names.append("cold")
    if roles.delivers:
        names += [f"deliver-{destination.name}" for destination in settings.destinations]
    return names


class ChildProcess:
    """One child: started, watched, asked for its health, started again if it exits."""

    def __init__(
        self, settings: Settings, roles: Roles, lock_fds: list[int], metrics: Metrics
    ) -> None:
        self.roles = roles
        self.name = "+".join(roles)
        self._spec_settings = _child_settings(settings)
        self._lock_fds = lock_fds
        self._metrics = metrics
        self._token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._state = "starting"
        starting = {"healthy": False, "detail": "its process is starting"}
        # Its /readyz components, last answer
        self._parts: dict[str, Report] = dict.fromkeys(component_names(settings, roles), starting)
        self._answered_at = 0.0  # monotonic: its last /readyz answer, or when it listened
        self.restarts = 0
        self._thread = threading.Thread(target=self._run, name=f"child-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            read_fd, write_fd = os.pipe()
            spec = ChildSpec(
                settings=self._spec_settings,
                roles=list(self.roles),
                token=self._token,
                ready_fd=write_fd,
                parent_pid=os.getpid(),
            )
            try:
                proc = subprocess.Popen(
                    # --roles only names it in ps: the spec on stdin is what it runs
                    [sys.executable, "-m", "convtrack.runtime.child", "--roles", self.name],
                    stdin=subprocess.PIPE,
                    pass_fds=(*self._lock_fds, write_fd),
                    # Not in the terminal's group: a Ctrl-C reaches the serving process,
                    # which stops the children in order once its own appends are in.
                    process_group=0,
                    env={**os.environ, SUPERVISOR_ENV: str(os.getpid())},
                )
            finally:
                os.close(write_fd)
            self._proc, self._port, self._state = proc, None, "starting"
        assert proc.stdin is not None
        proc.stdin.write(msgspec.json.encode(spec))
        proc.stdin.close()
        return proc, read_fd

    def _run(self) -> None:
        delay = RESTART_FIRST_SECS
        while True:
            spawned = self._spawn()
            if spawned is None:
                return
            proc, read_fd = spawned
            started = time.monotonic()
            log.info("child_started", extra={"roles": self.name, "pid": proc.pid})
            self._watch(proc, read_fd)
            if self._stopping.is_set():
                self._state = "stopped"
                return
            if time.monotonic() - started >= STEADY_SECS:
                delay = RESTART_FIRST_SECS
            self._state = f"exited with code {proc.returncode}; starting again"
            self.restarts += 1
            self._metrics.child_restarts.labels(self.name).inc()
            log.error(
                "child_exited",
                extra={
                    "roles": self.name,
                    "pid": proc.pid,
                    "returncode": proc.returncode,
                    "restart_in_secs": delay,
                },
            )
            if self._stopping.wait(delay):
                self._state = "stopped"
                return
            delay = min(delay * 2, RESTART_MAX_SECS)

    def _watch(self, proc: subprocess.Popen[bytes], read_fd: int) -> None:
        """Until ``proc`` exits: learn its port, then read its /readyz every second."""
        try:
            said = os.read(read_fd, 32)  # empty: it exited before listening
        finally:
            os.close(read_fd)
        if said.strip().isdigit():
            self._port, self._state = int(said), "running"
            self._answered_at = time.monotonic()
            self._read_readiness()
        while True:
            try:
                proc.wait(POLL_SECS)
                break
            except subprocess.TimeoutExpired:
                self._read_readiness()
        self._port = None

    def _read_readiness(self) -> None:
        try:
            status, body = self._request("GET", "/readyz", REQUEST_SECS)
            parts = json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            return  # busy or stopping: the last answer stands, for a while (SILENT_SECS)
        self._answered_at = time.monotonic()
        if status in (200, 503) and isinstance(parts, dict):
            self._parts = {k: v for k, v in parts.items() if k not in _META and isinstance(v, dict)}

    def _request(
        self, method: str, path: str, timeout: float, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        port = self._port
        if port is None:
            raise ConnectionError(f"the {self.name} process is {self._state}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def components(self) -> dict[str, Report]:
        """Its components as it last reported them; while it is not running, each unhealthy."""
        proc = self._proc
        pid = "" if proc is None else f" (pid {proc.pid})"
        silent = time.monotonic() - self._answered_at
        if self._state == "running" and silent < SILENT_SECS:
            return dict(self._parts)
        state = self._state
        if state == "running":  # alive, but stopped, hung or starved: say so, keep waiting
            state = f"has not answered /readyz for {silent:.0f} s"
        down = {"healthy": False, "detail": f"its process{pid} {state}"}
        return {name: dict(down) for name in self._parts}

    def status(self) -> dict[str, Any]:
        proc = self._proc
        answering = time.monotonic() - self._answered_at < SILENT_SECS
        return {
            "roles": self.name,
            "pid": None if proc is None else proc.pid,
            "state": self._state if answering or self._state != "running" else "not answering",
            "restarts": self.restarts,
        }

    def metrics(self) -> bytes | None:
        try:
            status, body = self._request("GET", "/metrics", REQUEST_SECS)
        except (OSError, http.client.HTTPException):
            return None
        return body if status == 200 else None

    def flush(self) -> dict[str, Any]:
        headers = {CHILD_TOKEN_HEADER: self._token}
        try:
            status, body = self._request("POST", CHILD_FLUSH_PATH, FLUSH_REQUEST_SECS, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise FlushRefused(
                503, codes.ERR_COLD_STORE_UNAVAILABLE, f"the lake writer's process: {exc}"
            ) from exc
        answer = json.loads(body)
        if status != 200:
            raise FlushRefused(status, str(answer.get("error")), str(answer.get("message")))
        return dict(answer)

    def stop(self, deadline: float) -> None:
        """SIGTERM, and wait for it to drain until ``deadline`` (monotonic); SIGKILL past it."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child_killed", extra={"roles": self.name, "pid": proc.pid})
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(POLL_SECS + REQUEST_SECS)


class Children:
    """Every child of this ``serve``; what the serving process's App asks of them."""

    def __init__(
        self, settings: Settings, groups: list[Roles], lock_fds: list[int], metrics: Metrics
    ) -> None:
        self.children = [ChildProcess(settings, roles, lock_fds, metrics) for roles in groups]
        self.roles = Roles(role for child in self.children for role in child.roles)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self, timeout_secs: float) -> None:
        """In pipeline order: the processor drains before the lake's last flush."""
        deadline = time.monotonic() + timeout_secs
        for child in sorted(self.children, key=lambda c: list(Role).index(c.roles[0])):
            child.stop(deadline)

    def components(self) -> dict[str, Report]:
        merged: dict[str, Report] = {}
        for child in self.children:
            for name, report in child.components().items():
                # Two children on one backend (the hot store...): the one that fails wins.
                if name not in merged or report.get("healthy") is False:
                    merged[name] = report
        states = [child.status() for child in self.children]
        merged["processes"] = {
            "healthy": all(state["state"] == "running" for state in states),
            "detail": "; ".join(f"{s['roles']}: {s['state']}" for s in states),
            "children": states,
        }
        return merged

    def metrics(self) -> list[bytes]:
        return [text for child in self.children if (text := child.metrics()) is not None]

    def flush(self) -> dict[str, Any]:
        for child in self.children:
            if child.roles.stores:
                return child.flush()
        raise FlushRefused(
            409, codes.ERR_NO_STORE_ROLE, "no process of this server writes the lake"
        )


def _child_settings(settings: Settings) -> Settings:
    server = msgspec.structs.replace(
        settings.server, host="127.0.0.1", port=0, reuse_port=False, child_roles=[]
    )
    return msgspec.structs.replace(settings, server=server)
