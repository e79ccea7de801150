"""Reading the processed log: the first copy of each source event, once.

The processor publishes the events of source partition ``p`` to processed
partition ``p``, in source order. Two processors may briefly own the same
source partition (a rebalance, a paused process whose partitions moved on),
and both publish what they processed, so a processed partition can hold a
source event twice. Kafka cannot make "check the tail, then append" atomic
without transactions, so the copies are told apart on the reading side, by
one deterministic rule every reader applies:

    keep a record iff its source offset is above every source offset
    before it in the same processed partition.

Each processor publishes a contiguous run of source offsets, in order,
starting after the source offset of the partition's last record (see
``process/runner.py``), and an append lands in order without gaps (a failed
append leaves at most a prefix). So every new source event's first copy comes
before any record with a higher source offset, and the rule keeps exactly
that first copy: each source event once, in source order. (ADR 0004.)

The state is one integer per partition: the highest source offset read so
far. A reader that resumes in the middle of a partition must start from the
state at that point (the lake keeps it in its manifest).
"""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.model.processed import ProcessedEvent

NOTHING_READ = -1


class FirstCopies:
    """The rule above, for one reader: per processed partition, the highest source offset."""

    def __init__(self, through: Mapping[int, int] | None = None) -> None:
        self._through: dict[int, int] = dict(through or {})

    def keep(self, partition: int, event: ProcessedEvent) -> bool:
        """Whether this record is the first copy of its source event (and remember it)."""
        return self.keep_position(partition, event.source_partition, event.source_offset)

    def keep_position(self, partition: int, source_partition: int, source_offset: int) -> bool:
        if source_partition != partition:
            # Routed by key rather than by source partition (a processed topic with another
            # partition count): no order to compare with, so nothing is dropped.
            return True
        if source_offset <= self._through.get(partition, NOTHING_READ):
            return False
        self._through[partition] = source_offset
        return True

    def through(self, partition: int) -> int:
        return self._through.get(partition, NOTHING_READ)

    def reset(self, partition: int, through: int) -> None:
        """Continue a partition from a known state (after a seek)."""
        self._through[partition] = through
