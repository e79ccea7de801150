"""In-flight markers for destinations that cannot deduplicate (GA4, Slack).

Before a batch is sent, its events are recorded in the dead-letter database;
the markers are cleared once the batch's offsets are committed. With several
requests out at once (``max_in_flight``) a batch can be settled long before
its offsets can be committed (an earlier one is still out): its markers are
then flagged, dead-lettered in the dead letters' own transaction, settled
when the runner notes the batch ended, and an event read again with such a
marker is passed over. An unflagged marker left at
start means a crash interrupted a send whose fate is unknown: sending again
could count the conversion twice on the platform, so those events become dead
letters (an operator checks, then replays) and the runner reads past them.
Destinations that deduplicate on our ids need none of this: they just resend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Forwarded
from convtrack.deliver.deadletters import DeadLetterStore, Failure
from convtrack.log.base import LogEntry


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
        self._marked = False

    def recover(
        self, committed: Mapping[int, int], now_us: int, cap: int | None
    ) -> tuple[int, int]:
        """At start: dead-letter what a crash left in flight. Returns (dead-lettered, dropped)."""
        if not self.enabled:
            return 0, 0
        self._store.clear_in_flight(self._destination, committed)  # settled before the crash
        markers = self._store.in_flight(self._destination)
        self._skip = {(e.source_partition, e.source_offset) for e, _ in markers}
        self._marked = bool(markers)
        unresolved = [event for event, resolved in markers if not resolved]
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
            self._marked = bool(self._skip)
