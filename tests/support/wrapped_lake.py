"""A lake that passes every call of the ColdStore port on to a real one, for tests to
override one operation (a hook before a read, a lost answer) on either implementation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from convtrack.store.cold.base import ColdStore

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class WrappedLake(ColdStore):
    def __init__(self, inner: ColdStore) -> None:
        self.inner = inner
        self.uri = inner.uri

    def ensure_ready(self) -> None:
        self.inner.ensure_ready()

    def put(self, relative: str, data: bytes) -> None:
        self.inner.put(relative, data)

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        return self.inner.put_if_absent(relative, data)

    def read(self, relative: str) -> bytes:
        return self.inner.read(relative)

    def list(self, relative_dir: str) -> list[str]:
        return self.inner.list(relative_dir)

    def delete(self, relative: str) -> None:
        self.inner.delete(relative)

    def create_view(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        files: Sequence[str],
        schema: Callable[[], pa.Schema],
    ) -> None:
        self.inner.create_view(con, view, files, schema)
