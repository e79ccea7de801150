"""The SQLite hot store against the hot-store contract."""

from __future__ import annotations

from pathlib import Path

from convtrack.store.hot.base import HotStore
from convtrack.store.hot.sqlite import SqliteHotStore
from tests.contract.hot_contract import HotContract


class TestSqliteHotContract(HotContract):
    def open_store(self, path: Path) -> HotStore:
        return SqliteHotStore(path / "hot.db", dedup_window_secs=self.WINDOW_SECS)
