"""Ingestion: bodies in, validated envelopes appended to the log, 202 only once durable."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from convtrack.clock import Clock
from convtrack.collect.auth import ApiKey
from convtrack.collect.clientip import ClientIpResolver
from convtrack.collect.http import (
    JsonBody,
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
from convtrack.model.scrub import scrub_decoded, scrub_unparsed
from convtrack.model.segment import (
    NO_SHARED,
    BatchShared,
    is_segment,
    traits_hidden,
    validate_segment,
)
from convtrack.model.validate import FieldError, IngestFacts, Rules, validate_event
from convtrack.observe.metrics import Metrics
from convtrack.store.rejects.base import IngestReject, RejectStore

log = logging.getLogger("convtrack.collect")

# The Segment type a message without one has, by the route it came to.
SEGMENT_ROUTE_TYPES = {
    "/v1/identify": "identify", "/v1/i": "identify", "/v1/page": "page", "/v1/p": "page",
    "/v1/screen": "screen", "/v1/s": "screen",
}  # fmt: skip


class IngestLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_event_bytes: int
    max_batch_bytes: int
    max_batch_events: int


def _error_dicts(errors: list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "code": e.code, "message": e.message} for e in errors]


_RATE_LIMITED = FieldError("user_id", codes.RATE_LIMITED, codes.message(codes.RATE_LIMITED))


def _body_error(code: str) -> FieldError:
    return FieldError("body", code, codes.message(code))


class _RawBatch(msgspec.Struct):
    batch: list[msgspec.Raw]
    # A Segment batch's members that apply to each of its messages.
    sentAt: Any = None  # noqa: N815 (the wire name)
    context: Any = None


_raw_batch = msgspec.json.Decoder(_RawBatch)


class ParsedBatch(msgspec.Struct, frozen=True):
    """A ``{"batch": [...]}`` body: each item decoded, beside its own JSON text."""

    items: list[Any]
    texts: list[bytes]
    shared: BatchShared = NO_SHARED


def decode_batch(raw: bytes) -> Any:
    """The usual batch body as a ParsedBatch (each event's text lets validation skip
    its tree walks, see ``within_limits``); any other shape decoded as it is, for
    the generic checks to name its problem. Raises what a JSON decode raises."""
    try:
        shaped = _raw_batch.decode(raw)
    except msgspec.ValidationError:
        return msgspec.json.decode(raw)
    texts = [bytes(item) for item in shaped.batch]
    shared = NO_SHARED
    if shaped.sentAt is not None or shaped.context is not None:
        shared = BatchShared(sent_at=shaped.sentAt, context=shaped.context)
    items = [msgspec.json.decode(text) for text in texts]
    return ParsedBatch(items=items, texts=texts, shared=shared)


def _kept_text(body: object) -> str:
    """A rejected body as the rejects keep it (see model/scrub.py)."""
    if isinstance(body, dict) and is_segment(body):
        body = traits_hidden(body)
    return scrub_decoded(body)


def _sent_event_id(item: dict[str, Any]) -> str | None:
    """The event_id a body named: ours, or a Segment message's messageId."""
    raw_id = item.get("event_id")
    if raw_id is None and "event_name" not in item:
        raw_id = item.get("messageId")
    return raw_id if isinstance(raw_id, str) else None


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
        default_currency: Callable[[str], str | None] = lambda source: None,
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
        self._default_currency = default_currency

    # -- shared steps ------------------------------------------------------------------

    async def _read_json(
        self,
        request: Request,
        key: ApiKey,
        route: str,
        limit: int,
        decode: Callable[[bytes], Any] = msgspec.json.decode,
    ) -> JsonBody | Response:
        body = await read_json(request, limit, decode, form_json=True)
        if isinstance(body, Response):
            # The body was not read (or not all of it): keep the refusal, without the body.
            reason = msgspec.json.decode(body.body)["error"]
            received = self._clock.now_us()
            await self._keep([self._reject(received, route, body.status, [reason], "", key)])
            return body
        if body.code is None:
            return body
        received = self._clock.now_us()
        # Not JSON: only the valid beginning is kept, scrubbed (see model/scrub.py).
        text = scrub_unparsed(body.raw)
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

    def _validate(
        self,
        body: dict[str, Any],
        facts: IngestFacts,
        raw: bytes | None,
        route: str,
        shared: BatchShared = NO_SHARED,
    ) -> Envelope | list[FieldError]:
        """Native events as they are; Segment-spec messages (told apart by their keys)
        through their mapping, model/segment.py."""
        if "event_name" in body or not is_segment(body):  # the native hot path: one lookup
            return validate_event(body, facts, self._rules, raw)
        return validate_segment(
            body, facts, self._rules, raw=raw, shared=shared,
            default_type=SEGMENT_ROUTE_TYPES.get(route, "track"),
            default_currency=self._default_currency(facts.source),
        )  # fmt: skip

    @staticmethod
    def _user_bucket(key: ApiKey, envelope: Envelope) -> str:
        return f"{key.source}\x00{envelope.user_id or envelope.session_id or ''}"

    def _rate_wait(self, key: ApiKey, envelope: Envelope) -> float:
        wait = self._user_buckets.take(self._user_bucket(key, envelope))
        if wait == 0.0:
            wait = self._key_buckets.take(key.key_id)
        return wait

    def _grants(self, key: ApiKey, envelopes: list[Envelope]) -> list[bool]:
        """A batch's rate limit, in event order: one bucket lookup per user, not per event."""
        users = [self._user_bucket(key, e) for e in envelopes]
        wanted = Counter(users)
        left = {user: self._user_buckets.take_up_to(user, n) for user, n in wanted.items()}
        key_left = self._key_buckets.take_up_to(key.key_id, sum(left.values()))
        grants: list[bool] = []
        for user in users:
            granted = left[user] > 0 and key_left > 0
            if left[user] > 0:
                left[user] -= 1  # a user token taken while the key's ran out stays taken
            if granted:
                key_left -= 1
            grants.append(granted)
        return grants

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
    ) -> IngestReject:
        for code in code_list:
            self._metrics.events_rejected.labels(code).inc()
        return IngestReject(
            received_at_us=received_at_us, route=route, status=status, codes=code_list,
            body=body, source=key.source, key_role=key.role, key_id=key.key_id,
            event_id=event_id, index=index,
        )  # fmt: skip

    async def _keep(self, rejects: list[IngestReject]) -> None:
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
        read = await self._read_json(request, key, route, self._limits.max_event_bytes)
        if isinstance(read, Response):
            return read
        body = read.value
        self._metrics.route_counters(route).received.inc()
        received = self._clock.now_us()
        if not isinstance(body, dict):
            outcome: Envelope | list[FieldError] = [_body_error(codes.BODY_NOT_OBJECT)]
        else:
            facts = self._facts(request, key, received)
            outcome = self._validate(body, facts, read.raw, route)
        if isinstance(outcome, list):
            text = _kept_text(body)
            event_id = _sent_event_id(body) if isinstance(body, dict) else None
            await self._keep([
                self._reject(received, route, 400, [e.code for e in outcome], text, key,
                             event_id)
            ])  # fmt: skip
            return self._validation_failed(outcome)
        wait = self._rate_wait(key, outcome)
        if wait > 0:
            text = _kept_text(body)
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
        self._metrics.route_counters(route).accepted.inc()
        return json_response(202, {"status": "accepted", "event_id": outcome.event_id})

    async def batch(self, request: Request, key: ApiKey, route: str) -> Response:
        read = await self._read_json(
            request, key, route, self._limits.max_batch_bytes, decode_batch
        )
        if isinstance(read, Response):
            return read
        received = self._clock.now_us()
        body = read.value
        texts: list[bytes] | None = None
        shared = NO_SHARED
        if isinstance(body, ParsedBatch):
            items: object = body.items
            texts = body.texts
            shared = body.shared
            body = {"batch": body.items}
        else:
            items = body.get("batch") if isinstance(body, dict) else None
        whole_body_code = None
        if not isinstance(items, list):
            whole_body_code = codes.BATCH_INVALID
        elif len(items) > self._limits.max_batch_events:
            whole_body_code = codes.BATCH_TOO_LARGE
        if whole_body_code is not None:
            text = scrub_decoded(body)
            await self._keep([self._reject(received, route, 400, [whole_body_code], text, key)])
            return self._validation_failed([_body_error(whole_body_code)])
        assert isinstance(items, list)
        self._metrics.route_counters(route).received.inc(len(items))
        facts = self._facts(request, key, received)
        valid: list[tuple[int, Envelope]] = []
        failed: list[tuple[int, int, list[FieldError]]] = []  # index, status, errors
        for index, item in enumerate(items):
            if isinstance(item, dict):
                item_text = texts[index] if texts is not None else None
                outcome = self._validate(item, facts, item_text, route, shared)
            else:
                outcome = [_body_error(codes.EVENT_NOT_OBJECT)]
            if isinstance(outcome, list):
                failed.append((index, 400, outcome))
            else:
                valid.append((index, outcome))
        accepted: list[Envelope] = []
        grants = self._grants(key, [envelope for _, envelope in valid])
        for (index, envelope), granted in zip(valid, grants, strict=True):
            if granted:
                accepted.append(envelope)
            else:
                failed.append((index, 429, [_RATE_LIMITED]))
        rejected = await self._keep_batch_rejects(items, sorted(failed), received, route, key)
        if accepted:
            try:
                await self._append(accepted)
            except LogUnavailable as exc:
                self._metrics.events_unavailable.inc(len(accepted))
                return error(503, codes.ERR_UNAVAILABLE, retry_after=exc.retry_after_secs)
            self._metrics.route_counters(route).accepted.inc(len(accepted))
        answer = {"accepted": len(accepted), "rejected": rejected}
        if accepted or not items:
            return json_response(200, answer)
        # Nothing accepted: a 2xx would let client libraries report success and drop the
        # events silently. Rate-limited ones may pass later, so their batch says 429 (which
        # the libraries retry, after Retry-After); otherwise 400, which they log as an error.
        # `code` and `message` are what Segment's and RudderStack's libraries read from a
        # refusal, and put in the error they log.
        first = rejected[0]["errors"][0]["code"] if rejected else ""
        message = f"none of the {len(items)} events was accepted (first: {first})"
        if any(status == 429 for _, status, _ in failed):
            wait = retry_after_secs(self._retry_wait())
            limited = {**answer, "code": codes.ERR_RATE_LIMITED, "message": message}
            return json_response(429, limited, [(b"retry-after", str(wait).encode())])
        refused = {**answer, "code": codes.ERR_VALIDATION, "message": message}
        return json_response(400, refused)

    def _retry_wait(self) -> float:
        """Seconds until a refused user (or key) has a token again: one token's refill."""
        rates = [b.rate for b in (self._user_buckets, self._key_buckets) if b.rate > 0]
        return max((1 / rate for rate in rates), default=1.0)

    async def _keep_batch_rejects(
        self,
        items: list[Any],
        failed: list[tuple[int, int, list[FieldError]]],
        received: int,
        route: str,
        key: ApiKey,
    ) -> list[dict[str, Any]]:
        """Keep a batch's rejected events; their entries for the answer, in event order."""
        rejected: list[dict[str, Any]] = []
        to_keep: list[IngestReject] = []
        for index, status, errors in failed:
            item = items[index]
            event_id = _sent_event_id(item) if isinstance(item, dict) else None
            rejected.append({"index": index, "event_id": event_id, "errors": _error_dicts(errors)})
            text = _kept_text(item)
            to_keep.append(
                self._reject(received, route, status, [e.code for e in errors], text, key,
                             event_id, index)
            )  # fmt: skip
        if to_keep:
            await self._keep(to_keep)
        return rejected
