"""The cold-store contract: every ColdStore (a local directory, S3) must pass it.

Subclass ``ColdContract`` and provide ``open_store(path)`` (the same lake each
time it is called within a test, as another process would open it) and
``open_uri(uri)`` (the lake a ``cold.uri`` names, reached as the settings
would). Every operation of the port is here: what the writer, the manifest,
compaction and retention, the poison rows and the DuckDB readers rely on.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convtrack.errors import StoreError
from convtrack.store.cold.base import ColdStore

EVERY_BYTE = bytes(range(256)) * 4
SCHEMA = pa.schema([("n", pa.int64()), ("word", pa.string())])


def parquet(rows: list[tuple[int, str]]) -> bytes:
    table = pa.table({"n": [n for n, _ in rows], "word": [w for _, w in rows]}, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class ColdContract(ABC):
    @abstractmethod
    def open_store(self, path: Path) -> ColdStore: ...

    @abstractmethod
    def open_uri(self, uri: str) -> ColdStore: ...

    @pytest.fixture
    def lake(self, tmp_path: Path) -> ColdStore:
        store = self.open_store(tmp_path)
        store.ensure_ready()
        return store

    def test_ensure_ready_may_be_called_again(self, lake: ColdStore) -> None:
        lake.ensure_ready()
        lake.put("a", b"x")
        assert lake.read("a") == b"x"

    def test_put_then_read_gives_the_bytes_back(self, lake: ColdStore) -> None:
        lake.put("events/event_date=2026-11-29/part-0-1-2.parquet", EVERY_BYTE)
        lake.put("empty", b"")
        assert lake.read("events/event_date=2026-11-29/part-0-1-2.parquet") == EVERY_BYTE
        assert lake.read("empty") == b""

    def test_put_replaces_an_object_of_the_same_name(self, lake: ColdStore) -> None:
        lake.put("t/f", b"first, and longer")
        lake.put("t/f", b"second")
        assert lake.read("t/f") == b"second"
        assert lake.list("t") == ["t/f"]

    def test_reading_a_missing_object_is_a_store_error(self, lake: ColdStore) -> None:
        with pytest.raises(StoreError):
            lake.read("t/absent")

    def test_readers_see_a_new_object_whole_or_not_at_all(
        self, lake: ColdStore, tmp_path: Path
    ) -> None:
        """What a reader of data files relies on: a file being written is absent or complete
        (the writers replace a file only by a replayed flush of the same rows)."""
        data = {f"t/f{i}": bytes([i]) * 300_000 for i in range(8)}
        seen: dict[str, set[bytes]] = {name: set() for name in data}
        done = threading.Event()

        def write() -> None:
            for name, body in data.items():
                lake.put(name, body)
            done.set()

        writer = threading.Thread(target=write)
        reader = self.open_store(tmp_path)  # as another process reads it
        writer.start()
        while not done.is_set():
            for name in reader.list("t"):
                seen[name].add(reader.read(name))
        writer.join()
        for name in data:
            seen[name].add(reader.read(name))
        assert seen == {name: {body} for name, body in data.items()}

    def test_create_if_absent_creates_once_and_keeps_the_first(self, lake: ColdStore) -> None:
        assert lake.put_if_absent("_manifest/events/flush-part-0-000000000000.json", b"one")
        assert not lake.put_if_absent("_manifest/events/flush-part-0-000000000000.json", b"two")
        assert lake.read("_manifest/events/flush-part-0-000000000000.json") == b"one"
        assert lake.list("_manifest") == ["_manifest/events/flush-part-0-000000000000.json"]

    def test_create_if_absent_finds_a_name_a_put_took(self, lake: ColdStore) -> None:
        lake.put("m/x", b"put")
        assert not lake.put_if_absent("m/x", b"created")
        assert lake.read("m/x") == b"put"

    def test_of_concurrent_creates_of_one_name_exactly_one_wins(
        self, lake: ColdStore, tmp_path: Path
    ) -> None:
        writers = 8
        views = [self.open_store(tmp_path) for _ in range(writers)]  # one per "process"
        for view in views:
            view.ensure_ready()
        start = threading.Barrier(writers)
        won: list[int] = []

        def create(i: int) -> None:
            start.wait()
            if views[i].put_if_absent("_manifest/events/change-000000000001.json", b"w%d" % i):
                won.append(i)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        assert lake.read("_manifest/events/change-000000000001.json") == b"w%d" % won[0]

    def test_list_is_recursive_sorted_relative_to_the_root_and_scoped(
        self, lake: ColdStore
    ) -> None:
        for name in ["t/b/1", "t/2", "t/c/d/3", "t2/4", "top"]:
            lake.put(name, b"x")
        assert lake.list("t") == ["t/2", "t/b/1", "t/c/d/3"]  # not t2/
        assert lake.list("t/c") == ["t/c/d/3"]
        assert lake.list("") == ["t/2", "t/b/1", "t/c/d/3", "t2/4", "top"]
        assert lake.list("absent") == []

    def test_delete_removes_and_a_missing_object_is_no_error(self, lake: ColdStore) -> None:
        lake.put("t/a", b"x")
        lake.put("t/b", b"y")
        lake.delete("t/a")
        lake.delete("t/a")
        lake.delete("never/there")
        assert lake.list("t") == ["t/b"]
        with pytest.raises(StoreError):
            lake.read("t/a")

    def test_probe_writes_and_leaves_nothing(self, lake: ColdStore) -> None:
        lake.probe()
        assert lake.list("") == []

    def test_another_view_sees_every_write(self, lake: ColdStore, tmp_path: Path) -> None:
        lake.put("t/a", b"x")
        assert lake.put_if_absent("t/b", b"y")
        other = self.open_store(tmp_path)
        other.ensure_ready()
        assert other.list("t") == ["t/a", "t/b"]
        assert not other.put_if_absent("t/b", b"z")
        other.delete("t/a")
        assert lake.list("t") == ["t/b"]

    def test_its_uri_opens_the_same_lake(self, lake: ColdStore) -> None:
        lake.put("t/a", b"x")
        again = self.open_uri(lake.uri)
        again.ensure_ready()
        assert again.uri == lake.uri
        assert again.read("t/a") == b"x"

    def test_a_view_reads_exactly_the_files_named(self, lake: ColdStore) -> None:
        named = ["t/event_date=2026-11-29/it's one.parquet", "t/event_date=2026-11-30/two.parquet"]
        lake.put(named[0], parquet([(1, "a"), (2, "b")]))
        lake.put(named[1], parquet([(3, "ü")]))
        lake.put("t/event_date=2026-11-30/not-named.parquet", parquet([(4, "x")]))
        con = duckdb.connect()
        try:
            lake.create_view(con, "t", named, lambda: SCHEMA)
            rows = con.execute("select n, word from t order by n").fetchall()
            columns = [d[0] for d in con.execute("select * from t").description or []]
        finally:
            con.close()
        assert rows == [(1, "a"), (2, "b"), (3, "ü")]
        assert columns == ["n", "word"]  # the hive directory adds no column
