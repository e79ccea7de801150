"""Sending queued events: split into requests, act on each answer, count every event.

Shared by the thread worker and the asyncio worker; they differ only in how they
wait and how they call the transport (``deliver_blocking`` / ``deliver_async``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from convtrack_sdk import _stats
from convtrack_sdk._errors import TransportError
from convtrack_sdk._events import BATCH_OVERHEAD, QueuedEvent
from convtrack_sdk._http import Answer
from convtrack_sdk._outcome import Delivered, Refused, Rejection, Retry, Split, classify
from convtrack_sdk._retry import RetryPolicy
from convtrack_sdk._stats import Counters

log = logging.getLogger("convtrack_sdk")
BATCH_PATH = "/v1/batch"


def split(
    events: Sequence[QueuedEvent], max_events: int, max_bytes: int
) -> list[list[QueuedEvent]]:
    """Requests of at most ``max_events`` events and ``max_bytes`` of body each, in order."""
    chunks: list[list[QueuedEvent]] = []
    current: list[QueuedEvent] = []
    size = BATCH_OVERHEAD
    for event in events:
        extra = len(event.data) + (1 if current else 0)  # the comma between events
        if current and (len(current) >= max_events or size + extra > max_bytes):
            chunks.append(current)
            current, size, extra = [], BATCH_OVERHEAD, len(event.data)
        current.append(event)
        size += extra
    if current:
        chunks.append(current)
    return chunks


def batch_body(events: Sequence[QueuedEvent]) -> bytes:
    return b'{"batch":[' + b",".join(e.data for e in events) + b"]}"


@dataclass(frozen=True)
class Again:
    events: list[QueuedEvent]
    delay_secs: float


Next = Again | list[list[QueuedEvent]] | None  # resend later, resend split now, or done


class Dispatcher:
    def __init__(
        self,
        counters: Counters,
        policy: RetryPolicy,
        *,
        max_batch_events: int,
        max_batch_bytes: int,
        on_reject: Callable[[Rejection], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._counters = counters
        self._policy = policy
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._on_reject = on_reject
        self._rng = rng or random.Random()

    def chunks(self, events: Sequence[QueuedEvent]) -> list[list[QueuedEvent]]:
        return split(events, self._max_events, self._max_bytes)

    def after(
        self, chunk: list[QueuedEvent], result: Answer | TransportError, retries: int
    ) -> Next:
        """Count what ``result`` settled for ``chunk``; say what to do with the rest."""
        self._counters.add("requests")
        if isinstance(result, TransportError):
            outcome: Delivered | Retry | Split | Refused = Retry(None, str(result))
        else:
            outcome = classify(result, len(chunk))
        if isinstance(outcome, Delivered):
            self._counters.add("accepted", outcome.accepted)
            for index, errors in outcome.rejected:
                self._rejected(chunk[index], errors)
            if not outcome.retry:
                return None
            # Only the rate-limited events go again: the others are settled.
            chunk = [chunk[i] for i in outcome.retry]
            outcome = Retry(None, "rate_limited")
        if isinstance(outcome, Split):
            return self._smaller(chunk, outcome.limit_bytes)
        if isinstance(outcome, Refused):
            self._refused(chunk, outcome)
            return None
        if retries >= self._policy.max_retries:
            self._counters.drop(_stats.RETRIES_EXHAUSTED, len(chunk))
            log.error(
                "convtrack: gave up on %d events after %d retries (%s)",
                len(chunk), retries, outcome.reason,
                extra={"events": len(chunk), "reason": outcome.reason},
            )  # fmt: skip
            return None
        delay = self._policy.delay_secs(retries, outcome.after_secs, self._rng)
        self._counters.add("retries")
        log.info(
            "convtrack: resending %d events in %.2fs (%s)", len(chunk), delay, outcome.reason,
            extra={"events": len(chunk), "delay_secs": delay, "reason": outcome.reason},
        )  # fmt: skip
        return Again(chunk, delay)

    def _smaller(
        self, chunk: list[QueuedEvent], limit_bytes: int | None
    ) -> list[list[QueuedEvent]]:
        """A chunk the server found too large, as requests within its limit when the
        answer says it (kept for later requests too), else in halves."""
        if limit_bytes is not None and limit_bytes < self._max_bytes:
            self._max_bytes = limit_bytes
            log.warning(
                "convtrack: the server takes at most %d bytes a request; sending less",
                limit_bytes, extra={"limit_bytes": limit_bytes},
            )  # fmt: skip
            parts = self.chunks(chunk)
            if len(parts) > 1:
                return parts
        half = len(chunk) // 2
        return [chunk[:half], chunk[half:]]

    def _rejected(self, event: QueuedEvent, errors: tuple[dict[str, str], ...]) -> None:
        codes = tuple(e.get("code", "") for e in errors)
        self._counters.reject(codes)
        log.warning(
            "convtrack rejected event %s (client_seq %d): %s", event.event_id, event.seq,
            ", ".join(f"{e.get('field', '?')}: {e.get('code', '?')}" for e in errors),
            extra={"event_id": event.event_id, "client_seq": event.seq, "codes": codes},
        )  # fmt: skip
        if self._on_reject is not None:
            rejection = Rejection(event.event_id, event.seq, codes, errors)
            try:
                self._on_reject(rejection)
            except Exception:
                log.exception("convtrack: the on_reject callback raised")

    def _refused(self, chunk: list[QueuedEvent], outcome: Refused) -> None:
        if outcome.status in (400, 413):
            # The server kept the body with the rejects; every event is refused as invalid.
            errors = outcome.errors or ({"field": "body", "code": outcome.reason},)
            for event in chunk:
                self._rejected(event, errors)
            return
        self._counters.drop(_stats.REFUSED, len(chunk))
        log.error(
            "convtrack refused %d events: HTTP %d %s", len(chunk), outcome.status, outcome.reason,
            extra={"events": len(chunk), "status": outcome.status, "reason": outcome.reason},
        )  # fmt: skip

    def abandon(self, events: Sequence[QueuedEvent]) -> None:
        if events:
            self._counters.drop(_stats.CLOSED, len(events))
            log.error(
                "convtrack: %d events not sent before close()", len(events),
                extra={"events": len(events)},
            )  # fmt: skip
