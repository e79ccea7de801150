"""SQL over the lake with DuckDB: views ``events`` and ``rejects`` over the visible files.

Only files a manifest names are read, so a query never sees a half-made
flush or a compaction's inputs and output together. Local lakes are read by
DuckDB directly; S3 lakes through pyarrow's S3 file system (no DuckDB
extension to download).
"""

from __future__ import annotations

from typing import Any

import duckdb

from convtrack.store.cold.lake import Lake
from convtrack.store.cold.manifest import read_state

TABLES = ("events", "rejects")


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    lake.ensure_ready()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        files = sorted(read_state(lake, table).files)
        if not files:
            con.register(f"_{table}_empty", _schema(table).empty_table())
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_empty")
        elif lake.local:
            paths = ", ".join("'" + lake.path(f).replace("'", "''") + "'" for f in files)
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{paths}],"
                " hive_partitioning = false)"
            )
        else:
            import pyarrow.dataset as pads

            dataset = pads.dataset(
                [lake.path(f) for f in files],
                schema=_schema(table),
                format="parquet",
                filesystem=lake.fs,
            )
            con.register(f"_{table}_dataset", dataset)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_dataset")
    return con


def _schema(table: str) -> Any:
    """The table's pyarrow schema (imported late: local queries do not need pyarrow)."""
    from convtrack.store.cold import schema

    return schema.EVENTS if table == "events" else schema.REJECTS
