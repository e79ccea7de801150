"""Committing a batch that may hold a poison event: retry, bisect, quarantine.

A batch whose chain raises is told apart by the error (``is_transient``):

- a backend that is away (the log, an unreachable Redis, a full disk): the same
  batch is retried with backoff, as long as it takes; nothing is quarantined;
- anything else may be the fault of one event: the batch is split in two and
  each half committed in log order, recursively, so the events that do not
  fail are counted and the failing ones are isolated. An event that fails
  alone ``attempts`` times in a row (with backoff between, so a passing fault
  has time to clear) is deterministic: it goes to the quarantine with its
  error and stage, and the hot store's position moves past it only after the
  quarantine has it durably (the next batch, or an empty apply, moves it).

Replay (``replay_due``): rows of the processor's stages queued by
``convtrack quarantine replay`` are appended to the event log again, as they
were logged, then removed. The processor takes them as new entries: dedup
applies (the envelope keeps its event id and receive time), and one that fails
again is quarantined again. A crash between the append and the removal appends
it once more at the next claim, and dedup drops that copy. An event whose
conversion token has expired by the time of the replay stays quarantined
(``TOKEN_EXPIRED_AT_REPLAY``): the hot store remembers a token's claim only
for the token's lifetime, so it could no longer tell whether another event
of that order was counted meanwhile, and a token counts at most once.

A stop ends the retries at once (``Stopping``): the batch is not committed and
is read again at the next start. Repeated errors are logged once per kind per
``LOG_REPEAT_SECS``, with the count held back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from convtrack.clock import Clock
from convtrack.errors import ConvtrackError, is_transient
from convtrack.log.base import EventLog, LogEntry, LogRecord, next_positions
from convtrack.model.event import decode_envelope
from convtrack.model.tokens import read_claims
from convtrack.observe.logs import RepeatLimiter
from convtrack.observe.metrics import Metrics
from convtrack.process.base import STAGES, Batch, Item, Step
from convtrack.store.hot.base import HotStore
from convtrack.store.quarantine.base import Quarantined, QuarantineStore, short_error

log = logging.getLogger("convtrack.process")

LOG_REPEAT_SECS = 60.0
FIRST_DELAY_SECS = 0.05
MAX_DELAY_SECS = 5.0
REPLAY_INTERVAL_SECS = 1.0
REPLAY_BATCH = 500
TOKEN_EXPIRED_AT_REPLAY = (
    "not replayed: its conversion token expired before the replay, and the hot store no "
    "longer remembers whether another event of that order was counted"
)


class Stopping(ConvtrackError):
    """The runner is stopping while a batch cannot commit: it is read again at the next start."""


def _token_expired(payload: bytes, now_us: int) -> bool:
    """Whether the logged event carries a conversion token that has ended by ``now_us``."""
    try:
        token = decode_envelope(payload).conversion_token
    except Exception:  # undecodable: replayed as it is, and quarantined again by the check
        return False
    claims = None if token is None else read_claims(token)
    return claims is not None and claims.expires_at_us <= now_us


def _event_id(entry: LogEntry) -> str | None:
    try:
        return decode_envelope(entry.payload).event_id
    except Exception:  # undecodable: the position names it
        return None


class PoisonGuard:
    """Commits batches for the runner; owns what it learns of failures (for health)."""

    def __init__(
        self,
        *,
        chain: Step,
        hot: HotStore,
        group: str,
        quarantine: QuarantineStore | None,
        event_log: EventLog,
        clock: Clock,
        metrics: Metrics,
        stop: threading.Event,
        attempts: int,
        on_committed: Callable[[Batch], None],
    ) -> None:
        self._chain = chain
        self._hot = hot
        self._group = group
        self._quarantine = quarantine
        self._log = event_log
        self._clock = clock
        self._metrics = metrics
        self._stop = stop
        self._attempts = attempts
        self._on_committed = on_committed
        self._repeats = RepeatLimiter(LOG_REPEAT_SECS, clock.monotonic)
        self._last_replay = clock.monotonic() - REPLAY_INTERVAL_SECS
        self.healthy = True
        self.last_error: str | None = None
        self.failing_stage: str | None = None
        self.quarantined = 0

    # -- committing -------------------------------------------------------------------

    def commit(self, entries: list[LogEntry]) -> None:
        """Commit ``entries`` in log order, quarantining the events that fail alone."""
        parts = [entries]
        fails = 0  # of the single event at the front
        while parts:
            part = parts[0]
            failure = self._try(part)
            if failure is None:
                parts.pop(0)
                fails = 0
                continue
            exc, stage = failure
            if len(part) > 1:
                half = len(part) // 2
                parts[0:1] = [part[:half], part[half:]]
                continue
            fails += 1
            if fails < self._attempts or self._quarantine is None:
                # Without a quarantine (a runner built by hand) it can only be retried.
                self._wait(min(FIRST_DELAY_SECS * 2 ** min(fails - 1, 10), MAX_DELAY_SECS))
                continue
            self._put_aside(part[0], stage, exc)
            parts.pop(0)
            fails = 0

    def _try(self, entries: list[LogEntry]) -> tuple[BaseException, str] | None:
        """Commit once; a transient failure is retried here with backoff. Returns the
        error and stage of a failure that may be the events' own."""
        delay = FIRST_DELAY_SECS
        while True:
            # Fresh items each time: a failed attempt may have left its findings on them.
            batch = Batch(items=[Item(entry=e) for e in entries], positions=next_positions(entries))
            try:
                self._chain.submit(batch)
            except Exception as exc:
                stage = batch.failed_stage or "process"
                transient = is_transient(exc)
                self._failed(exc, stage, delay if transient else None, len(entries))
                if not transient:
                    return exc, stage
                self._wait(delay)
                delay = min(delay * 2, MAX_DELAY_SECS)
                continue
            self.healthy, self.last_error, self.failing_stage = True, None, None
            self._on_committed(batch)
            return None

    def _failed(self, exc: BaseException, stage: str, retry_in: float | None, events: int) -> None:
        self.healthy, self.last_error, self.failing_stage = False, str(exc), stage
        kind = type(exc).__name__ if isinstance(exc, ConvtrackError) else "unexpected"
        self._metrics.errors.labels("process", kind).inc()
        held = self._repeats.admit(f"{stage}:{type(exc).__name__}:{exc}")
        if held is not None:
            log.warning(
                "batch_failed",
                extra={"error": short_error(exc), "stage": stage, "events": events,
                       "transient": retry_in is not None, "retry_in_secs": retry_in,
                       "repeats": held},
            )  # fmt: skip

    def _wait(self, secs: float) -> None:
        if self._stop.is_set() or self._stop.wait(secs):
            raise Stopping("stopping while a batch fails: it is read again at the next start")

    # -- the quarantine -----------------------------------------------------------------

    def _put_aside(self, entry: LogEntry, stage: str, exc: BaseException) -> None:
        """Quarantine one event durably (retrying the store), then move past it."""
        assert self._quarantine is not None
        row = Quarantined(
            stage=stage if stage in STAGES else "process", log="events",
            partition=entry.partition, offset=entry.offset, key=entry.key,
            payload=entry.payload, event_id=_event_id(entry), error=short_error(exc),
            at_us=self._clock.now_us(),
        )  # fmt: skip
        delay = FIRST_DELAY_SECS
        while True:
            try:
                new = self._quarantine.add([row])
                # Past the event now: the next batch would move the position too, but a
                # quarantined last entry must not be read again after a restart.
                self._hot.apply(self._group, [], {entry.partition: entry.offset + 1},
                                self._clock.now_us())  # fmt: skip
                break
            except ConvtrackError as store_exc:
                self._failed(store_exc, "quarantine", delay, 1)
                self._wait(delay)
                delay = min(delay * 2, MAX_DELAY_SECS)
        if new:
            self.quarantined += new
            self._metrics.quarantined.labels(row.stage).inc(new)
        log.error(
            "event_quarantined",
            extra={"stage": row.stage, "event_id": row.event_id, "partition": entry.partition,
                   "offset": entry.offset, "error": row.error},
        )  # fmt: skip
        self.healthy, self.last_error, self.failing_stage = True, None, None

    def replay_due(self) -> int:
        """Append the processor's queued quarantine rows to the event log again (once a
        second at most); returns how many."""
        now = self._clock.monotonic()
        if self._quarantine is None or now - self._last_replay < REPLAY_INTERVAL_SECS:
            return 0
        self._last_replay = now
        try:
            now_us = self._clock.now_us()
            claimed = self._quarantine.claim(STAGES, "", REPLAY_BATCH, now_us)
            if not claimed:
                return 0
            rows = []
            for row in claimed:
                if _token_expired(row.event.payload, now_us):
                    self._quarantine.failed_again(row.id, TOKEN_EXPIRED_AT_REPLAY, now_us)
                    log.warning("quarantine_replay_refused", extra={"event_id": row.event.event_id})
                else:
                    rows.append(row)
            if rows:
                self._log.append_blocking([LogRecord(r.event.key, r.event.payload) for r in rows])
                self._quarantine.remove([r.id for r in rows])
        except ConvtrackError as exc:  # claimed rows come back when their lease ends
            log.warning("quarantine_replay_failed", extra={"error": str(exc)})
            return 0
        for row in rows:
            self._metrics.quarantine_replayed.labels(row.event.stage).inc()
        if rows:
            log.info("quarantine_replayed", extra={"events": len(rows)})
        return len(rows)
