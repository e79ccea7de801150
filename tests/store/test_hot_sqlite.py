"""The SQLite hot store against the hot-store contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from convtrack.errors import StoreError
from convtrack.store.hot.base import HotStore
from convtrack.store.hot.sqlite import SqliteHotStore
from tests.support.contract.hot_contract import MINUTE, T0, HotContract, effect
from tests.support.sqlite_faults import injected_fault, make_unreadable


class TestSqliteHotContract(HotContract):
    def open_store(self, path: Path) -> HotStore:
        return SqliteHotStore(path / "hot.db", dedup_window_secs=self.WINDOW_SECS)


def test_a_failed_apply_changes_nothing(tmp_path: Path) -> None:
    """A batch that fails after its counters were written (the positions, last) leaves
    no trace: counters, dedup entries, replay records and positions move together."""
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    try:
        hot.apply("g", [effect("a", offset=0, recorded=b"A")], {0: 1}, T0)
        batch = [effect("b", offset=1, value=2**63 - 1, recorded=b"B"), effect("a", offset=2)]
        with (
            injected_fault(path, "BEFORE UPDATE ON positions"),
            pytest.raises(StoreError, match="injected fault"),
        ):
            hot.apply("g", batch, {0: 3}, T0 + MINUTE)
        stats = hot.conversions("spring", "2026-11-29")
        assert (stats.conversions, stats.value) == (1, {"USD": 100})
        live = hot.live(T0 + MINUTE, window_minutes=60, latency_minutes=60)
        assert (live.duplicates_total, live.value_overflows_total) == (0, 0)
        assert hot.positions("g") == {0: 1}
        assert hot.remembered() == 1
        again = hot.apply("g", batch, {0: 3}, T0 + MINUTE)
        assert (again.counted, again.value_overflows) == ([True, False], 1)  # 100 + 2**63 - 1
        assert hot.apply("g", batch, {0: 3}, T0 + MINUTE).recorded == {0: b"B"}
    finally:
        hot.close()


def test_an_unreadable_hot_store_fails_its_reads_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    try:
        hot.apply("g", [effect("a", offset=0)], {0: 1}, T0)
        make_unreadable(path)
        reads = [
            lambda: hot.positions("g"),
            lambda: hot.sessions(["s1"]),
            lambda: hot.user_touches(["u1"]),
            lambda: hot.conversions("spring", "2026-11-29"),
            hot.remembered,
        ]
        for read in reads:
            with pytest.raises(StoreError, match="hot store read failed"):
                read()
    finally:
        hot.close()
