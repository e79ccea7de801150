"""Conversion reports over the lake: plain SQL on a DuckDB connection from ``query.connect``.

A conversion here is a counted one (``counted.COUNTED``: the processor's
verdict, the same one the hot counters counted); the lake holds every new
(deduplicated) event once. Values are summed per currency, in minor units.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, get_args

import duckdb
import msgspec

from convtrack.store.cold.counted import COUNTED

GroupBy = Literal["day", "campaign_id", "country_code", "device_type"]
GROUP_BY: Final[tuple[GroupBy, ...]] = get_args(GroupBy)

# The events column each grouping reads; the only text put into the SQL.
_KEY_COLUMN: Final[dict[GroupBy, str]] = {
    "day": "event_date",
    "campaign_id": "campaign_id",
    "country_code": "country_code",
    "device_type": "device_type",
}


class ReportRow(msgspec.Struct, frozen=True):
    key: str
    conversions: int
    value: dict[str, int]


def conversions(
    con: duckdb.DuckDBPyConnection, group_by: GroupBy, first: str, last: str
) -> list[ReportRow]:
    """Conversions and value per currency per group, event dates ``first`` to ``last`` inclusive.

    Dates are ``YYYY-MM-DD`` (UTC event dates). Rows are sorted by key; groups
    without conversions are absent.
    """
    column = _KEY_COLUMN[group_by]
    rows = con.execute(
        f"SELECT {column} AS k, currency, count(*) AS n, sum(value) AS v FROM events"
        f" WHERE {COUNTED} AND event_date BETWEEN ? AND ?"
        " GROUP BY ALL ORDER BY k, currency",
        [first, last],
    ).fetchall()
    return _fold(rows)


def _fold(rows: Iterable[tuple[Any, ...]]) -> list[ReportRow]:
    """(key, currency, count, sum) rows, sorted by key, to one ReportRow per key."""
    out: list[ReportRow] = []
    for key, currency, n, amount in rows:
        if not out or out[-1].key != key:
            out.append(ReportRow(str(key), 0, {}))
        last = out[-1]
        if currency is not None:
            last.value[str(currency)] = int(amount or 0)
        out[-1] = ReportRow(last.key, last.conversions + int(n), last.value)
    return out


def merge(*parts: Iterable[ReportRow]) -> list[ReportRow]:
    """Add up rows with the same key; the result is sorted by key."""
    counts: dict[str, int] = {}
    values: dict[str, dict[str, int]] = {}
    for part in parts:
        for row in part:
            counts[row.key] = counts.get(row.key, 0) + row.conversions
            value = values.setdefault(row.key, {})
            for currency, amount in row.value.items():
                value[currency] = value.get(currency, 0) + amount
    return [ReportRow(key, counts[key], values[key]) for key in sorted(counts)]
