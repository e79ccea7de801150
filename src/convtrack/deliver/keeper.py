"""One destination's dead letters: stored under the cap, counted, watched, replayed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from convtrack.clock import Clock
from convtrack.config import DeadLettersSettings
from convtrack.deliver.alerts import DEAD_LETTERS, Alerts
from convtrack.deliver.base import Forwarded
from convtrack.deliver.dispatch import Dispatcher, Job
from convtrack.deliver.exchange import Stopped
from convtrack.observe.metrics import DeliveryMetrics
from convtrack.store.deadletters.base import DeadLetter, DeadLetterStore, Failure

log = logging.getLogger("convtrack.deliver")

CHECK_INTERVAL_SECS = 30.0  # the CLI may purge or replay from another process
REPLAY_CLAIM_NOTE = (
    "replay in flight: if this row is still here after a crash, the platform may have the "
    "event (it cannot deduplicate); check before replaying again"
)


class DeadLetterKeeper:
    def __init__(
        self,
        store: DeadLetterStore,
        destination: str,
        *,
        clock: Clock,
        metrics: DeliveryMetrics,
        alerts: Alerts,
        limits: DeadLettersSettings,
        claim_replays: bool,
    ) -> None:
        self.store = store
        self.name = destination
        self._clock = clock
        self._metrics = metrics
        self._alerts = alerts
        self.limits = limits
        self._claim_replays = claim_replays
        self._next_check = 0.0
        self.total = 0  # as of the last check (for health: no I/O there)
        self.dead_lettered = 0

    def now_us(self) -> int:
        return self._clock.now_us()

    def keep(self, rows: Sequence[tuple[Forwarded, Failure]], *, in_flight: bool = False) -> None:
        """Store rows the dispatcher dead-lettered (it counted them); ``in_flight``: flag
        their in-flight markers in the same transaction."""
        dropped = self.store.add_rows(
            self.name, rows, cap=self.limits.max_per_destination, in_flight=in_flight
        )
        self.dead_lettered += len(rows)
        self.dropped(dropped)
        self.check(force=True)

    def kept_elsewhere(self, count: int, dropped: int) -> None:
        """Rows another part stored (in-flight recovery): count them here."""
        if count:
            self.dead_lettered += count
            self._metrics.dead_lettered.labels(self.name).inc(count)
        self.dropped(dropped)
        self.check(force=True)

    def dropped(self, count: int) -> None:
        if count:
            self._metrics.dead_letters_dropped.labels(self.name).inc(count)
            log.warning("dead_letters_dropped", extra={"destination": self.name, "rows": count,
                        "cap": self.limits.max_per_destination})  # fmt: skip

    def check(self, force: bool = False) -> None:
        """Refresh the gauge, and raise or clear the alert over ``alert_threshold``."""
        now = self._clock.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL_SECS
        total = self.total = self.store.total(self.name)
        self._metrics.dead_letters.labels(self.name).set(total)
        threshold = self.limits.alert_threshold
        if total > threshold:
            self._alerts.raise_(
                DEAD_LETTERS, self.name,
                f"{total} dead letters (more than {threshold}): see `convtrack dlq list "
                f"--destination {self.name}`, fix the cause, then replay",
            )  # fmt: skip
        else:
            self._alerts.clear(DEAD_LETTERS, self.name)

    def replay(
        self, dispatcher: Dispatcher, limit: int, on_delivered: Callable[[int], None]
    ) -> int:
        """Send rows queued for replay (to this destination only); returns how many were
        settled (0: none queued, or held by a pause, an open circuit or a stop)."""
        rows = self.store.replay_batch(self.name, limit, self._clock.now_us())
        if not rows:
            return 0
        if self._claim_replays:
            self.store.claim([row.id for row in rows], REPLAY_CLAIM_NOTE)
        settle = _ReplaySettle(self, rows, on_delivered)
        job = Job(events=[row.event for row in rows])
        try:
            done = dispatcher.run(job, settle)
        except Stopped:
            done = False
        if not done and job.events:  # replay_batch claimed them all: not sent, queued again
            self.store.unclaim(settle.rows_of(job.events))
        self.check(force=True)
        return len(rows) if done else 0


class _ReplaySettle:
    """Delivered rows leave the store; failed ones stay, unqueued, with the new answer."""

    def __init__(
        self,
        keeper: DeadLetterKeeper,
        rows: Sequence[DeadLetter],
        on_delivered: Callable[[int], None],
    ) -> None:
        self._keeper = keeper
        self._store = keeper.store
        self._by_event = {id(row.event): row for row in rows}
        self._on_delivered = on_delivered

    def rows_of(self, events: Sequence[Forwarded]) -> list[DeadLetter]:
        return [self._by_event[id(e)] for e in events]

    def delivered(self, events: Sequence[Forwarded]) -> None:
        self._store.remove([row.id for row in self.rows_of(events)])
        self._on_delivered(len(events))

    def skipped(self, events: Sequence[Forwarded], reason: str) -> None:
        now_us = self._keeper.now_us()
        failure = Failure(last_status=None, last_answer=f"not replayed: {reason}", attempts=0,
                          first_attempt_at_us=now_us, last_attempt_at_us=now_us)  # fmt: skip
        self._store.failed_again([row.id for row in self.rows_of(events)], failure)

    def dead(self, rows: Sequence[tuple[Forwarded, Failure]]) -> None:
        for event, failure in rows:
            self._store.failed_again([self._by_event[id(event)].id], failure)


class LogBatchSettle:
    """How the batches a runner read from the log settle: dead letters are kept (their
    in-flight markers flagged in the same transaction); the commit comes after, in log
    order. Called from the request threads."""

    def __init__(
        self, keeper: DeadLetterKeeper, *, in_flight: bool, delivered: Callable[[int], None]
    ) -> None:
        self._keeper = keeper
        self._in_flight = in_flight
        self._delivered = delivered

    def delivered(self, events: Sequence[Forwarded]) -> None:
        self._delivered(len(events))

    def skipped(self, events: Sequence[Forwarded], reason: str) -> None:
        pass  # counted by the dispatcher; committed with the batch

    def dead(self, rows: Sequence[tuple[Forwarded, Failure]]) -> None:
        self._keeper.keep(rows, in_flight=self._in_flight)
