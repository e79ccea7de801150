"""The dispatcher: sends one batch until each of its events is delivered, skipped or dead.

It alone decides from a destination's outcomes: backoff with full jitter
(transient and throttled policies, ``Retry-After`` first), the attempt and
elapsed-time bounds, per-row retries and rejects, the setup pause, the circuit
breaker and pacing. What becomes of the events (commit, dead-letter rows,
replay bookkeeping) is the caller's ``Settle``.

Several jobs may run at once on one dispatcher (``max_in_flight``), each on its
own thread: the answers are applied one at a time under a lock, so the breaker,
the pause and the settling see them in some order, never interleaved.

Where the platform cannot deduplicate (``dedupes_on_event_id`` false), a
request that was sent but not answered (a read timeout, a connection dropped
after the request went out) may have been taken: it is dead-lettered for an
operator to check instead of being sent again. A connection that could not be
made (refused, connect timeout) or a request that could not be written sent
nothing whole and is retried as usual.

A destination's ``build`` or ``read`` that raises (a bug that trips on one
event's payload) must not stall the destination: the events whose request
cannot be built, each tried alone, are dead-lettered with the error and the
rest is sent; an answer that cannot be read is read again per event by
sending each alone (platforms that deduplicate), and an event whose own
answer cannot be read is dead-lettered. Where the platform cannot
deduplicate, a batch whose answer cannot be read may have been taken: it is
dead-lettered whole, for an operator to check.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.deliver.alerts import CIRCUIT_OPEN, PAUSED, AlertChannel, Alerts, Outbox
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
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.inflight import unanswered_reason
from convtrack.deliver.outbound import EndpointGuard, Sender, host_of
from convtrack.deliver.policy import Backoff, Breaker, next_delay
from convtrack.observe.metrics import DeliveryMetrics
from convtrack.store.deadletters.base import Failure

log = logging.getLogger("convtrack.deliver")

REASON_CHARS = 500

# Errors raised once the whole request had left, while waiting for or reading the
# answer: the platform may have taken it. A write error or timeout means the request
# never fully left (a platform acts on no half request), so it is retried like a
# refused connection.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


class Stopped(Exception):
    """The runner was stopped while the dispatcher waited."""


class Settle(Protocol):
    def delivered(self, events: Sequence[Forwarded]) -> None: ...

    def skipped(self, events: Sequence[Forwarded], reason: str) -> None: ...

    def dead(self, rows: Sequence[tuple[Forwarded, Failure]]) -> None: ...


@dataclass
class Job:
    """One batch being delivered: the events still due and its retry history."""

    events: list[Forwarded]
    attempts: int = 0  # answered attempts; setup errors are not counted
    first_at_us: int = 0
    started: float | None = None  # monotonic time of the first attempt
    paused_secs: float = 0.0  # setup pauses do not count against max_elapsed_secs
    held_at: float | None = None
    not_before: float = 0.0
    last_status: int | None = None
    last_answer: str = ""

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started is None else now - self.started - self.paused_secs

    def failure(self, now_us: int, answer: str | None = None) -> Failure:
        return Failure(
            last_status=self.last_status, last_answer=answer or self.last_answer,
            attempts=self.attempts, first_attempt_at_us=self.first_at_us or now_us,
            last_attempt_at_us=now_us,
        )  # fmt: skip


class Dispatcher:
    def __init__(
        self,
        *,
        destination: Destination,
        settings: DestinationSettings,
        sender: Sender,
        guard: EndpointGuard,
        clock: Clock,
        metrics: DeliveryMetrics,
        alerts: Alerts,
        sleep: Callable[[float], None],
        stop: threading.Event,
        rng: random.Random,
    ) -> None:
        self.name = settings.name
        self._destination = destination
        self._settings = settings
        self._sender = sender
        self._guard = guard
        self._clock = clock
        self._metrics = metrics
        self._alerts = alerts
        self._sleep = sleep
        self._stop = stop
        self._rng = rng
        self._transient = Backoff(settings.retry_base_secs, settings.retry_cap_secs)
        self._throttle = Backoff(settings.throttle_base_secs, settings.throttle_cap_secs)
        self.breaker = Breaker(
            failure_ratio=settings.breaker_failure_ratio,
            threshold=settings.breaker_threshold,
            cooldown_secs=settings.breaker_cooldown_secs,
        )
        self._paused_until: float | None = None
        self.pause_reason: str | None = None
        self.last_error: str | None = None
        self._last_request_at: float | None = None
        self._answers = threading.RLock()  # one answer applied at a time

    # -- state ------------------------------------------------------------------

    def blocked_secs(self) -> float:
        """How long nothing may be sent: a setup pause or an open circuit (0: free)."""
        now = self._clock.monotonic()
        paused = 0.0 if self._paused_until is None else max(0.0, self._paused_until - now)
        return max(paused, self.breaker.wait_secs(now))

    @property
    def paused(self) -> bool:
        return self._paused_until is not None

    def circuit(self) -> str:
        return self.breaker.state(self._clock.monotonic())

    # -- one batch ----------------------------------------------------------------

    def run(self, job: Job, settle: Settle) -> bool:
        """Drive ``job`` to its end (True) or until it is held by a pause or an open
        circuit (False: call again later). Raises ``Stopped``."""
        while job.events:
            if self._stop.is_set():
                raise Stopped
            if self.blocked_secs() > 0:
                return False
            now = self._clock.monotonic()
            if job.held_at is not None:
                job.paused_secs += now - job.held_at
                job.held_at = None
            if job.not_before > now:
                self._wait(job.not_before - now)
            with self._answers:
                self._drop_ineligible(job, settle)
            if not job.events:
                break
            self._pace()
            try:
                request = self._build(job.events)
            except Exception as exc:
                with self._answers:
                    self._drop_unbuildable(job, settle, exc)
                continue
            if job.started is None:
                job.started, job.first_at_us = self._clock.monotonic(), self._clock.now_us()
            status, outcome = self._attempt(job.events, request)
            with self._answers:
                applied = self._apply(job, status, outcome, settle)
            if not applied:
                return False
        return True

    def _drop_ineligible(self, job: Job, settle: Settle) -> None:
        """Events that became unsendable (e.g. aged out of the platform's window) leave."""
        now_us = self._clock.now_us()
        keep: list[Forwarded] = []
        gone: dict[str, list[Forwarded]] = {}
        for event in job.events:
            reason = self._destination.skip_reason(event, now_us)
            if reason is None:
                keep.append(event)
            else:
                gone.setdefault(reason, []).append(event)
        if not gone:
            return
        job.events = keep
        for reason, events in gone.items():
            self._metrics.skipped.labels(self.name, reason).inc(len(events))
            if job.attempts == 0:
                settle.skipped(events, reason)  # never sent: a plain skip
            else:
                answer = f"{reason} after {job.attempts} attempts (last: {job.last_answer})"
                failure = job.failure(now_us, answer[:REASON_CHARS])
                self._dead(settle, [(e, failure) for e in events])

    def _build(self, events: Sequence[Forwarded]) -> OutboundRequest:
        armed = failpoints.poisoned("deliver")
        if armed:
            for event in events:
                failpoints.check("deliver", event.event_id, armed)
        return self._destination.build(events, self._clock.now_us())

    def _drop_unbuildable(self, job: Job, settle: Settle, exc: Exception) -> None:
        """Dead-letter the events whose request cannot be built (each tried alone); all of
        them when none fails alone (they fail only together: sent alone, none would)."""
        now_us = self._clock.now_us()
        failing: list[tuple[Forwarded, Failure]] = []
        for event in job.events:
            try:
                self._build([event])
            except Exception as alone:
                failing.append((event, job.failure(now_us, _unbuildable(alone))))
        if not failing:
            failing = [(e, job.failure(now_us, _unbuildable(exc))) for e in job.events]
        gone = {id(event) for event, _ in failing}
        job.events = [e for e in job.events if id(e) not in gone]
        self.last_error = f"{self.name}: {_unbuildable(exc)}"
        log.error("request_not_built", extra={"destination": self.name, "events": len(failing),
                                              "error": _unbuildable(exc)})  # fmt: skip
        self._dead(settle, failing)

    def _apply(self, job: Job, status: int | None, outcome: Outcome, settle: Settle) -> bool:
        """Act on one answer; False when the job is held by a setup pause."""
        now, now_us = self._clock.monotonic(), self._clock.now_us()
        if isinstance(outcome, Reject) and outcome.setup:
            job.held_at = now
            self._pause(outcome.reason)
            return False
        self._resume()
        if isinstance(outcome, Delivered):
            self._delivered(job.events, settle)
            job.events = []
            self._record(0.0)
            return True
        job.attempts += 1
        job.last_status, job.last_answer = status, outcome.reason[:REASON_CHARS]
        failing = f"{self.name}: {job.last_answer}"
        self.last_error = failing
        sent = len(job.events)
        after, throttled = None, False
        if isinstance(outcome, Reject):
            self._dead(settle, [(e, job.failure(now_us)) for e in job.events])
            job.events = []
            self._record(1.0)
            return True
        if isinstance(outcome, RetryPartial):
            retry_ids, rejected = set(outcome.event_ids), outcome.rejected
            refused = [e for e in job.events if e.event_id in rejected]
            retry = [e for e in job.events if e.event_id in retry_ids - rejected.keys()]
            accepted = [e for e in job.events if e.event_id not in retry_ids | rejected.keys()]
            self._delivered(accepted, settle)
            self.last_error = failing  # some rows failed: not cleared by the others
            self._dead(settle, [(e, job.failure(now_us, f"{rejected[e.event_id]}"[:REASON_CHARS]))
                                for e in refused])  # fmt: skip
            job.events, after = retry, outcome.after_secs
            self._record((len(retry) + len(refused)) / sent)
        else:
            after, throttled = outcome.after_secs, outcome.throttled
            self._record(1.0)
        if not job.events:
            return True
        delay = next_delay(
            attempt=job.attempts,
            after_secs=after,
            throttled=throttled,
            transient=self._transient,
            throttle=self._throttle,
            rng=self._rng,
        )
        if job.attempts >= self._settings.max_attempts or (
            job.elapsed(now) + delay > self._settings.max_elapsed_secs
        ):
            self._dead(settle, [(e, job.failure(now_us)) for e in job.events])
            job.events = []
            return True
        job.not_before = now + delay
        return True

    def _delivered(self, events: Sequence[Forwarded], settle: Settle) -> None:
        if not events:
            return
        now_us = self._clock.now_us()
        self._metrics.delivered.labels(self.name).inc(len(events))
        histogram = self._metrics.acceptance_seconds.labels(self.name)
        for event in events:
            histogram.observe(max(0.0, (now_us - event.payload.received_at_us) / 1e6))
        self.last_error = None
        settle.delivered(events)

    def _dead(self, settle: Settle, rows: Sequence[tuple[Forwarded, Failure]]) -> None:
        if not rows:
            return
        self._metrics.dead_lettered.labels(self.name).inc(len(rows))
        first = rows[0][1]
        log.warning(
            "events_dead_lettered",
            extra={"destination": self.name, "events": len(rows),
                   "status": first.last_status, "answer": first.last_answer},
        )  # fmt: skip
        settle.dead(rows)

    def _record(self, failed_ratio: float) -> None:
        change = self.breaker.record(failed_ratio, self._clock.monotonic())
        if change == "opened":
            self._alerts.raise_(
                CIRCUIT_OPEN, self.name,
                f"circuit open: {self._settings.breaker_threshold} failing requests in a row "
                f"(last: {self.last_error}); nothing is sent for "
                f"{self._settings.breaker_cooldown_secs:g} s, then one trial batch",
            )  # fmt: skip
        elif change == "closed":
            self._alerts.clear(CIRCUIT_OPEN, self.name)

    def _pause(self, reason: str) -> None:
        self._paused_until = self._clock.monotonic() + self._settings.setup_pause_secs
        self.pause_reason = reason[:REASON_CHARS]
        self.last_error = f"{self.name}: {self.pause_reason}"
        self._alerts.raise_(
            PAUSED, self.name,
            f"paused by a setup error: {self.pause_reason}. Nothing is dead-lettered; the "
            f"same batch is tried again every {self._settings.setup_pause_secs:g} s",
        )  # fmt: skip

    def _resume(self) -> None:
        if self._paused_until is not None:
            self._paused_until = None
            self.pause_reason = None
            self._alerts.clear(PAUSED, self.name)

    # -- one request --------------------------------------------------------------

    def _attempt(
        self, events: Sequence[Forwarded], request: OutboundRequest
    ) -> tuple[int | None, Outcome]:
        try:
            status, outcome, label = self._send(request, events)
        except _Unreadable as unreadable:
            self._metrics.attempts.labels(self.name, "unreadable").inc()
            return unreadable.status, self._read_alone(events, unreadable)
        self._metrics.attempts.labels(self.name, label).inc()
        return status, outcome

    def _read_alone(self, events: Sequence[Forwarded], unreadable: _Unreadable) -> Outcome:
        """The answer to a batch could not be read: settle each event on its own."""
        reason = f"the answer could not be read: {unreadable.error}"[:REASON_CHARS]
        if len(events) == 1 or not self._destination.dedupes_on_event_id:
            return Reject(reason=reason)
        retry: list[str] = []
        rejected: dict[str, str] = {}
        for event in events:
            try:
                _, outcome = self._attempt([event], self._build([event]))
            except Exception as exc:
                outcome = Reject(reason=_unbuildable(exc))
            if isinstance(outcome, Reject) and not outcome.setup:
                rejected[event.event_id] = outcome.reason
            elif not isinstance(outcome, Delivered):
                retry.append(event.event_id)
        if not retry and not rejected:
            return Delivered()
        return RetryPartial(event_ids=retry, reason=reason, rejected=rejected)

    def _send(
        self, request: OutboundRequest, events: Sequence[Forwarded] | None
    ) -> tuple[int | None, Outcome, str]:
        refusal = self._guard.refusal(request.url)
        if refusal is not None:
            return None, Reject(reason=refusal, setup=True), "refused"
        started = time.perf_counter()
        try:
            status, headers, body = self._sender.send(request)
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException):
                what = f"timed out after {self._settings.timeout_secs:g} s ({host_of(request.url)})"
            else:
                what = _describe(exc, request.url)
            if isinstance(exc, _MAYBE_SENT) and not self._destination.dedupes_on_event_id:
                return None, Reject(reason=unanswered_reason(self.name, what)), "error"
            return None, Retry(after_secs=None, reason=what), "error"
        finally:
            self._last_request_at = self._clock.monotonic()
            elapsed = time.perf_counter() - started
            self._metrics.request_seconds.labels(self.name).observe(elapsed)
        if 300 <= status < 400:
            target = host_of(headers.get("location", "")) if headers.get("location") else "?"
            reason = (f"HTTP {status}: redirect (to host {target}) not followed; "
                      "set the endpoint to the final URL")  # fmt: skip
            return status, Reject(reason=reason, setup=True), "setup"
        if events is None:
            return status, Delivered() if 200 <= status < 300 else Reject(f"HTTP {status}"), "alert"
        try:
            outcome = self._destination.read(events, status, headers, body)
        except Exception as exc:
            raise _Unreadable(status, exc) from exc
        if not isinstance(outcome, Delivered) and not outcome.reason:
            outcome = Reject(reason=f"HTTP {status}: {excerpt(body)}")
        return status, outcome, _label(outcome)

    def _pace(self) -> None:
        interval = self._destination.min_interval_secs
        if interval > 0 and self._last_request_at is not None:
            wait = self._last_request_at + interval - self._clock.monotonic()
            if wait > 0:
                self._wait(wait)

    def _wait(self, secs: float) -> None:
        self._sleep(secs)
        if self._stop.is_set():
            raise Stopped

    # -- alerts to Slack ----------------------------------------------------------

    def send_alerts(self, outbox: Outbox) -> int:
        """Post queued alert messages (best effort: one attempt each); returns how many."""
        channel = self._destination
        if not isinstance(channel, AlertChannel) or self.blocked_secs() > 0:
            return 0
        sent = 0
        while (text := outbox.take()) is not None:
            self._pace()
            request = channel.alert_request(text, self._clock.now_us())
            status, outcome, _ = self._send(request, None)
            sent += 1
            if not isinstance(outcome, Delivered):
                log.warning("alert_not_sent", extra={"destination": self.name, "status": status,
                                                     "answer": outcome.reason})  # fmt: skip
        return sent


class _Unreadable(Exception):
    """The destination's ``read`` raised on an answer."""

    def __init__(self, status: int, error: Exception) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = f"{type(error).__name__}: {error}"


def _unbuildable(exc: BaseException) -> str:
    return f"the request could not be built: {type(exc).__name__}: {exc}"[:REASON_CHARS]


def _label(outcome: Outcome) -> str:
    match outcome:
        case Delivered():
            return "delivered"
        case RetryPartial():
            return "partial"
        case Retry(throttled=True):
            return "throttled"
        case Retry():
            return "retry"
        case Reject(setup=True):
            return "setup"
        case Reject():
            return "rejected"


def _describe(exc: httpx.HTTPError, url: str) -> str:
    """The error without the URL's path or query: they may hold a secret (Slack, GA4)."""
    text = f"{type(exc).__name__}: {exc}".replace(url, host_of(url))
    return f"{text} ({host_of(url)})"[:REASON_CHARS]
