"""Both hot stores against the excluded-counters contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from convtrack.store.hot.base import HotStore
from convtrack.store.hot.sqlite import SqliteHotStore
from tests.store.test_hot_redis import open_redis
from tests.support.contract.hot_excluded_contract import ExcludedContract


class TestSqliteExcluded(ExcludedContract):
    def open_store(self, path: Path) -> HotStore:
        return SqliteHotStore(path / "hot.db", dedup_window_secs=self.WINDOW_SECS)


class TestRedisExcluded(ExcludedContract):
    url: str

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.url = redis_url

    def open_store(self, path: Path) -> HotStore:
        return open_redis(self.url, path, self.WINDOW_SECS)
