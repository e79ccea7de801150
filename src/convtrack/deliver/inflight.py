"""In-flight markers for destinations that cannot deduplicate (GA4, Slack).

Before a batch is sent, its events are recorded in the dead-letter database;
the markers are cleared once the batch's offsets are committed. With several
requests out at once (``max_in_flight``) a batch can be settled long before
its offsets can be committed (an earlier one is still out): its markers are
then flagged, dead-lettered in the dead letters' own transaction, settled
when the runner notes the batch ended, and an event read again with such a
marker is passed over. An unflagged marker found where a partition is read
from a new place means a crash interrupted a send whose fate is unknown:
sending again could count the conversion twice on the platform, so those
events become dead letters (an operator checks, then replays) and the runner
reads past them. A new place is the first read of a partition (a start, or a
partition taken over from a process that crashed, on this machine or, with
the markers in Redis, another one) or a jump (a rewind, a rebalance); only
that partition's markers are looked at, and never those this process wrote
for its own sends still out, so a peer's sends in flight on its own
partitions are left alone.
Destinations that deduplicate on our ids need none of this: they just resend.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from convtrack.deliver.base import Forwarded
from convtrack.log.base import LogEntry
from convtrack.store.deadletters.base import DeadLetterStore, Failure


def unknown_fate_reason(destination: str) -> str:
    return (
        f"not resent: a crash interrupted its send and {destination} cannot deduplicate, "
        "so it may have arrived; check the platform before replaying"
    )


def unanswered_reason(destination: str, what: str) -> str:
    """A request sent but not answered (timed out, connection dropped): it may have been
    taken, and resending could count it twice where the platform cannot deduplicate."""
    return (
        f"not resent: {what}, and {destination} cannot deduplicate, so it may have "
        "arrived; check the platform before replaying"
    )


class InFlight:
    def __init__(self, store: DeadLetterStore, destination: str, *, enabled: bool) -> None:
        self._store = store
        self._destination = destination
        self.enabled = enabled
        self._skip: set[tuple[int, int]] = set()
        self._mine: set[tuple[int, int]] = set()  # marked here, not yet committed
        self._next: dict[int, int] = {}  # per partition: the offset that follows the last read
        self._epochs: dict[int, int] = {}  # per owned partition: its assignment's number
        self._marked = False

    def jumped(
        self, entries: Sequence[LogEntry], owned: Mapping[int, int] | None = None
    ) -> set[int]:
        """The partitions of ``entries`` read from a new place (first read, or not where
        the last read ended): ``recover`` them before their entries are sent. ``owned``:
        the partitions this consumer owns now with their assignment numbers, where the
        log knows (Kafka); one that was away meanwhile (not owned at the last read, or
        owned by a later assignment) counts as new, even where its reading resumes at
        the very offset ours ended (another owner may have sent from there and crashed)."""
        if owned is not None:
            seen = self._epochs  # the assignment each partition had at the last read
            still = {p for p, epoch in owned.items() if seen.get(p) == epoch}
            self._next = {p: o for p, o in self._next.items() if p in still}
            self._epochs = dict(owned)
        found: set[int] = set()
        for entry in entries:
            if self._next.get(entry.partition) != entry.offset:
                found.add(entry.partition)
            self._next[entry.partition] = entry.offset + 1
        return found if self.enabled else set()

    def recover(
        self,
        committed: Mapping[int, int],
        now_us: int,
        cap: int | None,
        partitions: Collection[int] | None = None,
    ) -> tuple[int, int]:
        """Dead-letter what a crash left in flight on ``partitions`` (None: all). Returns
        (dead-lettered, dropped)."""
        if not self.enabled:
            return 0, 0
        if partitions is not None:
            committed = {p: o for p, o in committed.items() if p in partitions}
        self._store.clear_in_flight(self._destination, committed)  # settled before the crash
        markers = [
            (event, resolved)
            for event, resolved in self._store.in_flight(self._destination)
            if partitions is None or event.source_partition in partitions
        ]
        found = {(e.source_partition, e.source_offset) for e, _ in markers}
        self._skip |= found - self._mine
        self._marked = self._marked or bool(markers)
        unresolved = [
            event
            for event, resolved in markers
            if not resolved and (event.source_partition, event.source_offset) not in self._mine
        ]
        if not unresolved:
            return 0, 0
        failure = Failure(
            last_status=None, last_answer=unknown_fate_reason(self._destination), attempts=1,
            first_attempt_at_us=now_us, last_attempt_at_us=now_us,
        )  # fmt: skip
        dropped = self._store.resolve_in_flight(self._destination, unresolved, failure, cap)
        return len(unresolved), dropped

    def already_dead_lettered(self, entry: LogEntry) -> bool:
        return (entry.partition, entry.offset) in self._skip

    def mark(self, events: Sequence[Forwarded]) -> None:
        """Before the first attempt of a batch read from the log."""
        if self.enabled and events:
            self._store.mark_in_flight(self._destination, events)
            self._mine |= {(e.source_partition, e.source_offset) for e in events}
            self._marked = True

    def settled(self, events: Sequence[Forwarded]) -> None:
        """Settled (delivered, skipped or dead-lettered) before their commit: passed over
        when read again after a crash, neither resent nor dead-lettered."""
        if self.enabled and events:
            self._store.settle_in_flight(self._destination, events)

    def committed(self, positions: Mapping[int, int]) -> None:
        if self._marked:
            self._store.clear_in_flight(self._destination, positions)
            self._skip = {(p, o) for p, o in self._skip if o >= positions.get(p, 0)}
            self._mine = {(p, o) for p, o in self._mine if o >= positions.get(p, 0)}
            self._marked = bool(self._skip or self._mine)
