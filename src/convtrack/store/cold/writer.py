"""Flush a table's rows into the lake, exactly once, with any number of writers.

Rows are buffered and flushed every ``flush_interval_secs`` or when the
buffer holds ``flush_max_rows``. Per source partition, flushes form a chain:
each one holds the positions from where the previous one ended (the chain's
end, read from the manifest) to the last position read. A flush writes one
Parquet file per hive directory, named by that range
(``part-<partition>-<first>-<last>.parquet``), then creates the range's
manifest object only if no flush holds that start yet (``commit_flush``), then
commits the source positions.

- A crash before the manifest leaves files no manifest names; they are
  deleted once the chain has moved past them (on start, and after a lost race).
- A crash after it: the manifest says how far the lake got; the writer
  resumes at the chain's end, whatever the source's own committed position.
- Two writers reading the same partition (a rebalance, a paused process):
  both extend the chain from the same end, so both try to create the same
  manifest name, and exactly one does. The loser deletes its files that the
  winner's manifest does not name, drops what it buffered for the partition
  and continues after the winner's range.

For the events table, only the first copy of each source event is written
(log/published.py); the filter's state at the end of each flush is kept
in its manifest, so a writer that takes the partition over continues it.

A row that cannot be laid out (its directory or the schema raises) is
quarantined before the manifest names the range, and the rest is written
(store/cold/poison.py). The writers of a store process run on one thread
(store/cold/runner.py).
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.errors import ConvtrackError
from convtrack.log.published import NOTHING_READ, FirstCopies
from convtrack.observe.metrics import Metrics
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import (
    DataFile,
    ManifestEntry,
    TableState,
    chain_head,
    commit_flush,
    read_state,
)
from convtrack.store.cold.poison import LakePoison
from convtrack.store.cold.tables import Position, TableSource
from convtrack.store.quarantine.base import QuarantineStore

log = logging.getLogger("convtrack.cold")

REPLAY_INTERVAL_SECS = 1.0  # how often queued quarantine rows of the table are looked for
_FLUSH_FILE = re.compile(r"(?:^|/)part-(\d+)-(\d+)-(\d+)\.parquet$")


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=128 * 1024)
    return sink.getvalue()


@dataclass
class _Pending:
    """What is read of one partition since the chain's end, waiting for a flush."""

    first: int  # the chain's end when reading started: the range's start
    last: int  # the last position read (its row may have been a copy, not kept)
    rows: list[Any] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)  # of each row (for the quarantine)


class TableWriter:
    def __init__(
        self,
        *,
        lake: ColdStore,
        source: TableSource,
        clock: Clock,
        metrics: Metrics,
        flush_interval_secs: float,
        flush_max_rows: int,
        writer_id: str | None = None,
        quarantine: QuarantineStore | None = None,
    ) -> None:
        self.lake = lake
        self.source = source
        self.table = source.name
        self.writer_id = writer_id or uuid.uuid4().hex[:12]
        self._clock = clock
        self._metrics = metrics
        self._interval = flush_interval_secs
        self._max_rows = flush_max_rows
        self._chain: dict[int, int] = {}  # per partition: where the next flush starts
        self._next_read: dict[int, int] = {}  # per partition: the position expected next
        self._copies = FirstCopies()
        self._pending: dict[int, _Pending] = {}
        self._rows = 0
        self._last_flush = clock.monotonic()
        self._started = False
        self._cleanup_due = False
        self.races_lost = 0
        self.rows_written = 0  # by every flush of this writer, for what a requested flush did
        self.poison = LakePoison(source, quarantine, clock, metrics, parquet_bytes)
        self._last_replay = clock.monotonic() - REPLAY_INTERVAL_SECS

    def recover(self) -> None:
        """Resume at the chain's end; delete files the chain has left behind unnamed."""
        self.lake.ensure_ready()
        state = read_state(self.lake, self.table)
        for partition in state.flushed_through:
            self._load(state, partition)
        self.source.seek(dict(self._chain))
        self._next_read = dict(self._chain)
        self._delete_orphans(state)
        # Files of a crashed flush at the chain's end are removed once a flush passes them.
        self._cleanup_due = True
        self._started = True

    def _load(self, state: TableState, partition: int) -> None:
        self._chain[partition] = state.flushed_through.get(partition, -1) + 1
        self._copies.reset(partition, state.source_through.get(partition, NOTHING_READ))

    def _resync(self, partition: int) -> None:
        """Forget what is buffered for ``partition`` and learn the chain's end again."""
        dropped = self._pending.pop(partition, None)
        if dropped is not None:
            self._rows -= len(dropped.rows)
        head = chain_head(self.lake, self.table, partition)
        last = -1 if head is None or head.last is None else head.last
        through = None if head is None else head.source_through
        self._chain[partition] = last + 1
        self._copies.reset(partition, NOTHING_READ if through is None else through)

    def _rewind(self, partition: int) -> None:
        """Read ``partition`` again from the chain's end."""
        self.source.seek({partition: self._chain[partition]})
        self._next_read[partition] = self._chain[partition]

    def poll_once(self, timeout_secs: float = 0.2) -> int:
        if not self._started:
            self.recover()
        room = self._max_rows - self._rows
        rows = self.source.poll(room, timeout_secs) if room > 0 else []
        self._take(rows)
        due = self._clock.monotonic() - self._last_flush >= self._interval
        if self._pending and (due or self._rows >= self._max_rows):
            self.flush()
        elif due:
            self._last_flush = self._clock.monotonic()
        if self._clock.monotonic() - self._last_replay >= REPLAY_INTERVAL_SECS:
            self._last_replay = self._clock.monotonic()
            self.poison.replay(self.lake, self.writer_id)
        return len(rows)

    def _take(self, rows: Sequence[tuple[Position, Any]]) -> None:
        skipping: set[int] = set()
        for (partition, offset), row in rows:
            if partition in skipping:
                continue
            if offset != self._next_read.get(partition) and not self._skipped_ahead(
                partition, offset
            ):
                # A jump: the partition was (re)assigned to this writer, or the source
                # rewound. Learn the chain's end again before taking anything.
                self._resync(partition)
                if offset < self._chain[partition]:
                    self._rewind(partition)  # already in the lake: skip ahead to the end
                    skipping.add(partition)
                    continue
            pending = self._pending.get(partition)
            if pending is None:
                pending = self._pending[partition] = _Pending(self._chain[partition], offset)
            pending.last = offset
            self._next_read[partition] = offset + 1
            copied = self.source.source_position(row)
            if copied is None or self._copies.keep_position(partition, *copied):
                pending.rows.append(row)
                pending.positions.append((partition, offset))
                self._rows += 1

    def _skipped_ahead(self, partition: int, offset: int) -> bool:
        """Whether the source skipped positions it no longer holds, with the chain unmoved.

        Rejects the store's cap removed, for one: what is buffered still starts
        at the chain's end, so it stays and the range goes on past the gap
        (dropping it would lose rows read but not yet flushed).
        """
        pending, expected = self._pending.get(partition), self._next_read.get(partition)
        if pending is None or expected is None or offset < expected:
            return False
        head = chain_head(self.lake, self.table, partition)
        return (-1 if head is None or head.last is None else head.last) + 1 == pending.first

    def flush(self) -> int:
        """Write everything buffered; raises (and keeps the buffer) if the lake fails."""
        if not self._pending:
            return 0
        started = time.perf_counter()
        committed: dict[int, int] = {}
        count = 0
        for partition in sorted(self._pending):
            pending = self._pending[partition]
            if self._flush_range(partition, pending):
                committed[partition] = pending.last + 1
                count += len(pending.rows)
                self._chain[partition] = pending.last + 1
                del self._pending[partition]
                self._rows -= len(pending.rows)
        failpoints.hit("cold.before_commit")
        if committed:
            try:
                self.source.committed(committed)
            except ConvtrackError as exc:
                # The manifest is what a writer resumes from; the source's own position
                # only shortens the re-read (and a partition that moved on refuses it).
                log.warning("source_commit_failed", extra={"table": self.table, "error": str(exc)})
        failpoints.hit("cold.after_commit")
        self._last_flush = self._clock.monotonic()
        if self._cleanup_due:
            self._delete_orphans(read_state(self.lake, self.table))
            self._cleanup_due = False
        self.rows_written += count
        self._metrics.cold_rows_written.labels(self.table).inc(count)
        self._metrics.cold_flush_seconds.labels(self.table).observe(time.perf_counter() - started)
        return count

    def _flush_range(self, partition: int, pending: _Pending) -> bool:
        """Write and commit one range; False when another flush already holds its start."""
        tables = self.poison.groups(list(zip(pending.positions, pending.rows, strict=True)))
        name = f"part-{partition}-{pending.first:012d}-{pending.last:012d}"
        adds: list[DataFile] = []
        for (directory, date), table in sorted(tables.items(), key=lambda kv: kv[0]):
            path = f"{self.table}/{directory}/{name}.parquet"
            self.lake.put(path, parquet_bytes(table))
            adds.append(DataFile(path=path, rows=table.num_rows, partition_date=date))
            failpoints.hit("cold.between_files")
        entry = ManifestEntry(
            table=self.table,
            kind="flush",
            source_partition=partition,
            first=pending.first,
            last=pending.last,
            adds=adds,
            created_at_us=self._clock.now_us(),
            source_through=self._copies.through(partition),
            writer=self.writer_id,
        )
        holder = commit_flush(self.lake, entry)
        if holder is entry or (holder.writer == self.writer_id and holder.last == entry.last):
            return True  # ours: an earlier attempt whose answer was lost counts too
        # Lost. An identical range of another writer names the very same files (with
        # the same bytes): those stay; everything else written here is removed.
        named = {f.path for f in holder.adds}
        for data_file in adds:
            if data_file.path not in named:
                self.lake.delete(data_file.path)
        self.races_lost += 1
        self._metrics.errors.labels("cold", "flush_race_lost").inc()
        log.info(
            "flush_race_lost",
            extra={
                "table": self.table,
                "partition": partition,
                "first": pending.first,
                "winner": holder.writer,
                "winner_last": holder.last,
            },
        )
        self._resync(partition)
        self._rewind(partition)
        self._cleanup_due = True
        return False

    def _delete_orphans(self, state: TableState) -> None:
        """Delete flush files no manifest names whose range the chain has passed.

        Such a file can never become visible: its range's start is already held
        by another manifest. Files at or after the chain's end may belong to a
        flush in progress in another process, so they stay.
        """
        named = set(state.files) | set(state.removed)
        for path in self.lake.list(self.table):
            match = _FLUSH_FILE.search(path)
            if path in named or match is None:
                continue
            partition, first = int(match.group(1)), int(match.group(2))
            if first <= state.flushed_through.get(partition, -1):
                self.lake.delete(path)

    @property
    def buffered(self) -> int:
        return self._rows
