"""SQL over the lake with DuckDB: views ``events`` and ``rejects`` over the visible files.

Only files a manifest names are read, so a query never sees a half-made
flush or a compaction's inputs and output together. How DuckDB reaches the
files is the lake's to say (``ColdStore.create_view``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import duckdb

from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import read_state

TABLES = ("events", "rejects")


def connect(lake: ColdStore) -> duckdb.DuckDBPyConnection:
    lake.ensure_ready()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        files = sorted(read_state(lake, table).files)
        if not files:
            con.register(f"_{table}_empty", _schema(table).empty_table())
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_empty")
        else:
            lake.create_view(con, table, files, partial(_schema, table))
    return con


def _schema(table: str) -> Any:
    """The table's pyarrow schema (imported late: local queries do not need pyarrow)."""
    from convtrack.store.cold import schema

    return schema.EVENTS if table == "events" else schema.REJECTS
