"""Health of the backends a process uses, and the probe app of a process without ``collect``.

Backend checks (is the hot store reachable? where is the processor?) may block
on a network call when a backend is down, so a ``HealthMonitor`` runs them on
its own thread once a second and readiness reads the last answers: a probe
never stalls the event loop that serves ingest, and a backend that is down never
delays the start (the first round runs on that thread too).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from convtrack.api.flush import FlushNow, FlushRefused
from convtrack.collect.http import Receive, Request, Response, Scope, Send, json_response
from convtrack.model import codes
from convtrack.observe.metrics import Metrics

log = logging.getLogger("convtrack.health")

Report = dict[str, Any]  # always has "healthy" (bool) and "detail" (str)
Check = Callable[[], Report]
CHECK_INTERVAL_SECS = 1.0
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# A child process of serve (runtime/children.py) flushes its lake when the serving
# process asks, with the token only the two of them know.
CHILD_FLUSH_PATH = "/internal/flush"
CHILD_TOKEN_HEADER = "x-convtrack-child-token"


def failed(exc: BaseException) -> Report:
    return {"healthy": False, "detail": f"{type(exc).__name__}: {exc}"}


class HealthMonitor:
    """Runs named checks in the background; ``report(name)`` is the latest answer."""

    def __init__(self, checks: Mapping[str, Check], interval_secs: float = CHECK_INTERVAL_SECS):
        self._checks = dict(checks)
        self._interval = interval_secs
        # Unknown is not ready: /readyz answers 503 until the first round has run.
        self._reports: dict[str, Report] = {
            name: {"healthy": False, "detail": "not checked yet"} for name in self._checks
        }
        self._checked: set[str] = set()
        self._first_round = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    @property
    def checked(self) -> bool:
        """Whether every check has answered once (no report says "not checked yet")."""
        return self._first_round.is_set() or not self._checks

    def start(self) -> None:
        if self._checks:
            self._thread.start()

    def check_now(self) -> None:
        for name, check in self._checks.items():
            try:
                report = check()
            except Exception as exc:  # a check must report, never raise
                report = failed(exc)
            first = name not in self._checked
            was_healthy = first or self._reports[name].get("healthy") is not False
            if report.get("healthy") is False and was_healthy:
                log.warning("backend_unhealthy", extra={"check": name, "detail": report["detail"]})
            elif report.get("healthy") is not False and not was_healthy:
                log.info("backend_recovered", extra={"check": name})
            self._reports[name] = report
            self._checked.add(name)
        self._first_round.set()

    def report(self, name: str) -> Report:
        return dict(self._reports[name])

    def reporter(self, name: str) -> Callable[[], Report]:
        return lambda: self.report(name)

    def _run(self) -> None:
        self.check_now()
        while not self._stop.wait(self._interval):
            self.check_now()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)


def waiting_for(body: Mapping[str, Any], gating: list[str], names: Mapping[str, str]) -> list[str]:
    """What keeps a /readyz ``body`` from 200, as ``what (detail)``: the ``gating`` members
    that are not healthy (or not writable), named by ``names`` (else their own name)."""
    if body.get("draining"):
        return ["the stop to finish (draining)"]
    waits = []
    for name in gating:
        report = body.get(name)
        if isinstance(report, Mapping) and False in (report.get("healthy"), report.get("writable")):
            waits.append(f"{names.get(name, name)} ({report.get('detail', 'not ready')})")
    return waits


def readiness(
    components: Mapping[str, Callable[[], Report]],
) -> tuple[dict[str, Any], list[str]]:
    """Every component's report, and the names of those that are not healthy."""
    body: dict[str, Any] = {}
    degraded: list[str] = []
    for name, component in components.items():
        report = component()
        body[name] = report
        if report.get("healthy") is False:
            degraded.append(name)
    return body, degraded


class ProbeApp:
    """What a process without ``collect`` serves: /healthz, /readyz and /metrics.

    Ready means every role of the process is doing its work: a role stuck on a
    backend that is down makes /readyz answer 503 and name it.
    """

    def __init__(
        self,
        roles: Iterable[str],
        metrics: Metrics,
        components: Mapping[str, Callable[[], Report]],
    ) -> None:
        self.roles = tuple(str(role) for role in roles)  # as named on the command line
        self.metrics = metrics
        self.components = dict(components)
        self.draining = False
        self.flush_now: FlushNow | None = None  # set when it runs the store role
        self.child_token: str | None = None  # set in a child process of serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.path == CHILD_FLUSH_PATH and self.child_token is not None:
            response = await self._child_flush(request)
        else:
            response = self.dispatch(request)
        route = request.path if request.path in PROBE_PATHS else "other"
        self.metrics.count_request(route, response.status)
        await response.send(send)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """What /readyz answers: ready (every component healthy) and the body."""
        body, degraded = readiness(self.components)
        ready = not degraded and not self.draining
        return ready, {
            "status": "ready" if ready else "unavailable",
            "roles": list(self.roles),
            "draining": self.draining,
            "degraded": degraded,
            **body,
        }

    async def _child_flush(self, request: Request) -> Response:
        token = request.headers.get(CHILD_TOKEN_HEADER, "").encode()
        expected = (self.child_token or "").encode()
        if request.method != "POST" or not hmac.compare_digest(token, expected):
            return json_response(404, {"error": "not_found"})
        if self.flush_now is None:
            message = "this process does not run the store role"
            return json_response(409, {"error": codes.ERR_NO_STORE_ROLE, "message": message})
        try:
            body = await asyncio.to_thread(self.flush_now)
        except FlushRefused as exc:
            return json_response(exc.status, {"error": exc.code, "message": exc.message})
        return json_response(200, body)

    def dispatch(self, request: Request) -> Response:
        if request.path in PROBE_PATHS and request.method != "GET":
            return json_response(405, {"error": "method_not_allowed"}, [(b"allow", b"GET")])
        if request.path == "/healthz":
            return json_response(200, {"status": "ok", "roles": list(self.roles)})
        if request.path == "/readyz":
            ready, body = self.readiness()
            return json_response(200 if ready else 503, body)
        if request.path == "/metrics":
            return Response(
                200, self.metrics.render(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        return json_response(
            404,
            {
                "error": "not_found",
                "message": "this process runs the roles "
                f"{','.join(self.roles)}; the HTTP API is served by the collect role",
            },
        )
