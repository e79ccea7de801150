"""The dispatcher: sends one batch until each of its events is delivered, skipped or dead.

It alone decides from a destination's outcomes: backoff with full jitter
(transient and throttled policies, ``Retry-After`` first), the attempt and
elapsed-time bounds, per-row retries and rejects, the setup pause, the circuit
breaker and pacing. What becomes of the events (commit, dead-letter rows,
replay bookkeeping) is the caller's ``Settle``.

Several jobs may run at once on one dispatcher (``max_in_flight``), each on its
own thread: the answers are applied one at a time under a lock, so the breaker,
the pause and the settling see them in some order, never interleaved.

Requests are built, sent and their answers read into outcomes by the
destination's ``Exchange`` (``deliver.exchange``: the endpoint check, pacing,
and the outcome of a request with no answer to read; where the platform cannot
deduplicate, one that may have been taken is dead-lettered for an operator to
check instead of being sent again). Alerts to Slack take their own path
through it (``deliver.alerts.AlertPoster``).

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, assert_never

from convtrack.clock import Clock
from convtrack.deliver.alerts import CIRCUIT_OPEN, PAUSED, Alerts
from convtrack.deliver.base import (
    Delivered,
    Destination,
    Forwarded,
    Outcome,
    Reject,
    Retry,
    RetryPartial,
    SetupFault,
    Throttled,
)
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.exchange import Exchange, Stopped, unbuildable
from convtrack.deliver.outbound import REASON_CHARS
from convtrack.deliver.policy import Backoff, Breaker, next_delay
from convtrack.observe.metrics import DeliveryMetrics
from convtrack.store.deadletters.base import Failure

log = logging.getLogger("convtrack.deliver")


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
        exchange: Exchange,
        clock: Clock,
        metrics: DeliveryMetrics,
        alerts: Alerts,
        rng: random.Random,
    ) -> None:
        self.name = settings.name
        self._destination = destination
        self._settings = settings
        self._exchange = exchange
        self._clock = clock
        self._metrics = metrics
        self._alerts = alerts
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
            if self._exchange.stopped:
                raise Stopped
            if self.blocked_secs() > 0:
                return False
            now = self._clock.monotonic()
            if job.held_at is not None:
                job.paused_secs += now - job.held_at
                job.held_at = None
            if job.not_before > now:
                self._exchange.wait(job.not_before - now)
            with self._answers:
                self._drop_ineligible(job, settle)
            if not job.events:
                break
            self._exchange.pace()
            try:
                request = self._exchange.build(job.events)
            except Exception as exc:
                with self._answers:
                    self._drop_unbuildable(job, settle, exc)
                continue
            if job.started is None:
                job.started, job.first_at_us = self._clock.monotonic(), self._clock.now_us()
            status, outcome = self._exchange.attempt(job.events, request)
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

    def _drop_unbuildable(self, job: Job, settle: Settle, exc: Exception) -> None:
        """Dead-letter the events whose request cannot be built (each tried alone); all of
        them when none fails alone (they fail only together: sent alone, none would)."""
        now_us = self._clock.now_us()
        failing: list[tuple[Forwarded, Failure]] = []
        for event in job.events:
            try:
                self._exchange.build([event])
            except Exception as alone:
                failing.append((event, job.failure(now_us, unbuildable(alone))))
        if not failing:
            failing = [(e, job.failure(now_us, unbuildable(exc))) for e in job.events]
        gone = {id(event) for event, _ in failing}
        job.events = [e for e in job.events if id(e) not in gone]
        self.last_error = f"{self.name}: {unbuildable(exc)}"
        log.error("request_not_built", extra={"destination": self.name, "events": len(failing),
                                              "error": unbuildable(exc)})  # fmt: skip
        self._dead(settle, failing)

    def _apply(self, job: Job, status: int | None, outcome: Outcome, settle: Settle) -> bool:
        """Act on one answer; False when the job is held by a setup pause."""
        now, now_us = self._clock.monotonic(), self._clock.now_us()
        match outcome:
            case SetupFault(reason=reason):
                job.held_at = now
                self._pause(reason)
                return False
            case Delivered():
                self._resume()
                self._delivered(job.events, settle)
                job.events = []
                self._record(0.0)
                return True
            case Reject(reason=reason):
                self._resume()
                self._failed(job, status, reason)
                self._dead(settle, [(e, job.failure(now_us)) for e in job.events])
                job.events = []
                self._record(1.0)
                return True
            case RetryPartial():
                self._resume()
                self._failed(job, status, outcome.reason)
                self._split(job, outcome, settle, now_us)
                return self._schedule(job, settle, now, now_us, outcome.after_secs, throttled=False)
            case Retry(after_secs=after, reason=reason):
                self._resume()
                self._failed(job, status, reason)
                self._record(1.0)
                return self._schedule(job, settle, now, now_us, after, throttled=False)
            case Throttled(after_secs=after, reason=reason):
                self._resume()
                self._failed(job, status, reason)
                self._record(1.0)
                return self._schedule(job, settle, now, now_us, after, throttled=True)
            case _:
                assert_never(outcome)

    def _failed(self, job: Job, status: int | None, reason: str) -> None:
        """Count an answered attempt that did not deliver every event."""
        job.attempts += 1
        job.last_status, job.last_answer = status, reason[:REASON_CHARS]
        self.last_error = f"{self.name}: {job.last_answer}"

    def _split(self, job: Job, outcome: RetryPartial, settle: Settle, now_us: int) -> None:
        """Some rows failed: deliver the accepted, dead-letter the refused, keep the rest."""
        failing, sent = self.last_error, len(job.events)
        retry_ids, rejected = set(outcome.event_ids), outcome.rejected
        refused = [e for e in job.events if e.event_id in rejected]
        retry = [e for e in job.events if e.event_id in retry_ids - rejected.keys()]
        accepted = [e for e in job.events if e.event_id not in retry_ids | rejected.keys()]
        self._delivered(accepted, settle)
        self.last_error = failing  # some rows failed: not cleared by the others
        self._dead(settle, [(e, job.failure(now_us, f"{rejected[e.event_id]}"[:REASON_CHARS]))
                            for e in refused])  # fmt: skip
        job.events = retry
        self._record((len(retry) + len(refused)) / sent)

    def _schedule(
        self,
        job: Job,
        settle: Settle,
        now: float,
        now_us: int,
        after: float | None,
        *,
        throttled: bool,
    ) -> bool:
        """Set when the events still due go again, or dead-letter them past the bounds."""
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
