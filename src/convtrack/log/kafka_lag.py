"""Lag of a Kafka topic from cached watermarks and record ages: cheap to ask, any thread.

Readiness and the runners ask for lag often, some on the event loop, so the
answer comes from caches instead of a broker round trip each time:

- end offsets (high watermarks) are read by the log's watchdog each second
  and raised at once by this process's own acknowledged appends, so records
  other processes appended show up within about a second;
- the oldest retained offset of each partition (for positions not given) is
  read on first use and again every 30 s;
- lag seconds is the age of the record at each position, read on first use
  and refreshed by the watchdog (at most once a second) as positions move.
  Between refreshes it is the age of a record read a moment ago, so it may
  be off by about a second: a documented, cheap approximation.

When the cluster cannot be reached the caches simply age; nothing here blocks
on a broker that is down, except the very first read of a partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Final

from convtrack.clock import Clock
from convtrack.errors import LogError
from convtrack.log.base import LogLag
from convtrack.log.kafka_reader import TopicReader

log = logging.getLogger("convtrack.log.kafka")

START_OFFSETS_TTL_SECS: Final = 30.0
AGE_READ_TIMEOUT_SECS: Final = 2.0


class LagTracker:
    def __init__(self, reader: TopicReader, clock: Clock, partitions: int) -> None:
        self._reader = reader
        self._clock = clock
        self._partitions = partitions
        self._lock = threading.Lock()
        self._ends: dict[int, int] = {}
        self._starts: dict[int, int] = {}
        self._starts_read_at = float("-inf")
        self._ages: dict[int, tuple[int, int]] = {}  # partition: (offset read, its time)
        self._asked: dict[int, int] = {}  # partition: the position last asked about

    def end_offsets(self) -> dict[int, int]:
        with self._lock:
            return dict(self._ends)

    def raise_ends(self, ends: Mapping[int, int]) -> None:
        """High watermarks only grow: keep the larger of what is known and ``ends``."""
        with self._lock:
            for partition, end in ends.items():
                if end > self._ends.get(partition, -1):
                    self._ends[partition] = end

    def refresh(self) -> None:
        """Re-read end offsets, due start offsets and the ages asked for (the watchdog)."""
        self.raise_ends(self._reader.end_offsets(range(self._partitions)))
        if time.monotonic() - self._starts_read_at >= START_OFFSETS_TTL_SECS and self._starts:
            self._read_starts()
        with self._lock:
            stale = {
                p: position
                for p, position in self._asked.items()
                if (cached := self._ages.get(p)) is None or cached[0] != position
            }
            self._asked.clear()
        self._read_ages(stale)

    def lag(self, positions: Mapping[int, int], partitions: frozenset[int] | None) -> LogLag:
        """Raises LogError only when a first read of the cluster fails."""
        wanted = sorted(partitions) if partitions is not None else list(range(self._partitions))
        ends = self.end_offsets()
        if any(p not in ends for p in wanted):
            self.raise_ends(self._reader.end_offsets(wanted))
            ends = self.end_offsets()
        if any(p not in positions for p in wanted) and not self._starts:
            self._read_starts()
        with self._lock:
            starts = dict(self._starts)
        behind: dict[int, int] = {}
        for partition in wanted:
            position = positions.get(partition, starts.get(partition, 0))
            if ends.get(partition, 0) > position:
                behind[partition] = position
        events = sum(ends[p] - position for p, position in behind.items())
        return LogLag(events, self._oldest_age(behind))

    def _oldest_age(self, behind: Mapping[int, int]) -> float:
        if not behind:
            return 0.0
        with self._lock:
            self._asked.update(behind)
            never_read = {p: position for p, position in behind.items() if p not in self._ages}
        if never_read:
            self._read_ages(never_read)
        with self._lock:
            stamps = [self._ages[p][1] for p in behind if p in self._ages]
        if not stamps:
            return 0.0
        return max(0.0, (self._clock.now_us() - min(stamps)) / 1e6)

    def _read_ages(self, positions: Mapping[int, int]) -> None:
        found = self._reader.read_first(positions, AGE_READ_TIMEOUT_SECS)
        with self._lock:
            for partition, entry in found.items():
                self._ages[partition] = (positions[partition], entry.logged_at_us)

    def _read_starts(self) -> None:
        try:
            starts = self._reader.start_offsets(range(self._partitions))
        except LogError as exc:
            log.debug("kafka_start_offsets_unknown", extra={"error": str(exc)})
            return
        with self._lock:
            self._starts = starts
            self._starts_read_at = time.monotonic()
