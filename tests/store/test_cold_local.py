"""The local-directory lake against the cold-store contract, plus what only it promises."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.local import LocalColdStore
from tests.support.contract.cold_contract import ColdContract, parquet


class TestLocalColdContract(ColdContract):
    def open_store(self, path: Path) -> ColdStore:
        return open_cold_store(str(path / "lake"))

    def open_uri(self, uri: str) -> ColdStore:
        return open_cold_store(uri)


def test_a_path_gives_a_local_lake_made_if_missing(tmp_path: Path) -> None:
    lake = open_cold_store(str(tmp_path / "new" / "lake"))
    assert isinstance(lake, LocalColdStore)
    assert (tmp_path / "new" / "lake").is_dir()
    assert lake.uri == str((tmp_path / "new" / "lake").resolve())


def test_a_crashed_put_leaves_no_listed_file(tmp_path: Path) -> None:
    lake = LocalColdStore(tmp_path / "lake")
    lake.put("t/a", b"x")
    (tmp_path / "lake" / "t" / ".tmp-0123abcd").write_bytes(b"half a file")
    assert lake.list("t") == ["t/a"]


def test_a_local_query_needs_no_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = LocalColdStore(tmp_path / "lake")
    lake.put("t/a.parquet", parquet([(1, "a")]))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # any import of it now fails
    con = duckdb.connect()
    try:
        lake.create_view(con, "t", ["t/a.parquet"], lambda: pytest.fail("schema was asked for"))
        assert con.execute("select n from t").fetchall() == [(1,)]
    finally:
        con.close()
