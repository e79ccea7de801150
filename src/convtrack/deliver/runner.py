"""One destination's delivery: read, select, batch, dispatch, commit.

One runner per configured destination, on its own thread, reading the
processed log as consumer group ``deliver-<name>``, so a slow platform never
delays another. Each entry is selected (``deliver.select``: filters, consent,
the platform's own skip rules); skipped events are counted and committed with
the rest. Batches close at the smaller of ``batch_max_events`` and the
platform's limit, or after ``batch_max_wait_secs``; the dispatcher
(``deliver.dispatch``) then drives each to delivery or dead letters. Offsets
are committed only after that, so a crash sends again what was not committed:
platforms that deduplicate on our ids drop the copy, and for those that cannot,
in-flight markers (``deliver.inflight``) turn the interrupted batch into dead
letters instead. Dead letters marked for replay are sent before new events.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

from convtrack.clock import Clock
from convtrack.config import DeadLettersSettings
from convtrack.config_destinations import DestinationSettings
from convtrack.deliver.alerts import Alerts, Outbox
from convtrack.deliver.base import Destination, Forwarded
from convtrack.deliver.deadletters import DeadLetterStore, Failure
from convtrack.deliver.dispatch import Dispatcher, Job, Stopped
from convtrack.deliver.inflight import InFlight
from convtrack.deliver.keeper import DeadLetterKeeper
from convtrack.deliver.outbound import EndpointGuard, Sender
from convtrack.deliver.select import Selector, wanted
from convtrack.log.base import LogConsumer, LogEntry, next_positions
from convtrack.model.processed import decode_processed
from convtrack.observe.metrics import Metrics

__all__ = ["DeliveryRunner", "wanted"]

log = logging.getLogger("convtrack.deliver")

POLL_TIMEOUT_SECS = 0.2
STOP_GRACE_SECS = 3.0  # within the 10 s a SIGTERM may take, beside the other stages


class DeliveryRunner:
    """Delivers one destination's events; ``run_once``/``flush`` by hand or ``start`` a thread."""

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
        default_granted: bool = True,
        deadletter_limits: DeadLettersSettings | None = None,
        alerts: Alerts | None = None,
        outbox: Outbox | None = None,
        guard: EndpointGuard | None = None,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._consumer = consumer
        self._clock = clock
        self._metrics = metrics
        alerts = alerts or Alerts(metrics.deliver.set_alert)
        self._outbox = outbox
        self._sender = sender or Sender(timeout_secs=settings.timeout_secs)
        self._stop = threading.Event()
        self._dispatcher = Dispatcher(
            destination=destination,
            settings=settings,
            sender=self._sender,
            guard=guard or EndpointGuard(allow_private_network=settings.allow_private_network),
            clock=clock,
            metrics=metrics.deliver,
            alerts=alerts,
            sleep=sleep or self._wait,
            stop=self._stop,
            rng=rng or random.Random(),
        )
        self._selector = Selector(destination, settings, default_granted=default_granted)
        self._inflight = InFlight(
            deadletters, self.name, enabled=not destination.dedupes_on_event_id
        )
        self._keeper = DeadLetterKeeper(
            deadletters, self.name, clock=clock, metrics=metrics.deliver, alerts=alerts,
            limits=deadletter_limits or DeadLettersSettings(),
            claim_replays=not destination.dedupes_on_event_id,
        )  # fmt: skip
        own = settings.batch_max_events or destination.max_batch_events
        self.batch_limit = max(1, min(own, destination.max_batch_events))
        self._entries: list[LogEntry] = []  # read since the last commit
        self._batch: list[Forwarded] = []  # the ones to send among them
        self._batch_started = 0.0
        self._job: Job | None = None  # the batch being dispatched (held by a pause)
        self._started = False
        self._lag_events = 0
        self._lag_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"deliver-{self.name}", daemon=True)
        self.delivered = 0

    @property
    def last_error(self) -> str | None:
        return self._dispatcher.last_error

    @property
    def dead_lettered(self) -> int:
        return self._keeper.dead_lettered

    # -- one step ---------------------------------------------------------------

    def run_once(self, timeout_secs: float = 0.0) -> int:
        """Resume a held batch, send alerts and replays, read new events, send a due batch.

        Returns how many events were handled (0: nothing to do now, or blocked).
        """
        if not self._started:
            self._start_up()
        self._keeper.check()
        if self._dispatcher.blocked_secs() > 0:
            self._update_lag()
            return 0
        if self._job is not None:
            held = len(self._job.events)
            return held if self.flush() else 0
        if self._outbox is not None:
            self._dispatcher.send_alerts(self._outbox)
        replayed = self._keeper.replay(self._dispatcher, self.batch_limit, self._count_delivered)
        if replayed:
            return replayed
        room = self.batch_limit - len(self._batch)
        entries = self._consumer.poll(room, timeout_secs) if room > 0 else []
        self._select(entries)
        self._update_lag()
        if not self._batch:
            if self._entries:  # nothing to send among them: move on
                self._commit()
            return len(entries)
        full = len(self._batch) >= self.batch_limit
        waited = self._clock.monotonic() - self._batch_started
        if full or waited >= self._settings.batch_max_wait_secs:
            self.flush()
        return len(entries)

    def _select(self, entries: Sequence[LogEntry]) -> None:
        now_us = self._clock.now_us()
        skipped = self._metrics.deliver.skipped
        for index, entry in enumerate(entries):
            if self._inflight.already_dead_lettered(entry):
                self._entries.append(entry)
                continue
            try:
                chosen = self._selector.select(entry, decode_processed(entry.payload), now_us)
            except Exception:
                # Read it again later rather than commit past it unsent.
                self._consumer.seek(_first_positions(entries[index:]))
                raise
            if isinstance(chosen, Forwarded):
                if not self._batch:
                    self._batch_started = self._clock.monotonic()
                self._batch.append(chosen)
            elif chosen is not None:
                skipped.labels(self.name, chosen).inc()
            self._entries.append(entry)

    def flush(self) -> bool:
        """Send the buffered batch now; commit once it is settled. False when it is held
        (a setup pause, an open circuit, or a stop): nothing is committed then."""
        if self._job is None and self._batch:
            self._inflight.mark(self._batch)
            self._job = Job(events=list(self._batch))
        if self._job is not None:
            try:
                if not self._dispatcher.run(self._job, _LogSettle(self, self._keeper)):
                    return False
            except Stopped:
                return False  # not committed: sent again after a restart
            self._job = None
        if self._entries:
            self._commit()
        self._batch.clear()
        return True

    def _commit(self) -> None:
        positions = next_positions(self._entries)
        self._consumer.commit(positions)
        self._inflight.committed(positions)
        self._entries.clear()

    def _count_delivered(self, count: int) -> None:
        self.delivered += count

    def _start_up(self) -> None:
        """Once, before the first read: settle what a crash left in flight."""
        self._started = True
        count, dropped = self._inflight.recover(
            self._consumer.committed(),
            self._clock.now_us(),
            self._keeper.limits.max_per_destination,
        )
        if count:
            log.warning("in_flight_dead_lettered", extra={"destination": self.name,
                                                          "events": count})  # fmt: skip
        self._keeper.kept_elsewhere(count, dropped)

    # -- the thread and health ------------------------------------------------------

    def _update_lag(self) -> None:
        lag = self._consumer.lag()
        self._lag_events = lag.events + len(self._entries)
        self._lag_seconds = lag.seconds
        if self._entries:
            oldest = (self._clock.now_us() - self._entries[0].logged_at_us) / 1e6
            self._lag_seconds = max(self._lag_seconds, oldest)
        self._metrics.deliver.lag_events.labels(self.name).set(self._lag_events)
        self._metrics.deliver.lag_seconds.labels(self.name).set(self._lag_seconds)

    def start(self) -> None:
        self._thread.start()

    def health(self) -> dict[str, object]:
        """For ``/readyz`` (cheap: no I/O)."""
        dispatcher = self._dispatcher
        circuit = dispatcher.circuit()
        paused = dispatcher.paused
        detail = dispatcher.pause_reason if paused else None
        if detail is None and circuit != "closed":
            detail = f"circuit {circuit}"
        return {
            "healthy": not paused and circuit == "closed" and dispatcher.last_error is None,
            "detail": detail or dispatcher.last_error or "ok",
            "paused": paused,
            "circuit": circuit,
            "last_error": dispatcher.last_error,
            "lag_events": self._lag_events,
            "lag_seconds": round(self._lag_seconds, 3),
            "buffered_events": len(self._batch),
            "dead_letters": self._keeper.total,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                blocked = self._dispatcher.blocked_secs()
                if blocked > 0:
                    self._stop.wait(min(blocked, 1.0))
                    self._keeper.check()
                    continue
                self.run_once(timeout_secs=self._poll_timeout())
            except Exception as exc:
                self._dispatcher.last_error = f"{self.name}: {exc}"
                self._metrics.errors.labels("deliver", type(exc).__name__).inc()
                log.exception("delivery_failed", extra={"destination": self.name})
                self._stop.wait(1.0)

    def _poll_timeout(self) -> float:
        """Wait for new events at most until the buffered batch is due (its latency)."""
        if not self._batch:
            return POLL_TIMEOUT_SECS
        due = self._batch_started + self._settings.batch_max_wait_secs - self._clock.monotonic()
        return max(0.0, min(POLL_TIMEOUT_SECS, due))

    def _wait(self, secs: float) -> None:
        self._stop.wait(secs)

    def request_stop(self) -> None:
        """Ask the thread to stop at its next wait (without waiting for it)."""
        self._stop.set()

    def stop(self, grace_secs: float = STOP_GRACE_SECS) -> None:
        """Stop; what is buffered and not committed is sent again after a restart.

        A request still in flight after ``grace_secs`` is abandoned (the process is
        exiting within its shutdown budget): its batch is not committed, so it is
        resent, or for a platform that cannot deduplicate, found in flight at the
        next start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(grace_secs)
        if self._thread.is_alive():
            log.warning("delivery_abandoned_at_stop", extra={"destination": self.name})
            return  # its consumer and client go with the process
        self._consumer.close()
        self._sender.close()


def _first_positions(entries: Sequence[LogEntry]) -> dict[int, int]:
    positions: dict[int, int] = {}
    for entry in entries:
        positions[entry.partition] = min(positions.get(entry.partition, entry.offset), entry.offset)
    return positions


class _LogSettle:
    """A batch read from the log: dead letters are kept; the commit comes after."""

    def __init__(self, runner: DeliveryRunner, keeper: DeadLetterKeeper) -> None:
        self._runner = runner
        self._keeper = keeper

    def delivered(self, events: Sequence[Forwarded]) -> None:
        self._runner.delivered += len(events)

    def skipped(self, events: Sequence[Forwarded], reason: str) -> None:
        pass  # counted by the dispatcher; committed with the batch

    def dead(self, rows: Sequence[tuple[Forwarded, Failure]]) -> None:
        self._keeper.keep(rows)
