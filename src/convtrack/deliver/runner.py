"""One destination's delivery: read, select, batch, dispatch, commit.

One runner per configured destination, on its own thread, reading the
processed log as consumer group ``deliver-<name>``, so a slow platform never
delays another. Entries are selected into the runner's ``CommitWindow``
(``deliver.reading``); batches close at the smaller of ``batch_max_events`` and
the platform's limit, or after ``batch_max_wait_secs``; the dispatcher
(``deliver.dispatch``) then drives each to delivery or dead letters. Offsets
are committed only after that, so a crash sends again what was not committed:
platforms that deduplicate on our ids drop the copy, and for those that cannot,
in-flight markers (``deliver.inflight``) turn the interrupted batch into dead
letters instead. Dead letters marked for replay are sent before new events.

Up to ``max_in_flight`` requests may be out at once (``deliver.window``; GA4
takes one event per request). Batches are still committed in log order, each
once it and every batch before it is settled; pacing (Slack) keeps one request
at a time, and while paused or while the circuit is not closed only one trial
request goes out. A destination with events waiting that commits nothing for
``stall_secs`` is unhealthy (``deliver.progress``); a repeated error is logged once a minute.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures

from convtrack.clock import Clock
from convtrack.config import DeadLettersSettings
from convtrack.deliver.alerts import AlertChannel, AlertPoster, Alerts, Outbox
from convtrack.deliver.base import Destination
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.dispatch import Dispatcher
from convtrack.deliver.exchange import Exchange, Stopped
from convtrack.deliver.inflight import InFlight
from convtrack.deliver.keeper import DeadLetterKeeper, LogBatchSettle
from convtrack.deliver.outbound import EndpointGuard, Sender
from convtrack.deliver.progress import Progress
from convtrack.deliver.quarantined import DeliverQuarantine
from convtrack.deliver.reading import LogReader
from convtrack.deliver.select import Selector, wanted
from convtrack.deliver.window import CommitWindow, Slot, Workers, completed
from convtrack.log.base import LogConsumer, LogEntry, next_positions
from convtrack.observe.logs import RepeatLimiter
from convtrack.observe.metrics import Metrics
from convtrack.store.deadletters.base import DeadLetterStore
from convtrack.store.quarantine.base import QuarantineStore

__all__ = ["DeliveryRunner", "wanted"]

log = logging.getLogger("convtrack.deliver")

POLL_TIMEOUT_SECS = 0.2
SETTLE_POLL_SECS = 0.02  # while requests are out: commit their batches soon after they end
MIN_WAIT_SECS = 0.001
WINDOW_PER_REQUEST = 4  # batches not yet committed, per request that may be out
STOP_GRACE_SECS = 3.0  # within the 10 s a SIGTERM may take, beside the other stages
LOG_REPEAT_SECS = 60.0


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
        quarantine: QuarantineStore | None = None,
        stall_secs: float = 60.0,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._consumer = consumer
        self._clock = clock
        self._metrics = metrics
        alerts = alerts or Alerts(metrics.deliver.set_alert)
        # Pacing (Slack's 1 message/s) means one request at a time, whatever the setting.
        paced = destination.min_interval_secs > 0
        self.max_in_flight = 1 if paced else settings.max_in_flight
        self._sender = sender or Sender(
            timeout_secs=settings.timeout_secs, connections=self.max_in_flight
        )
        self._stop = threading.Event()
        exchange = Exchange(
            destination=destination,
            settings=settings,
            sender=self._sender,
            guard=guard or EndpointGuard(allow_private_network=settings.allow_private_network),
            clock=clock,
            metrics=metrics.deliver,
            sleep=sleep or self._wait,
            stop=self._stop,
        )
        self._dispatcher = Dispatcher(
            destination=destination,
            settings=settings,
            exchange=exchange,
            clock=clock,
            metrics=metrics.deliver,
            alerts=alerts,
            rng=rng or random.Random(),
        )
        self._alert_poster: AlertPoster | None = None  # Slack with alerts = true
        if outbox is not None and isinstance(destination, AlertChannel):
            blocked = self._dispatcher.blocked_secs
            self._alert_poster = AlertPoster(channel=destination, outbox=outbox, exchange=exchange,
                                             clock=clock, blocked=blocked)  # fmt: skip
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
        # Batches done may wait for a slower one before them: allow a few per request out.
        self._window = CommitWindow(
            batch_limit=self.batch_limit,
            max_batches=1 if self.max_in_flight == 1 else WINDOW_PER_REQUEST * self.max_in_flight,
            max_wait_secs=settings.batch_max_wait_secs,
        )
        self._workers = (
            Workers(f"deliver-{self.name}", self.max_in_flight) if self.max_in_flight > 1 else None
        )
        self._settle = LogBatchSettle(
            self._keeper, in_flight=self._inflight.enabled, delivered=self._count_delivered
        )
        self._thread = threading.Thread(target=self._run, name=f"deliver-{self.name}", daemon=True)
        self._count_lock = threading.Lock()
        self.delivered = 0
        self._quarantine = DeliverQuarantine(
            self.name, quarantine, clock, metrics,
            claim_replays=not destination.dedupes_on_event_id,
        )  # fmt: skip
        self._progress = Progress(self.name, consumer, clock, metrics, stall_secs=stall_secs)
        self._repeats = RepeatLimiter(LOG_REPEAT_SECS, clock.monotonic)
        self._reader = LogReader(
            name=self.name, consumer=consumer, window=self._window, inflight=self._inflight,
            selector=Selector(destination, settings, default_granted=default_granted),
            quarantine=self._quarantine, keeper=self._keeper, clock=clock,
            skipped=metrics.deliver.skipped, max_wait_secs=settings.batch_max_wait_secs,
        )  # fmt: skip

    @property
    def last_error(self) -> str | None:
        return self._dispatcher.last_error

    @property
    def dead_lettered(self) -> int:
        return self._keeper.dead_lettered

    # -- one step ---------------------------------------------------------------

    def run_once(self, timeout_secs: float = 0.0) -> int:
        """Settle finished requests, resume held batches, send alerts and replays, read
        new events, send the batches that are due.

        Returns how many events were handled (0: nothing to do now, or blocked).
        """
        self._keeper.check()
        self._collect()
        if self._dispatcher.blocked_secs() > 0:
            self._progress.update_lag(self._window)
            return 0
        if self._window.any_held():
            resumed = self._resume_held()
            self._collect()
            self._progress.update_lag(self._window)
            return 0 if self._window.any_held() else resumed
        if not self._window.cut_any:  # alerts and replays go between our own requests
            if self._alert_poster is not None:
                self._alert_poster.send()
            replayed = self._keeper.replay(
                self._dispatcher, self.batch_limit, self._count_delivered
            )
            replayed += self._quarantine.replay(
                self._reader.reselect, self._dispatcher, self._settle
            )
            if replayed:
                return replayed
        room = self._window.room()
        freed = 0
        if room > 0:
            entries = self._consumer.poll(room, timeout_secs)
            self._reader.read(entries)
        else:  # the window is full: wait for a request to end
            entries = []
            freed = self._await_one(timeout_secs)
        self._progress.update_lag(self._window)
        self._send_due(force=False)
        self._collect()
        passed = self._window.take_passed()
        if passed:
            self._commit(passed)  # nothing to send among them: move on
        return len(entries) + freed

    def flush(self) -> bool:
        """Send everything buffered now and wait until it is settled and committed. False
        when some is held (a setup pause, an open circuit, or a stop): what is held and
        what follows it is not committed then."""
        window = self._window
        while not window.empty:
            blocked = self._dispatcher.blocked_secs() > 0
            if not blocked:
                self._resume_held()
                self._send_due(force=True)
            self._collect(wait=True)
            if (blocked and not window.empty) or (window.any_held() and self._held_for_now()):
                return False
        passed = window.take_passed()
        if passed:
            self._commit(passed)
        self._progress.update_lag(self._window)
        return True

    # -- the window ---------------------------------------------------------------

    def _held_for_now(self) -> bool:
        """Held batches must wait: paused, the circuit open, or stopping (else a trial
        just closed the circuit and they may go)."""
        return self._stop.is_set() or self._dispatcher.blocked_secs() > 0

    def _capacity(self) -> int:
        """Requests that may be out now: one (a trial) while paused or the circuit is not
        closed, so a platform that is down or refusing us gets one request, not many."""
        dispatcher = self._dispatcher
        if dispatcher.paused or dispatcher.circuit() != "closed":
            return 1
        return self.max_in_flight

    def _send_due(self, *, force: bool) -> None:
        """Cut the due batches (full, waited long enough, or ``force``) and send them, as
        many as the window and the capacity allow."""
        window = self._window
        free = self._capacity() - window.running()
        count = window.due(self._clock.monotonic(), force=force, free=free)
        if count == 0:
            return
        # Marked before the cut: a mark that fails leaves them batched, to go next time.
        self._inflight.mark(window.next_events(count))
        for _ in range(count):
            self._submit(window.cut())

    def _submit(self, slot: Slot) -> None:
        job, dispatcher, settle = slot.job, self._dispatcher, self._settle

        def run() -> bool:
            try:
                return dispatcher.run(job, settle)
            except Stopped:
                return False  # not committed: sent again after a restart

        slot.start(completed(run) if self._workers is None else self._workers.submit(run))

    def _resume_held(self) -> int:
        """Send held batches again, oldest first, within the capacity; returns their events."""
        resumed = 0
        for slot in self._window:
            if self._window.running() >= self._capacity():
                break
            if slot.held:
                resumed += len(slot.job.events)
                self._submit(slot)
        return resumed

    def _await_one(self, timeout_secs: float) -> int:
        """Wait until a request ends (at most ``timeout_secs``, or for good when 0 by
        hand); returns how many ended."""
        running = self._window.futures()
        if not running:
            return 0
        futures.wait(running, timeout=timeout_secs or None, return_when=futures.FIRST_COMPLETED)
        return sum(1 for future in running if future.done())

    def _collect(self, *, wait: bool = False) -> None:
        """Note the batches whose requests ended (``wait``: all of them), then commit the
        settled ones at the front. An error of a job is raised after the commit; its batch
        is held and tried again."""
        error = self._window.note_ended(wait=wait)
        self._commit_front()
        if error is not None:
            raise error

    def _commit_front(self) -> None:
        """Commit the settled batches at the front. Those settled behind a batch still out
        are flagged beside their in-flight markers: after a crash they are passed over,
        not dead-lettered as cut off (platforms that cannot deduplicate)."""
        settled = self._window.settle_front()
        if settled:
            self._commit(settled)
        behind = self._window.done_behind()
        if behind:
            self._inflight.settled([event for slot in behind for event in slot.events])
            self._window.flag(behind)

    def _commit(self, entries: Sequence[LogEntry]) -> None:
        positions = next_positions(entries)
        self._consumer.commit(positions)
        self._inflight.committed(positions)
        self._progress.committed()

    def _count_delivered(self, count: int) -> None:
        with self._count_lock:
            self.delivered += count

    # -- the thread and health ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def health(self) -> dict[str, object]:
        """For ``/readyz`` (cheap: no I/O)."""
        return self._progress.health(self._dispatcher, self._window, self._keeper.total)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                blocked = self._dispatcher.blocked_secs()
                if blocked > 0:
                    self._stop.wait(min(blocked, 1.0))
                    self._keeper.check()
                    self._collect()
                    continue
                # Never 0 here: by hand, 0 waits for a full window to free up for good.
                self.run_once(timeout_secs=self._poll_timeout() or MIN_WAIT_SECS)
            except Exception as exc:
                self._dispatcher.last_error = f"{self.name}: {exc}"
                self._metrics.errors.labels("deliver", type(exc).__name__).inc()
                held = self._repeats.admit(f"{type(exc).__name__}: {exc}")
                if held is not None:
                    log.exception("delivery_failed", extra={"destination": self.name,
                                                            "repeats": held})  # fmt: skip
                self._stop.wait(1.0)

    def _poll_timeout(self) -> float:
        """Wait for new events at most until the buffered batch is due (its latency), and
        not long while requests are out (their batches commit when this thread looks)."""
        first = self._window.first_logged_at()
        if first is None:
            return POLL_TIMEOUT_SECS if not self._window.cut_any else SETTLE_POLL_SECS
        due = first + self._settings.batch_max_wait_secs - self._clock.monotonic()
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
        next start (batches settled after it are passed over then)."""
        deadline = time.monotonic() + grace_secs
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(grace_secs)
        if self._thread.is_alive():
            log.warning("delivery_abandoned_at_stop", extra={"destination": self.name})
            return  # its consumer and client go with the process
        running = self._window.futures()
        if running:
            futures.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        try:
            self._commit_settled()
        finally:
            self._consumer.close()
            if self._workers is not None:
                self._workers.close()
        if any(not future.done() for future in running):
            log.warning("delivery_abandoned_at_stop", extra={"destination": self.name})
            return  # a request hangs: its client goes with the process
        self._sender.close()

    def _commit_settled(self) -> None:
        """At a stop: commit the settled batches at the front (none is sent again)."""
        self._window.note_ended()  # a job's error: its batch is not committed, that is all
        self._commit_front()
