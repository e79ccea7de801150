"""The dead-letter port: deliveries that failed for good, with the destination's last answer.

Dead letters live with the hot store: SQLite (``DATA_DIR/deliver/deadletters.db``,
deadletters_sqlite.py) when ``hot.kind = "sqlite"``, Redis (deadletters_redis.py)
when ``hot.kind = "redis"``, so the admin API and ``convtrack dlq`` on any
machine see the dead letters of every deliver process. ``runtime/backends.py``
picks one.

Replaying queues rows; the runner of that destination takes queued rows with
``replay_batch``, which claims them atomically (two deliver processes of one
destination never both get a row), sends them before new events and removes
each row once delivered; a replay held by a pause is given back (``unclaim``).
A claim has a lease: one its process never settled (it died mid-replay) is
queued again once the lease ends, so a replay resumes by itself (destinations
that cannot deduplicate settle their claims at once, with a note, instead).
Each destination keeps at most a cap of rows: past it the oldest are dropped,
and the count is returned (the caller counts it).

The same store holds the in-flight markers of destinations that cannot
deduplicate (``deliver.inflight``), keyed by (destination, source partition,
source offset): the events of a batch being sent, so that a crash mid-send is
noticed at the next start, by whichever process takes the partition over,
instead of sending them twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import rfc3339_ms

# An in-flight marker's state: 0 the send's fate is unknown; else settled, not sent again.
UNKNOWN = 0
DEAD_LETTERED = 1
SETTLED = 2  # delivered, or taken out of the batch unsent


# Longer than a replay batch's retries can take, so a live replay is never taken over.
REPLAY_LEASE_SECS = 900.0


def store_path(data_dir: Path) -> Path:
    """Where the SQLite dead letters of a data dir live."""
    return data_dir / "deliver" / "deadletters.db"


class Failure(msgspec.Struct, frozen=True):
    """How a batch's delivery ended when it failed for good."""

    last_status: int | None
    last_answer: str
    attempts: int
    first_attempt_at_us: int
    last_attempt_at_us: int


class DeadLetter(msgspec.Struct, frozen=True):
    id: int
    destination: str
    event: Forwarded
    last_status: int | None
    last_answer: str
    attempts: int
    first_attempt_at_us: int
    last_attempt_at_us: int
    replay: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "event_id": self.event.event_id,
            "event": msgspec.to_builtins(self.event.payload),
            "last_status": self.last_status,
            "last_answer": self.last_answer,
            "attempts": self.attempts,
            "first_attempt_at": rfc3339_ms(self.first_attempt_at_us),
            "last_attempt_at": rfc3339_ms(self.last_attempt_at_us),
            "replay_pending": self.replay,
        }


class DeadLetterStore(ABC):
    """Thread-safe; each call is atomic. Failures raise ``StoreError``."""

    def add(
        self,
        destination: str,
        events: Sequence[Forwarded],
        failure: Failure,
        *,
        cap: int | None = None,
    ) -> int:
        """Dead-letter ``events`` with one failure; returns how many old rows the cap dropped."""
        return self.add_rows(destination, [(event, failure) for event in events], cap=cap)

    @abstractmethod
    def add_rows(
        self,
        destination: str,
        rows: Sequence[tuple[Forwarded, Failure]],
        *,
        cap: int | None = None,
        in_flight: bool = False,
    ) -> int:
        """Dead-letter events each with its own failure, atomically; past ``cap`` rows for
        the destination the oldest are deleted. Returns how many were deleted.
        ``in_flight``: also flag their in-flight markers dead-lettered, in the same step,
        so a crash in between does not dead-letter them twice."""

    @abstractmethod
    def total(self, destination: str | None = None) -> int: ...

    @abstractmethod
    def items(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Oldest first."""

    @abstractmethod
    def mark_replay(self, destination: str | None = None) -> int:
        """Queue the dead letters (of one destination) for sending again; returns how many."""

    @abstractmethod
    def replay_batch(
        self, destination: str, limit: int, now_us: int, lease_secs: float = REPLAY_LEASE_SECS
    ) -> list[DeadLetter]:
        """Claim up to ``limit`` queued rows, oldest first: they leave the queue at once,
        so no other caller gets them. Each then ends ``remove``d (delivered),
        ``failed_again``, ``claim``ed for good (a destination that cannot deduplicate)
        or ``unclaim``ed (not sent: queued again). A claim still open ``lease_secs``
        after ``now_us`` (its process died mid-replay) is queued again by the next call:
        the replay resumes by itself, and the platform's dedup absorbs a resend."""

    @abstractmethod
    def remove(self, ids: Sequence[int]) -> None: ...

    @abstractmethod
    def failed_again(self, ids: Sequence[int], failure: Failure) -> None:
        """A replay failed for good: keep the rows, unqueued, with the new answer."""

    @abstractmethod
    def claim(self, ids: Sequence[int], note: str) -> None:
        """Note on claimed rows why a crash would leave them here (for destinations that
        cannot deduplicate: never replayed twice unasked); unqueued if queued again."""

    @abstractmethod
    def unclaim(self, rows: Sequence[DeadLetter]) -> None:
        """Give claimed rows back as they were, queued (the replay was held, not sent)."""

    @abstractmethod
    def purge(self, destination: str | None = None) -> int: ...

    # -- in-flight markers (see deliver.inflight) ---------------------------------

    @abstractmethod
    def mark_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        """Markers of fate unknown for ``events`` (replacing any at their positions)."""

    @abstractmethod
    def in_flight(self, destination: str) -> list[tuple[Forwarded, bool]]:
        """The markers left for ``destination``, by position: each event and whether it
        was resolved (dead-lettered or settled)."""

    def resolve_in_flight(
        self, destination: str, events: Sequence[Forwarded], failure: Failure, cap: int | None
    ) -> int:
        """Dead-letter unresolved markers and flag them resolved, atomically (so a second
        crash neither loses nor doubles them). Returns rows dropped by the cap."""
        return self.add_rows(destination, [(e, failure) for e in events], cap=cap, in_flight=True)

    @abstractmethod
    def settle_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        """Flag markers whose events were delivered (or skipped) before their offsets are
        committed: read again after a crash, they are passed over, neither resent nor
        dead-lettered."""

    @abstractmethod
    def clear_in_flight(self, destination: str, committed: Mapping[int, int]) -> None:
        """Forget the markers below the committed positions (their batch is settled)."""

    @abstractmethod
    def close(self) -> None: ...
