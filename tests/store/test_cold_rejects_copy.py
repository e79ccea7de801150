"""The lake's copy of the rejects keeps every reject it has read, also when the cap
removes rows from the store while they wait in the copier's buffer."""

from __future__ import annotations

from pathlib import Path

from convtrack.clock import ManualClock
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import RejectsSource
from convtrack.store.cold.writer import TableWriter
from convtrack.store.rejects.sqlite import SqliteRejectStore
from tests.store.test_rejects_store import T0, add, reject


def lake_reject_ids(lake: ColdStore) -> list[int]:
    con = connect(lake)
    try:
        return [r[0] for r in con.execute("select reject_id from rejects order by 1").fetchall()]
    finally:
        con.close()


def test_rejects_buffered_before_the_cap_removed_later_ones_reach_the_lake(
    tmp_path: Path,
) -> None:
    store = SqliteRejectStore(tmp_path / "rejects.db", max_rows=5, max_body_bytes=1000)
    lake = open_cold_store(str(tmp_path / "lake"))
    writer = TableWriter(
        lake=lake,
        source=RejectsSource(store),
        clock=ManualClock(start_us=T0),
        metrics=Metrics(),
        flush_interval_secs=3600,
        flush_max_rows=1000,
    )
    try:
        add(store, [reject(n) for n in range(3)])  # ids 1 to 3
        while writer.poll_once(timeout_secs=0.0):
            pass
        assert writer.buffered == 3  # read, waiting for the next flush
        add(store, [reject(n) for n in range(3, 13)])  # ids 4 to 13: the cap keeps 9 to 13
        while writer.poll_once(timeout_secs=0.0):
            pass
        writer.flush()
        assert lake_reject_ids(lake) == [1, 2, 3, 9, 10, 11, 12, 13]
        add(store, [reject(13)])  # the chain goes on after the jump
        while writer.poll_once(timeout_secs=0.0):
            pass
        writer.flush()
        assert lake_reject_ids(lake) == [1, 2, 3, 9, 10, 11, 12, 13, 14]
    finally:
        store.close()
