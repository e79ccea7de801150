"""Reading a destination's share of the processed log into its commit window.

Each entry is selected (``deliver.select``: filters, consent, the platform's own
skip rules): an event to send is batched, a skipped one is counted and passed (it
is committed with the batch after it), one that cannot be selected is quarantined
(``deliver.quarantined``) and passed. Partitions read from a new place first
settle what a crash left in flight there (``deliver.inflight``). Whatever fails,
the consumer is moved back first, so nothing is committed past an event unsent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from convtrack.clock import Clock
from convtrack.deliver.base import Forwarded
from convtrack.deliver.inflight import InFlight
from convtrack.deliver.keeper import DeadLetterKeeper
from convtrack.deliver.quarantined import DeliverQuarantine
from convtrack.deliver.select import Selector
from convtrack.deliver.window import CommitWindow
from convtrack.log.base import LogConsumer, LogEntry
from convtrack.model.processed import decode_processed

log = logging.getLogger("convtrack.deliver")


class LogReader:
    def __init__(
        self,
        *,
        name: str,
        consumer: LogConsumer,
        window: CommitWindow,
        inflight: InFlight,
        selector: Selector,
        quarantine: DeliverQuarantine,
        keeper: DeadLetterKeeper,
        clock: Clock,
        skipped: Counter,
        max_wait_secs: float,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._window = window
        self._inflight = inflight
        self._selector = selector
        self._quarantine = quarantine
        self._keeper = keeper
        self._clock = clock
        self._skipped = skipped
        self._max_wait = max_wait_secs

    def read(self, entries: Sequence[LogEntry]) -> None:
        """Select each entry into the window (sent, skipped or quarantined); on an error,
        the consumer is moved back so what was not taken is read again."""
        now_us = self._clock.now_us()
        skipped = self._skipped
        jumped = self._inflight.jumped(entries, self._consumer.assignment_epochs())
        if jumped:
            try:
                self._recover(jumped)
            except Exception:
                # Read them again (a jump again: recovered again) rather than send them.
                self._consumer.seek(_first_positions(entries))
                raise
        for index, entry in enumerate(entries):
            if self._inflight.already_dead_lettered(entry):
                self._window.passed(entry)
                continue
            try:
                chosen = self._selector.select(entry, decode_processed(entry.payload), now_us)
            except Exception as exc:
                if not self._quarantine.may_keep(exc):
                    # Read it again later rather than commit past it unsent.
                    self._consumer.seek(_first_positions(entries[index:]))
                    raise
                try:
                    self._quarantine.put_aside(entry, exc)  # kept before it is committed
                except Exception:
                    self._consumer.seek(_first_positions(entries[index:]))
                    raise
                self._window.passed(entry)
                continue
            if isinstance(chosen, Forwarded):
                self._window.add(entry, chosen, self._logged_at(entry, now_us))
                continue
            self._window.passed(entry)
            if chosen is not None:
                skipped.labels(self.name, chosen).inc()

    def reselect(self, entry: LogEntry) -> Forwarded | str | None:
        """A quarantined entry selected again for its replay (a first copy by now)."""
        return self._selector.select_again(entry, decode_processed(entry.payload),
                                           self._clock.now_us())  # fmt: skip

    def _logged_at(self, entry: LogEntry, now_us: int) -> float:
        """When the entry was logged, on the monotonic clock: a batch waits at most
        ``batch_max_wait_secs`` from its first event's logging, not from its reading
        (read late because the previous request was out, it would wait twice). Capped
        to the wait, so a skewed clock in another process only makes a batch go sooner."""
        age = (now_us - entry.logged_at_us) / 1e6
        return self._clock.monotonic() - min(max(age, 0.0), self._max_wait)

    def _recover(self, partitions: set[int]) -> None:
        """Settle what a crash left in flight on partitions read from a new place."""
        count, dropped = self._inflight.recover(
            self._consumer.committed(),
            self._clock.now_us(),
            self._keeper.limits.max_per_destination,
            partitions,
        )
        if count:
            log.warning("in_flight_dead_lettered", extra={"destination": self.name,
                                                          "events": count})  # fmt: skip
        self._keeper.kept_elsewhere(count, dropped)


def _first_positions(entries: Sequence[LogEntry]) -> dict[int, int]:
    positions: dict[int, int] = {}
    for entry in entries:
        positions[entry.partition] = min(positions.get(entry.partition, entry.offset), entry.offset)
    return positions
