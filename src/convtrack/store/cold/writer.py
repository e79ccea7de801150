"""Flush a table's rows into the lake, exactly once.

Rows are buffered and flushed every ``flush_interval_secs`` or when the
buffer holds ``flush_max_rows``. A flush writes one Parquet file per hive
directory, named by the source positions it holds
(``part-<partition>-<first>-<last>.parquet``), then one manifest object
naming those files, then commits the source positions. A crash before the
manifest leaves invisible files that the next start deletes; a crash after
it is recognized on start (the manifest says how far the lake got) and the
source resumes after it. Either way no row is lost or doubled.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.errors import ConvtrackError
from convtrack.observe.metrics import Metrics
from convtrack.store.cold.lake import Lake
from convtrack.store.cold.manifest import DataFile, ManifestEntry, read_state, write_entry
from convtrack.store.cold.tables import Position, TableSource

log = logging.getLogger("convtrack.cold")


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=128 * 1024)
    return sink.getvalue()


class TableWriter:
    def __init__(
        self,
        *,
        lake: Lake,
        source: TableSource,
        clock: Clock,
        metrics: Metrics,
        flush_interval_secs: float,
        flush_max_rows: int,
    ) -> None:
        self.lake = lake
        self.source = source
        self.table = source.name
        self._clock = clock
        self._metrics = metrics
        self._interval = flush_interval_secs
        self._max_rows = flush_max_rows
        self._buffer: list[tuple[Position, Any]] = []
        self._last_flush = clock.monotonic()
        self._started = False

    def recover(self) -> None:
        """Resume after what the manifest says is flushed; delete files no manifest names."""
        self.lake.ensure_ready()
        state = read_state(self.lake, self.table)
        self.source.seek({p: last + 1 for p, last in state.flushed_through.items()})
        named = set(state.files) | set(state.removed)
        for path in self.lake.list(self.table):
            if path not in named:
                self.lake.delete(path)  # written by a flush that crashed before its manifest
        self._started = True

    def poll_once(self, timeout_secs: float = 0.2) -> int:
        if not self._started:
            self.recover()
        room = self._max_rows - len(self._buffer)
        rows = self.source.poll(room, timeout_secs) if room > 0 else []
        self._buffer.extend(rows)
        due = self._clock.monotonic() - self._last_flush >= self._interval
        if self._buffer and (due or len(self._buffer) >= self._max_rows):
            self.flush()
        elif due:
            self._last_flush = self._clock.monotonic()
        return len(rows)

    def flush(self) -> int:
        """Write everything buffered; raises (and keeps the buffer) if the lake fails."""
        if not self._buffer:
            return 0
        started = time.perf_counter()
        by_partition: defaultdict[int, list[tuple[Position, Any]]] = defaultdict(list)
        for position, row in self._buffer:
            by_partition[position[0]].append((position, row))
        committed: dict[int, int] = {}
        for partition, rows in sorted(by_partition.items()):
            first, last = rows[0][0][1], rows[-1][0][1]
            self._flush_range(partition, first, last, [row for _, row in rows])
            committed[partition] = last + 1
        failpoints.hit("cold.before_commit")
        self.source.committed(committed)
        failpoints.hit("cold.after_commit")
        count = len(self._buffer)
        self._buffer.clear()
        self._last_flush = self._clock.monotonic()
        self._metrics.cold_rows_written.labels(self.table).inc(count)
        self._metrics.cold_flush_seconds.labels(self.table).observe(time.perf_counter() - started)
        return count

    def _flush_range(self, partition: int, first: int, last: int, rows: list[Any]) -> None:
        groups: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[self.source.directory(row)].append(row)
        name = f"part-{partition}-{first:012d}-{last:012d}"
        adds: list[DataFile] = []
        for (directory, date), group in sorted(groups.items()):
            path = f"{self.table}/{directory}/{name}.parquet"
            self.lake.put(path, parquet_bytes(self.source.to_table(group)))
            adds.append(DataFile(path=path, rows=len(group), partition_date=date))
            failpoints.hit("cold.between_files")
        entry = ManifestEntry(
            table=self.table,
            kind="flush",
            source_partition=partition,
            first=first,
            last=last,
            adds=adds,
            created_at_us=self._clock.now_us(),
        )
        write_entry(self.lake, entry, f"flush-{name}")

    @property
    def buffered(self) -> int:
        return len(self._buffer)


class ColdStoreRunner:
    """Runs the table writers on one thread; retries a failing lake with backoff.

    Every ``maintain_interval_secs`` it also runs ``maintain`` (compaction,
    retention) between polls, on the same thread, so upkeep never races a flush.
    """

    def __init__(
        self,
        writers: list[TableWriter],
        metrics: Metrics,
        maintain: Callable[[], None] | None = None,
        maintain_interval_secs: float = 3600.0,
    ) -> None:
        self._writers = writers
        self._metrics = metrics
        self._maintain = maintain
        self._maintain_interval = maintain_interval_secs
        self._last_maintain = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cold-store", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def health(self) -> dict[str, object]:
        return {
            "healthy": self.last_error is None,
            "detail": self.last_error or "ok",
            "buffered_rows": sum(w.buffered for w in self._writers),
        }

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                for writer in self._writers:
                    writer.poll_once(timeout_secs=0.1)
                if (
                    self._maintain is not None
                    and time.monotonic() - self._last_maintain >= self._maintain_interval
                ):
                    self._maintain()
                    self._last_maintain = time.monotonic()
                self.last_error, delay = None, 0.5
            except ConvtrackError as exc:
                self.last_error = str(exc)
                self._metrics.errors.labels("cold", type(exc).__name__).inc()
                log.warning("lake_write_failed", extra={"error": str(exc), "retry_in_secs": delay})
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def flush_all(self) -> None:
        """Read every table's source to its end and flush it all now.

        For tests and tools that drive the writers by hand: only while the
        runner's thread is not running (a writer is not shared between threads).
        """
        if self._thread.is_alive():
            raise RuntimeError("flush_all while the cold-store thread runs")
        for writer in self._writers:
            while writer.poll_once(timeout_secs=0.0):
                pass
            writer.flush()

    def stop(self, flush: bool = True) -> None:
        """Stop polling, then flush what is buffered (once; the rest replays on restart)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        if self._thread.is_alive():
            log.warning("cold_store_still_busy_at_stop")  # its rows replay on the next start
            return
        if flush:
            deadline = time.monotonic() + 5.0
            for writer in self._writers:
                try:
                    while writer.poll_once(timeout_secs=0.0) and time.monotonic() < deadline:
                        pass
                    writer.flush()
                except ConvtrackError as exc:
                    log.warning(
                        "final_flush_failed", extra={"table": writer.table, "error": str(exc)}
                    )
        for writer in self._writers:
            writer.source.close()
