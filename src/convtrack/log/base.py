"""The event-log port: durable appends, and consumer groups that read by offset.

A log is split into partitions (the embedded SQLite log has one; Kafka has
many). Records with the same key land in the same partition, in order.
``append`` returns only once the records are durable: the collector's 202
depends on it. Each consumer group owns its committed positions: the next
offset to read, per partition. Committing happens after the group's effects,
so a crash replays at most what was not committed (at-least-once).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import msgspec


class LogRecord(msgspec.Struct, frozen=True):
    key: str
    payload: bytes


class LogEntry(msgspec.Struct, frozen=True):
    partition: int
    offset: int
    key: str
    payload: bytes
    logged_at_us: int


class LogLag(msgspec.Struct, frozen=True):
    events: int
    seconds: float


class LogStatus(msgspec.Struct, frozen=True):
    writable: bool
    detail: str
    pending_events: int
    end_offsets: dict[int, int]


def next_positions(entries: Sequence[LogEntry]) -> dict[int, int]:
    """The positions to commit after handling ``entries``: last offset + 1 per partition."""
    positions: dict[int, int] = {}
    for entry in entries:
        if entry.offset + 1 > positions.get(entry.partition, -1):
            positions[entry.partition] = entry.offset + 1
    return positions


class LogConsumer(ABC):
    """One member of a consumer group. Not shared between threads."""

    @abstractmethod
    def poll(self, max_records: int, timeout_secs: float) -> list[LogEntry]:
        """Entries after the current position, waiting up to ``timeout_secs`` for some."""

    @abstractmethod
    def commit(self, positions: Mapping[int, int], *, wait: bool = True) -> None:
        """Durably record the group's next offsets (per partition).

        ``wait=False``: hand the commit over and return at once, for a reader whose
        own record of progress lives elsewhere (the lake's manifest): a networked
        log may lose it, and a coordinator that is away never stalls the reader.
        """

    @abstractmethod
    def committed(self) -> dict[int, int]:
        """The group's committed next offsets, per partition (absent: never committed)."""

    def assignment_epochs(self) -> Mapping[int, int] | None:
        """The partitions this member owns now, each with the number of the assignment
        that gave it (a partition taken away and given back gets a new one). None where
        the log does not share a group's partitions among members (SQLite)."""
        return None

    @abstractmethod
    def seek(self, positions: Mapping[int, int]) -> None:
        """Move the read position (for stores that keep offsets with their effects)."""

    @abstractmethod
    def lag(self) -> LogLag:
        """How far the current position is behind the log's end, in events and seconds."""

    @abstractmethod
    def close(self) -> None: ...


class EventLog(ABC):
    @abstractmethod
    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        """Make ``records`` durable and return their offsets.

        Raises ``LogUnavailable`` when the records cannot be made durable now;
        then none of them is considered accepted.
        """

    @abstractmethod
    def append_blocking(self, records: Sequence[LogRecord]) -> list[int]:
        """``append`` for callers on a plain thread (stages that consume and produce)."""

    @abstractmethod
    def last_entries(self) -> dict[int, LogEntry]:
        """The newest entry of each partition (absent: the partition is empty)."""

    @abstractmethod
    def consumer(self, group: str) -> LogConsumer:
        """A consumer positioned at the group's committed offsets (or the start)."""

    @abstractmethod
    def lag(self, positions: Mapping[int, int]) -> LogLag:
        """How far ``positions`` are behind the log's end now, in events and seconds.

        Safe to call from any thread (unlike a consumer's own ``lag``).
        """

    @abstractmethod
    def status(self) -> LogStatus:
        """Whether the log can take writes now, for readiness."""

    def partition_count(self) -> int:
        """How many partitions the log has (LogError while that cannot be known yet)."""
        return 1

    @abstractmethod
    def close(self) -> None:
        """Finish pending appends and release resources."""
