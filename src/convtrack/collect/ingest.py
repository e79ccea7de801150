"""Ingestion: bodies in, validated envelopes appended to the log, 202 only once durable."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from convtrack.clock import Clock
from convtrack.collect.auth import ApiKey
from convtrack.collect.clientip import ClientIpResolver
from convtrack.collect.http import (
    Request,
    Response,
    error,
    json_response,
    read_json,
)
from convtrack.collect.ratelimit import TokenBuckets, retry_after_secs
from convtrack.errors import LogUnavailable
from convtrack.log.base import EventLog, LogRecord
from convtrack.model import codes
from convtrack.model.event import Envelope, encode_envelope
from convtrack.model.pii import scrub_contact_fields, scrub_unparsed
from convtrack.model.validate import FieldError, IngestFacts, Rules, validate_event
from convtrack.observe.metrics import Metrics
from convtrack.store.rejects.base import Reject, RejectStore

log = logging.getLogger("convtrack.collect")

_encode = msgspec.json.encode


class IngestLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_event_bytes: int
    max_batch_bytes: int
    max_batch_events: int


def _error_dicts(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "code": e.code, "message": e.message} for e in errors]


def _body_error(code: str) -> FieldError:
    return FieldError("body", code, codes.message(code))


class Collector:
    def __init__(
        self,
        *,
        log: EventLog,
        rejects: RejectStore,
        metrics: Metrics,
        clock: Clock,
        rules: Rules,
        limits: IngestLimits,
        user_buckets: TokenBuckets,
        key_buckets: TokenBuckets,
        client_ips: ClientIpResolver,
        token_secrets: tuple[bytes, ...] = (),
    ) -> None:
        self._log = log
        self._rejects = rejects
        self._metrics = metrics
        self._clock = clock
        self._rules = rules
        self._limits = limits
        self._user_buckets = user_buckets
        self._key_buckets = key_buckets
        self._client_ips = client_ips
        self._token_secrets = token_secrets

    # -- shared steps ------------------------------------------------------------------

    async def _read_json(
        self, request: Request, key: ApiKey, route: str, limit: int
    ) -> Any | Response:
        body = await read_json(request, limit)
        if isinstance(body, Response):
            # The body was not read (or not all of it): keep the refusal, without the body.
            reason = msgspec.json.decode(body.body)["error"]
            received = self._clock.now_us()
            await self._keep([self._reject(received, route, body.status, [reason], "", key)])
            return body
        if body.code is None:
            return body.value
        received = self._clock.now_us()
        text = scrub_unparsed(body.raw[: 1 << 16]).decode("utf-8", "replace")
        await self._keep([self._reject(received, route, 400, [body.code], text, key)])
        return self._validation_failed([_body_error(body.code)])

    def _facts(self, request: Request, key: ApiKey, received_at_us: int) -> IngestFacts:
        return IngestFacts(
            source=key.source,
            key_role=key.role,
            received_at_us=received_at_us,
            query_event_id=request.query_one("event_id"),
            client_ip=self._client_ips.resolve(
                request.client_host, request.headers.get("x-forwarded-for")
            ),
            client_user_agent=request.headers.get("user-agent"),
            token_secrets=self._token_secrets,
        )

    def _rate_wait(self, key: ApiKey, envelope: Envelope) -> float:
        user = envelope.user_id or envelope.session_id or ""
        wait = self._user_buckets.take(f"{key.source}\x00{user}")
        if wait == 0.0:
            wait = self._key_buckets.take(key.key_id)
        return wait

    def _reject(
        self,
        received_at_us: int,
        route: str,
        status: int,
        code_list: list[str],
        body: str,
        key: ApiKey,
        event_id: str | None = None,
        index: int | None = None,
    ) -> Reject:
        for code in code_list:
            self._metrics.events_rejected.labels(code).inc()
        return Reject(
            received_at_us=received_at_us, route=route, status=status, codes=code_list,
            body=body, source=key.source, key_role=key.role, key_id=key.key_id,
            event_id=event_id, index=index,
        )  # fmt: skip

    async def _keep(self, rejects: list[Reject]) -> None:
        try:
            await self._rejects.add(rejects)
        except Exception:
            # Counted and logged; the client still gets its 4xx with the reasons.
            self._metrics.rejects_unstored.inc(len(rejects))
            log.exception("rejects_store_failed", extra={"count": len(rejects)})

    @staticmethod
    def _validation_failed(errors: list[FieldError]) -> Response:
        return json_response(400, {"error": codes.ERR_VALIDATION, "errors": _error_dicts(errors)})

    async def _append(self, envelopes: list[Envelope]) -> None:
        started = self._clock.monotonic()
        await self._log.append([LogRecord(e.partition_key, encode_envelope(e)) for e in envelopes])
        self._metrics.log_append_seconds.observe(self._clock.monotonic() - started)

    # -- routes ------------------------------------------------------------------------

    async def track(self, request: Request, key: ApiKey, route: str) -> Response:
        body = await self._read_json(request, key, route, self._limits.max_event_bytes)
        if isinstance(body, Response):
            return body
        self._metrics.events_received.labels(route).inc()
        received = self._clock.now_us()
        if not isinstance(body, dict):
            outcome: Envelope | list[FieldError] = [_body_error(codes.BODY_NOT_OBJECT)]
        else:
            outcome = validate_event(body, self._facts(request, key, received), self._rules)
        if isinstance(outcome, list):
            text = _encode(scrub_contact_fields(body)).decode()
            event_id = body.get("event_id") if isinstance(body, dict) else None
            await self._keep([
                self._reject(received, route, 400, [e.code for e in outcome], text, key,
                             event_id if isinstance(event_id, str) else None)
            ])  # fmt: skip
            return self._validation_failed(outcome)
        wait = self._rate_wait(key, outcome)
        if wait > 0:
            text = _encode(scrub_contact_fields(body)).decode()
            await self._keep([
                self._reject(received, route, 429, [codes.RATE_LIMITED], text, key,
                             outcome.event_id)
            ])  # fmt: skip
            return error(429, codes.ERR_RATE_LIMITED, retry_after=retry_after_secs(wait))
        try:
            await self._append([outcome])
        except LogUnavailable as exc:
            self._metrics.events_unavailable.inc()
            return error(503, codes.ERR_UNAVAILABLE, retry_after=exc.retry_after_secs)
        self._metrics.events_accepted.labels(route).inc()
        return json_response(202, {"status": "accepted", "event_id": outcome.event_id})

    async def batch(self, request: Request, key: ApiKey, route: str) -> Response:
        body = await self._read_json(request, key, route, self._limits.max_batch_bytes)
        if isinstance(body, Response):
            return body
        received = self._clock.now_us()
        items = body.get("batch") if isinstance(body, dict) else None
        whole_body_code = None
        if not isinstance(items, list):
            whole_body_code = codes.BATCH_INVALID
        elif len(items) > self._limits.max_batch_events:
            whole_body_code = codes.BATCH_TOO_LARGE
        if whole_body_code is not None:
            text = _encode(scrub_contact_fields(body)).decode()
            await self._keep([self._reject(received, route, 400, [whole_body_code], text, key)])
            return self._validation_failed([_body_error(whole_body_code)])
        assert isinstance(items, list)
        self._metrics.events_received.labels(route).inc(len(items))
        facts = self._facts(request, key, received)
        accepted: list[Envelope] = []
        rejected: list[dict[str, Any]] = []
        to_keep: list[Reject] = []
        for index, item in enumerate(items):
            if isinstance(item, dict):
                outcome = validate_event(item, facts, self._rules)
            else:
                outcome = [_body_error(codes.EVENT_NOT_OBJECT)]
            status = 400
            if not isinstance(outcome, list):
                if self._rate_wait(key, outcome) == 0.0:
                    accepted.append(outcome)
                    continue
                status = 429
                outcome = [
                    FieldError("user_id", codes.RATE_LIMITED, codes.message(codes.RATE_LIMITED))
                ]
            raw_id = item.get("event_id") if isinstance(item, dict) else None
            event_id = raw_id if isinstance(raw_id, str) else None
            rejected.append({"index": index, "event_id": event_id, "errors": _error_dicts(outcome)})
            text = _encode(scrub_contact_fields(item)).decode()
            to_keep.append(
                self._reject(received, route, status, [e.code for e in outcome], text, key,
                             event_id, index)
            )  # fmt: skip
        if to_keep:
            await self._keep(to_keep)
        if accepted:
            try:
                await self._append(accepted)
            except LogUnavailable as exc:
                self._metrics.events_unavailable.inc(len(accepted))
                return error(503, codes.ERR_UNAVAILABLE, retry_after=exc.retry_after_secs)
            self._metrics.events_accepted.labels(route).inc(len(accepted))
        return json_response(200, {"accepted": len(accepted), "rejected": rejected})
