"""The processor loop: poll the log, push each batch through the steps, repeat.

One batch at a time: the next poll happens only after the commit step
finished, so a slow hot store leaves events waiting in the durable log
(backpressure) rather than in memory. A batch that fails because a backend is
away is retried with backoff until it succeeds or the runner stops; one that
fails for a reason of its own is bisected, and an event that fails alone is
quarantined while the rest is counted (process/poison.py). Positions never
move past an event that is neither committed nor quarantined.

Health: the runner is unhealthy while its batch fails, and stalled (also
unhealthy, ``/readyz`` names it) when the log holds entries for it and it has
committed nothing for ``process.stall_secs``.

Any number of processors may share the log's consumer group. Whenever a
partition starts (at start, or when a rebalance hands it to this process, or
the log rewinds it), the runner first moves it to the partition's resume
point (``resume_positions``), computed then and there, so it publishes exactly
what the processed log is missing from that partition. Two processors that
briefly own one partition may both publish a stretch of it; readers keep the
first copy (log/published.py, ADR 0004).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from convtrack.clock import Clock
from convtrack.errors import ConvtrackError
from convtrack.log.base import EventLog, LogConsumer, LogEntry, LogLag, next_positions
from convtrack.model.processed import decode_processed
from convtrack.observe.logs import RepeatLimiter
from convtrack.observe.metrics import Metrics
from convtrack.process.base import GROUP, Batch, Step
from convtrack.process.poison import LOG_REPEAT_SECS, PoisonGuard, Stopping
from convtrack.store.hot.base import HotStore
from convtrack.store.quarantine.base import QuarantineStore

log = logging.getLogger("convtrack.process")

EXPIRY_INTERVAL_SECS = 10.0
# Entries are forgotten only once the newest receive time processed is this far past
# their end, so events arriving slightly out of order still meet their first copy.
EXPIRY_SLACK_US = 3_600_000_000


def published_through(processed: EventLog) -> dict[int, int]:
    """Per source partition, the position after the last event its processed partition holds.

    Source partition ``p`` publishes to processed partition ``p`` (same key, same
    partitioner, same partition count), each append in order and without gaps,
    so every new event of ``p`` before that position is in the processed log.
    A tail record from another source partition (a processed topic with a
    different partition count) proves nothing and is ignored.
    """
    published: dict[int, int] = {}
    for partition, entry in processed.last_entries().items():
        event = decode_processed(entry.payload)
        if event.source_partition == partition:
            published[partition] = event.source_offset + 1
    return published


def resume_positions(
    hot_positions: dict[int, int],
    processed: EventLog,
    partitions: Collection[int] | None = None,
) -> dict[int, int]:
    """Where to start reading: after the last event published to the processed log.

    The hot store may be ahead of it (a crash between counting and
    publishing); replaying that stretch is safe because the hot store answers
    a replay with its first verdicts, and it publishes what was missing. A
    partition the hot store has no position for (never applied, or a hot
    store that lost its data) starts at the log's beginning: counting it
    again rebuilds its counters, and readers drop the copies it republishes.
    ``partitions`` limits the answer (default: those the hot store knows).
    """
    published = published_through(processed)
    wanted = hot_positions if partitions is None else partitions
    return {p: min(hot_positions.get(p, 0), published.get(p, 0)) for p in wanted}


@dataclass(slots=True)
class PartitionCursor:
    """Where the runner is in one partition of the event log."""

    next_offset: int  # where reading goes on
    # Where the group resumes once what was read is committed (lag is measured from it);
    # None until this runner has committed the partition or resumed it at start.
    position: int | None = None
    moved_to: int | None = None  # where it was just sought, until a poll reads from there


def _first_offsets(entries: list[LogEntry]) -> dict[int, int]:
    first: dict[int, int] = {}
    for entry in entries:
        first.setdefault(entry.partition, entry.offset)
    return first


class ProcessorRunner:
    def __init__(
        self,
        *,
        event_log: EventLog,
        processed: EventLog,
        hot: HotStore,
        make_chain: Callable[[LogConsumer], Step],
        clock: Clock,
        metrics: Metrics,
        max_batch: int = 2000,
        poll_timeout_secs: float = 0.2,
        quarantine: QuarantineStore | None = None,
        poison_attempts: int = 3,
        stall_secs: float = 60.0,
    ) -> None:
        self._hot = hot
        self._clock = clock
        self._metrics = metrics
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout_secs
        self._log = event_log
        self._consumer = event_log.consumer(GROUP)
        self._processed = processed
        resumed = resume_positions(hot.positions(GROUP), processed)
        self._consumer.seek(resumed)
        self._cursors = {
            p: PartitionCursor(offset, position=offset) for p, offset in resumed.items()
        }
        self.resumes = 0
        self._stop = threading.Event()
        self._guard = PoisonGuard(
            chain=make_chain(self._consumer), hot=hot, group=GROUP, quarantine=quarantine,
            event_log=event_log, clock=clock, metrics=metrics, stop=self._stop,
            attempts=poison_attempts, on_committed=self._committed,
        )  # fmt: skip
        self._drain_deadline: float | None = None
        self._watermark_us = 0
        self._last_expiry = clock.monotonic() - EXPIRY_INTERVAL_SECS
        self._stall_secs = stall_secs
        self._progress_at = clock.monotonic()  # the last commit, or the last time idle
        self._repeats = RepeatLimiter(LOG_REPEAT_SECS, clock.monotonic)
        self._resume_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._guard.healthy and self._resume_error is None

    @property
    def last_error(self) -> str | None:
        return self._resume_error or self._guard.last_error

    @property
    def quarantined(self) -> int:
        """Events this runner quarantined since it started."""
        return self._guard.quarantined

    def health(self) -> dict[str, object]:
        lag = self.lag()
        if lag.events == 0:
            self._progress_at = self._clock.monotonic()  # caught up: nothing is stuck
        idle_secs = self._clock.monotonic() - self._progress_at
        stalled = lag.events > 0 and idle_secs >= self._stall_secs
        self._metrics.stage_stalled.labels("process").set(1 if stalled else 0)
        detail = self.last_error or "ok"
        if stalled:
            failing = self._guard.failing_stage
            detail = (
                f"stalled: no progress for {idle_secs:.0f} s with {lag.events} events waiting"
                + (f" (failing at {failing}: {detail})" if self.last_error else "")
            )
        return {
            "healthy": self.healthy and not stalled,
            "detail": detail,
            "stalled": stalled,
            "failing_stage": self._guard.failing_stage,
            "quarantined": self._guard.quarantined,
            "lag_events": lag.events,
            "lag_seconds": round(lag.seconds, 3),
        }

    def positions(self) -> dict[int, int]:
        """Per partition, the next entry to process: those before it are counted and
        published (safe from other threads: a fresh dict from one snapshot of the cursors)."""
        return self._positions()

    def lag(self) -> LogLag:
        """How far the committed position is behind the log's end, right now."""
        return self._log.lag(self._positions())

    def run_once(self) -> int:
        """Poll and process one batch; returns how many entries the poll gave.

        Entries of a partition that moves to its resume point are read again
        from there, and count here (there is more to read).
        """
        polled = self._consumer.poll(self._max_batch, self._poll_timeout)
        if not polled:
            self._progress_at = self._clock.monotonic()  # idle is not stalled
        try:
            return self._handle(polled)
        except Exception:
            # Whatever failed (a bug, a backend error while stopping), the consumer has
            # already moved past these entries: rewind, so the next poll reads them again
            # and no accepted event is skipped by a later commit.
            if polled:
                self._consumer.seek(_first_offsets(polled))
            raise

    def _handle(self, polled: list[LogEntry]) -> int:
        try:
            entries = self._resume_started_partitions(polled)
        except ConvtrackError as exc:
            # The hot store or the processed log cannot say where to resume now: read
            # these entries again later rather than guess.
            self._consumer.seek(_first_offsets(polled))
            self._resume_error = str(exc)
            self._metrics.errors.labels("process", type(exc).__name__).inc()
            held = self._repeats.admit(f"resume:{exc}")
            if held is not None:
                log.warning("resume_check_failed", extra={"error": str(exc), "repeats": held})
            if self._stop.wait(0.5):
                return 0  # stopping: the entries are read again at the next start
            return len(polled)
        self._resume_error = None
        if entries:
            self._guard.commit(entries)
            for p, position in next_positions(entries).items():
                self._cursors[p].position = position  # every partition read has a cursor
        self._guard.replay_due()
        self._update_lag()
        self._maybe_expire()
        return len(polled)

    def _committed(self, batch: Batch) -> None:
        self._progress_at = self._clock.monotonic()
        for item in batch.items:
            checked = item.checked
            if checked is not None and checked.envelope.received_at_us > self._watermark_us:
                self._watermark_us = checked.envelope.received_at_us

    def _resume_started_partitions(self, entries: list[LogEntry]) -> list[LogEntry]:
        """Move each partition whose reading does not match the hot store to its resume point.

        That is a partition just handed to this process or rewound (it did not
        continue where this runner left it), one another process applied past
        where this one reads (it had the partition meanwhile), or one the hot
        store holds less of (it lost data: counting again rebuilds it). What
        the processed log holds of it says where publishing must go on. Its
        entries of this poll are dropped when the position moves; the log's
        first entry after a move is taken as it comes (a log whose start was
        deleted by retention begins later).
        """
        if not entries:
            return entries
        first = _first_offsets(entries)
        hot = self._hot.positions(GROUP)
        started = set()
        for p, offset in first.items():
            cursor = self._cursors.get(p)
            if cursor is not None and cursor.moved_to is not None and offset >= cursor.moved_to:
                continue
            if cursor is None or offset != cursor.next_offset or hot.get(p, 0) != offset:
                started.add(p)
        targets = resume_positions(hot, self._processed, started) if started else {}
        for p in first:
            cursor = self._cursors.get(p)
            if cursor is not None:
                cursor.moved_to = None
        moves = {p: targets[p] for p in started if targets[p] != first[p]}
        self.resumes += len(moves)
        if moves:
            log.info("partitions_resumed", extra={"positions": moves})
            self._consumer.seek(moves)
            for p, offset in moves.items():
                self._reading_on(p, offset).moved_to = offset
            entries = [e for e in entries if e.partition not in moves]
        for p, offset in next_positions(entries).items():
            self._reading_on(p, offset)
        return entries

    def _reading_on(self, partition: int, next_offset: int) -> PartitionCursor:
        """Reading ``partition`` goes on at ``next_offset``: its cursor (made the first time)."""
        cursor = self._cursors.get(partition)
        if cursor is None:
            cursor = self._cursors[partition] = PartitionCursor(next_offset)
        else:
            cursor.next_offset = next_offset
        return cursor

    def _positions(self) -> dict[int, int]:
        # Health checks ask from other threads while this one adds cursors: the tuple is
        # taken in one step (under the GIL), so no iteration sees the dict change.
        cursors = tuple(self._cursors.items())
        return {p: c.position for p, c in cursors if c.position is not None}

    def _update_lag(self) -> None:
        lag = self.lag()
        self._metrics.processor_lag_events.set(lag.events)
        self._metrics.processor_lag_seconds.set(lag.seconds)

    def _maybe_expire(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_expiry < EXPIRY_INTERVAL_SECS or not self._watermark_us:
            return
        self._last_expiry = now
        try:
            self._hot.expire(self._watermark_us - EXPIRY_SLACK_US, max_rows=50_000)
            self._metrics.dedup_remembered.set(self._hot.remembered())
        except ConvtrackError as exc:
            log.warning("expiry_failed", extra={"error": str(exc)})

    def _past_drain_deadline(self) -> bool:
        # Real time, not the injected clock: it bounds a wait for a real thread (stop).
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def _run(self) -> None:
        while True:
            try:
                handled = self.run_once()
            except Stopping:
                return  # stopping with a batch that cannot commit: it replays on restart
            except Exception as exc:
                # The log cannot be read now (LogError from its poll), or a bug: again soon.
                self._resume_error = f"{type(exc).__name__}: {exc}"
                kind = type(exc).__name__ if isinstance(exc, ConvtrackError) else "unexpected"
                self._metrics.errors.labels("process", kind).inc()
                if self._repeats.admit(f"unexpected:{self._resume_error}") is not None:
                    log.exception("processor_error")
                if self._stop.wait(1.0):
                    return  # stopping: what was not committed is read again at the next start
                continue
            if self._stop.is_set() and (handled == 0 or self._past_drain_deadline()):
                return

    def stop(self, drain_secs: float = 3.0) -> None:
        """Process what the log already holds (up to ``drain_secs``), then stop."""
        self._drain_deadline = time.monotonic() + drain_secs
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(drain_secs + 5.0)
        if self._thread.is_alive():
            # Still inside a batch: closing its connection under it would crash the
            # process. Leave it; the batch is replayed on the next start if unfinished.
            log.warning("processor_still_busy_at_stop")
            return
        self._consumer.close()
