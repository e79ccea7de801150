"""The ASGI application: routing, keys, CORS and the operational endpoints; ingest
(``collect/``) and each read resource (``api/``) serve their own routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from convtrack.api import landing
from convtrack.api.attribution import AttributionApi
from convtrack.api.deadletters import DeadLettersApi
from convtrack.api.flush import FlushApi
from convtrack.api.quarantine import QuarantineApi
from convtrack.api.query import QueryInvalid
from convtrack.api.rejects import RejectsApi
from convtrack.api.reports import ReportsApi
from convtrack.api.stats import StatsApi
from convtrack.api.tokens import ConversionTokens
from convtrack.collect import browser_sdk, cors
from convtrack.collect.auth import ApiKey, Keyring, read_credential, why_no_key
from convtrack.collect.http import Receive, Request, Response, Scope, Send, error, json_response
from convtrack.collect.ingest import Collector
from convtrack.errors import LogError, LogUnavailable, StoreError
from convtrack.log.base import EventLog
from convtrack.model import codes
from convtrack.observe.merge import merge_expositions
from convtrack.observe.metrics import Metrics
from convtrack.store.rejects.base import RejectStore

log = logging.getLogger("convtrack.http")

Handler = Callable[[Request, ApiKey, str], Awaitable[Response]]
# Segment's paths and short forms, where its libraries send (see model/segment.py).
SEGMENT_SINGLE_ROUTES = ("/v1/t", "/v1/identify", "/v1/i", "/v1/page", "/v1/p", "/v1/screen",
                         "/v1/s")  # fmt: skip
INGEST_ROUTES = frozenset(
    {"/v1/track", "/track/conversion", "/v1/batch", "/v1/b", *SEGMENT_SINGLE_ROUTES}
)


class OtherProcesses(Protocol):
    """The server's roles that run in processes of their own (runtime/children.py)."""

    def components(self) -> dict[str, dict[str, Any]]:
        """Their readiness components, by name, as of their last answer (never blocks)."""
        ...

    def metrics(self) -> list[bytes]:
        """Each process's /metrics text now (blocking: a local request to each)."""
        ...


class App:
    """Everything the HTTP API serves; built by ``runtime`` with its backends."""

    def __init__(
        self,
        *,
        collector: Collector,
        keyring: Keyring,
        log: EventLog,
        rejects: RejectStore,
        metrics: Metrics,
        cors_max_age_secs: int,
        tokens: ConversionTokens,
        stats: StatsApi,
        reports: ReportsApi,
        attribution: AttributionApi,
        components: Mapping[str, Callable[[], dict[str, Any]]] | None = None,
        dead_letters: DeadLettersApi | None = None,
        quarantine: QuarantineApi | None = None,
    ) -> None:
        self.collector = collector
        self.keyring = keyring
        self.log = log
        self.rejects = rejects
        self.metrics = metrics
        self.cors_max_age_secs = cors_max_age_secs
        self.draining = False
        self.components = dict(components or {})
        self.lake_flush = FlushApi()  # the runtime gives it the work when it runs the store role
        self.elsewhere: OtherProcesses | None = None  # the roles in child processes, if any
        # (method, path) -> (role needed, handler)
        self.routes: dict[tuple[str, str], tuple[str, Handler]] = {
            ("POST", "/v1/track"): ("write", collector.track),
            ("POST", "/track/conversion"): ("write", collector.track),
            ("POST", "/v1/batch"): ("write", collector.batch),
            ("POST", "/v1/b"): ("write", collector.batch),
            **{("POST", path): ("write", collector.track) for path in SEGMENT_SINGLE_ROUTES},
            ("GET", "/v1/rejects"): ("admin", RejectsApi(rejects).list),
            ("POST", "/v1/conversion-tokens"): ("server", tokens.issue),
            ("GET", "/v1/stats/conversions"): ("server", stats.conversions),
            ("GET", "/v1/stats/live"): ("server", stats.live),
            ("GET", "/v1/reports/conversions"): ("server", reports.conversions),
            ("GET", "/v1/reports/attribution"): ("server", attribution.attribution),
            ("POST", "/v1/admin/flush"): ("admin", self.lake_flush.flush),
        }
        if dead_letters is not None:
            self.routes[("GET", "/v1/dead-letters")] = ("admin", dead_letters.list)
            self.routes[("POST", "/v1/dead-letters/replay")] = ("admin", dead_letters.replay)
        if quarantine is not None:
            self.routes[("GET", "/v1/quarantine")] = ("admin", quarantine.listing)
            self.routes[("POST", "/v1/quarantine/replay")] = ("admin", quarantine.replay)
        self.sdk = browser_sdk.BrowserSdk()
        self.pages = landing.Landing()
        self.open_routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            ("GET", landing.LANDING_PATH): self.pages.landing,
            ("GET", landing.DOCS_PATH): self.pages.reference,
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.render_metrics,
            ("GET", "/openapi.json"): self.openapi,
            ("GET", browser_sdk.CURRENT_PATH): self.sdk.serve,
            ("GET", browser_sdk.MANIFEST_PATH): self.sdk.serve,
        }
        # Paths with a variable part (all under browser_sdk.PREFIX, answered by self.sdk).
        self.templated_routes = {("GET", browser_sdk.HASHED_TEMPLATE): self.sdk.serve}
        self._paths = {path for _, path in self.routes} | {path for _, path in self.open_routes}
        # The Allow header of a 405: every method served on the path (RFC 9110, 15.5.6).
        methods: dict[str, set[str]] = {}
        for method, path in [*self.routes, *self.open_routes]:
            methods.setdefault(path, set()).add(method)
        for path in INGEST_ROUTES:
            methods.setdefault(path, set()).add("OPTIONS")
        for path in landing.PATHS:
            methods[path].add("HEAD")  # answered as GET; the server sends no body
        self._allow = {path: ", ".join(sorted(found)).encode() for path, found in methods.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except ConnectionAbortedError:
            return  # the client went away mid-body; nobody to answer
        except QueryInvalid as exc:
            response = exc.response()
        except (LogError, StoreError) as exc:
            # A backend is down (Kafka, Redis, the lake): the client may retry; an
            # append that raised was never acknowledged, so nothing was accepted.
            self.metrics.errors.labels("http", type(exc).__name__).inc()
            log.warning("backend_unavailable", extra={"path": request.path, "error": str(exc)})
            retry_after = exc.retry_after_secs if isinstance(exc, LogUnavailable) else 2
            response = error(503, codes.ERR_UNAVAILABLE, retry_after=retry_after)
        except Exception as exc:
            self.metrics.errors.labels("http", type(exc).__name__).inc()
            log.exception("unhandled_error", extra={"path": request.path})
            response = error(500, codes.ERR_INTERNAL)
        route = request.path if request.path in self._paths else "other"
        self.metrics.count_request(route, response.status)
        await response.send(send)

    async def dispatch(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path.startswith(browser_sdk.PREFIX):
            return await self.sdk.serve(request)  # GET and HEAD, any build's name
        if method == "HEAD" and path in landing.PATHS:
            method = "GET"  # the same headers; uvicorn sends no body to a HEAD
        open_handler = self.open_routes.get((method, path))
        if open_handler is not None:
            return await open_handler(request)
        if method == "OPTIONS" and path in INGEST_ROUTES:
            return self.preflight(request)
        response, key = await self._authorized(request)
        origin = request.headers.get("origin")
        if origin is not None and path in INGEST_ROUTES:
            # Let browser code read every answer (errors included) if its origin is allowed.
            allowed = (
                key.allows_origin(origin)
                if key is not None
                else any(
                    k.role == "write" and k.allows_origin(origin) for k in self.keyring.all_keys()
                )
            )
            if allowed:
                response.headers.extend(cors.allow_headers(origin))
        return response

    async def _authorized(self, request: Request) -> tuple[Response, ApiKey | None]:
        method, path = request.method, request.path
        entry = self.routes.get((method, path))
        if entry is None:
            if path in self._paths:
                refused = error(405, codes.ERR_METHOD_NOT_ALLOWED)
                refused.headers.append((b"allow", self._allow[path]))
                return refused, None
            return error(404, codes.ERR_NOT_FOUND), None
        role, handler = entry
        credential = read_credential(request)
        if credential is None:
            return error(401, codes.ERR_KEY_MISSING, message=why_no_key(request)), None
        key = self.keyring.lookup(credential.secret)
        if key is None:
            return error(401, codes.ERR_KEY_UNKNOWN), None
        if not key.may(role) or (credential.via == "query" and key.role != "write"):
            # A secret key in a URL ends up in logs and browser history: refuse it there.
            return error(403, codes.ERR_ROLE_NOT_ALLOWED), key
        origin = request.headers.get("origin")
        if origin is not None and key.role == "write" and not key.allows_origin(origin):
            return error(403, codes.ERR_ORIGIN_NOT_ALLOWED), key
        if self.draining and path in INGEST_ROUTES:
            return error(503, codes.ERR_UNAVAILABLE, retry_after=2), key
        return await handler(request, key, path), key

    def preflight(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is None:
            return Response(204, b"", [])
        query_key = request.query_one("writeKey")
        key = self.keyring.lookup(query_key) if query_key else None
        if query_key and key is None:
            return error(401, codes.ERR_KEY_UNKNOWN)
        if not cors.preflight_allowed(self.keyring, origin, key):
            return error(403, codes.ERR_ORIGIN_NOT_ALLOWED)
        return Response(204, b"", cors.preflight_headers(origin, self.cors_max_age_secs))

    async def healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ready, body = self.readiness()
        return json_response(200 if ready else 503, body)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """What /readyz answers: ready (the log takes events durably) and the body."""
        status = self.log.status()
        ready = status.writable and not self.draining
        body: dict[str, Any] = {
            "status": "ready" if ready else "unavailable",
            "draining": self.draining,
            "log": {"writable": status.writable, "detail": status.detail,
                    "pending_events": status.pending_events},
        }  # fmt: skip
        # The later stages and their backends (hot store, lake) are reported but do not
        # gate readiness: while they catch up or are away the log keeps taking events
        # durably. ``degraded`` names those that are not healthy.
        degraded = []
        for name, component in self.components.items():
            report = component()
            body[name] = report
            if report.get("healthy") is False:
                degraded.append(name)
        if self.elsewhere is not None:
            for name, report in self.elsewhere.components().items():
                if name in body:
                    continue  # the log, the hot store: as this process sees them
                body[name] = report
                if report.get("healthy") is False:
                    degraded.append(name)
        body["degraded"] = degraded
        return ready, body

    async def render_metrics(self, request: Request) -> Response:
        status = self.log.status()
        self.metrics.log_end_offset.set(sum(status.end_offsets.values()))
        self.metrics.log_pending_events.set(status.pending_events)
        text = self.metrics.render()
        if self.elsewhere is not None:
            others = await asyncio.to_thread(self.elsewhere.metrics)
            text = merge_expositions([text, *others])
        return Response(200, text, [(b"content-type", b"text/plain; version=0.0.4")])

    async def openapi(self, request: Request) -> Response:
        spec = resources.files("convtrack.api").joinpath("openapi.json").read_bytes()
        return Response(200, spec)
