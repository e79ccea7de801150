"""The lake's side of a property stream: flushes, crashes inside them, compactions, retention.

``LakeSide`` drives the cold store's events writer by hand on a pipeline's
processed log and lake, as the ``store`` processes would:

- ``flush``: the writer reads the processed log to its end and flushes;
  ``crash`` names the writer's failpoint where its process dies instead
  (``cold.between_files``: the data file is written, its manifest is not;
  ``cold.before_commit``: the manifest is committed, the source position is
  not; ``cold.after_commit``: both, before the writer's cleanup). The dead
  writer is dropped and a new one is built from the same stores, as after a
  restart: no SIGKILL is needed in one process, since nothing of the dead
  writer's memory survives.
- ``compact_start`` / ``compact_finish``: a compactor of another process
  plans and merges from its own view of the lake now (and stages its merged
  file now, or only when it finishes) and commits later, after whatever the
  stream did meanwhile (flushes, other compactions, retention).
- ``maintain``: a compaction run in one go, then the removed files purged.
- ``expire``: retention; the source positions of the rows it removed are
  kept (``retired``), so the end check knows the lake must not show them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from convtrack import failpoints
from convtrack.clock import ManualClock
from convtrack.runtime.backends import open_cold_store
from convtrack.runtime.embedded import Pipeline
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.maintain import (
    COMMIT_ATTEMPTS,
    Compactor,
    Merge,
    Staged,
    compact,
    expire,
    purge_removed,
    utc_date,
)
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import EventsSource, Position
from convtrack.store.cold.writer import TableWriter, parquet_bytes

WRITER_CRASHES = ("cold.between_files", "cold.before_commit", "cold.after_commit")


class Crash(BaseException):
    """The process died at a failpoint: nothing after it runs (no handler may catch it)."""


@contextmanager
def crash_at(name: str) -> Iterator[None]:
    """Within ``with``, reaching failpoint ``name`` raises ``Crash`` (instead of SIGKILL)."""
    real = failpoints.hit

    def hit(reached: str) -> None:
        if reached == name:
            raise Crash(reached)
        real(reached)

    failpoints.hit = hit
    try:
        yield
    finally:
        failpoints.hit = real


@dataclass
class _Planned:
    merge: Merge
    data: bytes
    rows: int
    staged: Staged | None


@dataclass
class _Compaction:
    compactor: Compactor
    merges: list[_Planned] = field(default_factory=list)


class LakeSide:
    def __init__(self, pipeline: Pipeline, clock: ManualClock) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.writer = self._new_writer()
        self.compactions: list[_Compaction] = []
        self.retired: set[Position] = set()  # source positions whose rows retention removed
        self.expired_before = ""  # the newest retention's first kept date ("" if none)
        self.crashes = 0  # flushes that died at their failpoint
        self.compacted = 0  # merges committed
        self.superseded = 0  # merges given up: their inputs were no longer visible

    def open_lake(self) -> ColdStore:
        """The lake as another process opens it: a view of its own."""
        settings = self.pipeline.settings
        lake = open_cold_store(
            settings.lake_uri, endpoint_url=settings.cold.s3_endpoint_url or None
        )
        lake.ensure_ready()
        return lake

    def _new_writer(self) -> TableWriter:
        return TableWriter(
            lake=self.open_lake(),
            source=EventsSource(self.pipeline.processed.consumer("cold")),
            clock=self.clock,
            metrics=self.pipeline.metrics,
            flush_interval_secs=1e12,  # flushes happen when the stream says
            flush_max_rows=1_000_000,
            quarantine=self.pipeline.backends.quarantine,
        )

    def flush(self, crash: str | None = None) -> None:
        while self.writer.poll_once(timeout_secs=0.0):
            pass
        if crash is None:
            self.writer.flush()
            return
        try:
            with crash_at(crash):
                self.writer.flush()
        except Crash:
            self.crashes += 1
        # Died, or (nothing to flush) lived on: either way the next process starts afresh.
        self.writer.source.close()
        self.writer = self._new_writer()

    def compact_start(self, stage_now: bool) -> None:
        now = self.clock.now_us()
        compactor = Compactor(self.open_lake(), "events", now_us=now)
        run = _Compaction(compactor)
        for merge in compactor.plan(closed_before=utc_date(now)):
            table = compactor.merge(merge)
            if table is None:
                continue
            data = parquet_bytes(table)
            staged = compactor.stage(merge, data, table.num_rows) if stage_now else None
            run.merges.append(_Planned(merge, data, table.num_rows, staged))
        self.compactions.append(run)

    def compact_finish(self) -> None:
        """The oldest compaction in progress commits what it planned, as ``Compactor.run``."""
        if not self.compactions:
            return
        run = self.compactions.pop(0)
        compactor = run.compactor
        for planned in run.merges:
            if planned.staged is not None and compactor.publish(planned.staged):
                self.compacted += 1
                continue
            for _ in range(COMMIT_ATTEMPTS):
                staged = compactor.stage(planned.merge, planned.data, planned.rows)
                if staged is None:
                    break
                if compactor.publish(staged):
                    self.compacted += 1
                    break
        self.superseded += compactor.superseded

    def maintain(self) -> None:
        lake, now = self.open_lake(), self.clock.now_us()
        self.compacted += compact(lake, "events", closed_before=utc_date(now), now_us=now)
        purge_removed(lake, "events", now_us=now, grace_secs=0.0)

    def expire(self, keep_from: str) -> None:
        lake = self.open_lake()
        con = connect(lake)
        try:
            old = con.execute(
                "select source_partition, source_offset from events where event_date < ?",
                [keep_from],
            ).fetchall()
        finally:
            con.close()
        expire(lake, "events", keep_from=keep_from, now_us=self.clock.now_us())
        self.retired |= {(int(p), int(o)) for p, o in old}
        self.expired_before = max(self.expired_before, keep_from)

    def finish(self) -> None:
        """Compactions still in progress commit (or give up), and the writer flushes all."""
        while self.compactions:
            self.compact_finish()
        self.flush()
        self.writer.source.close()

    def positions(self) -> list[Position]:
        """The source positions of the rows the lake shows, with repeats."""
        con = connect(self.open_lake())
        try:
            rows = con.execute("select source_partition, source_offset from events").fetchall()
        finally:
            con.close()
        return [(int(p), int(o)) for p, o in rows]
