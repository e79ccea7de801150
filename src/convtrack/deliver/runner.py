"""The shared delivery machinery: filter, batch, send, retry, dead-letter, commit.

One runner per configured destination, on its own thread, reading the
processed log as consumer group ``deliver-<name>``. Conversions (bots are
never conversions) that pass the destination's filters are batched by size
or by wait; a batch is sent with retries (exponential backoff with full
jitter, or the receiver's ``Retry-After``) until it is delivered, rejected
or out of attempts or time, and then dead-lettered. Offsets are committed
only after the batch was delivered or dead-lettered, so a crash sends again
what was not committed (at-least-once; receivers dedupe on ``webhook-id``).
Dead letters marked for replay are sent before new events.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from convtrack.clock import Clock
from convtrack.config_destinations import DestinationSettings
from convtrack.deliver.answers import excerpt
from convtrack.deliver.base import (
    Delivered,
    Destination,
    Forwarded,
    OutboundRequest,
    Outcome,
    Reject,
    Retry,
    RetryPartial,
)
from convtrack.deliver.deadletters import DeadLetterStore, Failure
from convtrack.log.base import LogConsumer, LogEntry, LogLag, next_positions
from convtrack.model.pii import HASHED_FIELDS
from convtrack.model.processed import ProcessedEvent, decode_processed
from convtrack.observe.metrics import Metrics

log = logging.getLogger("convtrack.deliver")

MAX_ANSWER_BYTES = 64 * 1024
REQUEST_TIMEOUT_SECS = 20.0
BACKOFF_BASE_SECS = 1.0
BACKOFF_CAP_SECS = 600.0


def _rfc3339(us: int) -> str:
    moment = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def forward_payload(processed: ProcessedEvent) -> dict[str, Any]:
    """What a destination receives of one event (contact fields only as their hashes)."""
    event = processed.event
    return {
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_time": _rfc3339(event.event_time_us),
        "value": event.value,
        "currency": event.currency,
        "campaign_id": processed.campaign_id,
        "campaign_source": processed.campaign_source,
        "campaign_medium": processed.campaign_medium,
        "device_type": processed.device_type,
        "country_code": processed.country_code,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "properties": event.properties,
        "user": {k: v for k, v in event.user.items() if k in HASHED_FIELDS},
        "click_ids": event.click_ids,
        "consent": event.consent,
    }


def wanted(settings: DestinationSettings, processed: ProcessedEvent) -> bool:
    """Conversions only (never bots), then the destination's own filters."""
    if not processed.is_conversion or processed.is_bot:
        return False
    event = processed.event
    if settings.event_names and event.event_name not in settings.event_names:
        return False
    if settings.min_value is not None:
        return event.value is not None and event.value >= settings.min_value
    return True


def backoff_secs(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
    return rng.uniform(0.0, min(BACKOFF_CAP_SECS, BACKOFF_BASE_SECS * 2 ** (attempt - 1)))


class _Stopped(Exception):
    """The runner was stopped while a batch waited for its next attempt."""


class Sender:
    """Sends one request; never follows redirects; reads at most ``MAX_ANSWER_BYTES``."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECS, connect=5.0),
            follow_redirects=False,
            transport=transport,
        )

    def send(self, request: OutboundRequest) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and the start of the body; raises httpx errors."""
        with self._client.stream(
            request.method, request.url, headers=request.headers, content=request.body
        ) as response:
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_ANSWER_BYTES:
                    body = body[:MAX_ANSWER_BYTES]
                    break
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, headers, body

    def close(self) -> None:
        self._client.close()


class DeliveryRunner:
    """Delivers one destination's events; ``run_once`` by hand or ``start`` a thread."""

    def __init__(
        self,
        *,
        destination: Destination,
        settings: DestinationSettings,
        consumer: LogConsumer,
        deadletters: DeadLetterStore,
        clock: Clock,
        metrics: Metrics,
        sender: Sender | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = settings.name
        self._destination = destination
        self._settings = settings
        self._consumer = consumer
        self._deadletters = deadletters
        self._clock = clock
        self._metrics = metrics
        self._sender = sender or Sender()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._rng = rng or random.Random()
        self._entries: list[LogEntry] = []  # read since the last commit
        self._batch: list[Forwarded] = []  # the wanted ones among them
        self._batch_started = 0.0
        self._thread = threading.Thread(target=self._run, name=f"deliver-{self.name}", daemon=True)
        self._lag = LogLag(events=0, seconds=0.0)
        self.last_error: str | None = None
        self.delivered = 0
        self.dead_lettered = 0

    # -- one step ---------------------------------------------------------------

    def run_once(self, timeout_secs: float = 0.0) -> int:
        """Send queued replays, read new events, send a batch that is due.

        Returns how many events were read or replayed (0: nothing to do now).
        """
        replayed = self._replay()
        if replayed:
            return replayed
        room = self._settings.batch_max_events - len(self._batch)
        entries = self._consumer.poll(room, timeout_secs) if room > 0 else []
        for entry in entries:
            processed = decode_processed(entry.payload)
            if wanted(self._settings, processed):
                if not self._batch:
                    self._batch_started = self._clock.monotonic()
                self._batch.append(
                    Forwarded(
                        event_id=processed.event.event_id,
                        source_partition=entry.partition,
                        source_offset=entry.offset,
                        payload=forward_payload(processed),
                    )
                )
        self._entries.extend(entries)
        self._lag = self._consumer.lag()
        if not self._batch:
            if self._entries:  # nothing wanted among them: move on
                self._consumer.commit(next_positions(self._entries))
                self._entries.clear()
            return len(entries)
        full = len(self._batch) >= self._settings.batch_max_events
        waited = self._clock.monotonic() - self._batch_started
        if full or waited >= self._settings.batch_max_wait_secs:
            self.flush()
        return len(entries)

    def flush(self) -> bool:
        """Send the buffered batch now; commit once delivered or dead-lettered."""
        if self._batch:
            try:
                failure = self._deliver(self._batch)
            except _Stopped:
                return False  # stopped mid-retry: not committed, sent again after a restart
            if failure is None:
                self.delivered += len(self._batch)
            else:
                self._deadletters.add(self.name, self._batch, failure)
                self.dead_lettered += len(self._batch)
                log.warning(
                    "batch_dead_lettered",
                    extra={"destination": self.name, "events": len(self._batch),
                           "status": failure.last_status, "answer": failure.last_answer},
                )  # fmt: skip
        if self._entries:
            self._consumer.commit(next_positions(self._entries))
        self._entries.clear()
        self._batch.clear()
        return True

    def _replay(self) -> int:
        rows = self._deadletters.replay_batch(self.name, self._settings.batch_max_events)
        if not rows:
            return 0
        try:
            failure = self._deliver([row.event for row in rows])
        except _Stopped:
            return 0  # still marked: replayed after a restart
        ids = [row.id for row in rows]
        if failure is None:
            self._deadletters.remove(ids)
            self.delivered += len(rows)
        else:
            self._deadletters.failed_again(ids, failure)
        return len(rows)

    def _deliver(self, events: Sequence[Forwarded]) -> Failure | None:
        """Send with retries; None once delivered, else how it failed for good.

        Raises ``_Stopped`` when the runner was stopped while waiting to retry.
        """
        started = self._clock.monotonic()
        first_at = self._clock.now_us()
        attempt = 0
        while True:
            attempt += 1
            status, outcome = self._attempt(events)
            if isinstance(outcome, Delivered):
                self.last_error = None
                return None
            answer = outcome.reason
            self.last_error = f"{self.name}: {answer}"
            failed = Failure(
                last_status=status, last_answer=answer, attempts=attempt,
                first_attempt_at_us=first_at, last_attempt_at_us=self._clock.now_us(),
            )  # fmt: skip
            if isinstance(outcome, Reject):
                return failed
            after = outcome.after_secs if isinstance(outcome, Retry) else None
            delay = after if after is not None else backoff_secs(attempt, self._rng)
            elapsed = self._clock.monotonic() - started
            if attempt >= self._settings.max_attempts or (
                elapsed + delay > self._settings.max_elapsed_secs
            ):
                return failed
            self._sleep(delay)
            if self._stop.is_set():
                raise _Stopped

    def _attempt(self, events: Sequence[Forwarded]) -> tuple[int | None, Outcome]:
        request = self._destination.build(events, self._clock.now_us())
        try:
            status, headers, body = self._sender.send(request)
        except httpx.HTTPError as exc:
            self._metrics.errors.labels("deliver", type(exc).__name__).inc()
            return None, Retry(after_secs=None, reason=f"{type(exc).__name__}: {exc}"[:500])
        outcome = self._destination.read(events, status, headers, body)
        if isinstance(outcome, RetryPartial):  # whole-batch retry: receivers dedupe by event
            outcome = Retry(after_secs=None, reason=outcome.reason)
        if not isinstance(outcome, Delivered) and not outcome.reason:
            outcome = Reject(reason=f"HTTP {status}: {excerpt(body)}")
        return status, outcome

    # -- the thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def health(self) -> dict[str, object]:
        return {
            "healthy": self.last_error is None,
            "detail": self.last_error or "ok",
            "lag_events": self._lag.events,
            "buffered_events": len(self._batch),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(timeout_secs=0.2)
            except Exception as exc:
                self.last_error = f"{self.name}: {exc}"
                self._metrics.errors.labels("deliver", type(exc).__name__).inc()
                log.exception("delivery_failed", extra={"destination": self.name})
                self._stop.wait(1.0)

    def stop(self) -> None:
        """Stop; what is buffered and not committed is sent again after a restart."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._consumer.close()
        self._sender.close()
