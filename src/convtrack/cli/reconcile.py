"""``convtrack reconcile``: the hot counters against the lake, per campaign, for one day.

Both sides count each new event once: the hot store when the processor
counts it, the lake when the cold store flushes it. So once the lake has
flushed everything (after a stop, or ``cold.flush_interval_secs`` after the
last event) they must agree, campaign by campaign and currency by currency.
"""

from __future__ import annotations

import re
from datetime import date

import duckdb
import msgspec

from convtrack.cli.output import render
from convtrack.config import Settings
from convtrack.errors import StoreError
from convtrack.runtime.backends import open_hot_store
from convtrack.store.cold import reports
from convtrack.store.cold.lake import Lake
from convtrack.store.cold.query import connect
from convtrack.store.cold.reports import ReportRow

COLUMNS = [
    "campaign_id",
    "hot_conversions",
    "lake_conversions",
    "hot_value",
    "lake_value",
    "status",
]


class Comparison(msgspec.Struct, frozen=True):
    rows: list[tuple[str, int, int, str, str, str]]  # one per campaign, for the table
    differences: list[str]  # one line per campaign that differs


def parse_date(text: str) -> date | None:
    """A ``YYYY-MM-DD`` date, or None."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _money(value: dict[str, int]) -> str:
    return " ".join(f"{currency} {value[currency]}" for currency in sorted(value))


def compare(hot: list[ReportRow], lake: list[ReportRow]) -> Comparison:
    by_hot = {row.key: row for row in hot}
    by_lake = {row.key: row for row in lake}
    empty = ReportRow("", 0, {})
    rows: list[tuple[str, int, int, str, str, str]] = []
    differences: list[str] = []
    for campaign in sorted(by_hot.keys() | by_lake.keys()):
        h, c = by_hot.get(campaign, empty), by_lake.get(campaign, empty)
        same = h.conversions == c.conversions and h.value == c.value
        rows.append(
            (campaign, h.conversions, c.conversions, _money(h.value), _money(c.value),
             "ok" if same else "DIFFERS")
        )  # fmt: skip
        if same:
            continue
        parts = []
        if h.conversions != c.conversions:
            parts.append(f"conversions hot {h.conversions}, lake {c.conversions}")
        for currency in sorted(h.value.keys() | c.value.keys()):
            hv, cv = h.value.get(currency, 0), c.value.get(currency, 0)
            if hv != cv:
                parts.append(f"value {currency} hot {hv}, lake {cv}")
        differences.append(f"campaign {campaign!r}: " + "; ".join(parts))
    return Comparison(rows=rows, differences=differences)


def hot_totals(settings: Settings, day: str) -> list[ReportRow]:
    path = settings.data_dir / "hot" / "hot.db"
    if settings.hot.kind == "sqlite" and not path.is_file():
        raise StoreError(f"no hot store at {path} (is --data-dir right?)")
    hot = open_hot_store(settings)  # SQLite under the data dir, or Redis (hot.kind)
    try:
        totals = hot.campaign_totals(day)
    finally:
        hot.close()
    return [ReportRow(str(t.campaign_id), t.conversions, dict(t.value)) for t in totals]


def lake_totals(settings: Settings, day: str) -> list[ReportRow]:
    lake = Lake.open(
        settings.lake_uri, endpoint_url=settings.cold.s3_endpoint_url or None, create_bucket=False
    )
    try:
        con = connect(lake)
        try:
            return reports.conversions(con, "campaign_id", day, day)
        finally:
            con.close()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the lake: {str(exc).splitlines()[0]}") from exc


def reconcile(settings: Settings, day: str) -> tuple[str, bool]:
    """The report to print, and whether both sides agree."""
    result = compare(hot_totals(settings, day), lake_totals(settings, day))
    lines = [f"date {day}: hot counters vs lake, per campaign"]
    lines.append(render(COLUMNS, list(result.rows), "table"))
    if result.differences:
        lines += result.differences
        lines.append(
            f"{len(result.differences)} campaign(s) differ. The lake holds events up to its last"
            " flush: run again after the server stopped or after cold.flush_interval_secs."
        )
    else:
        lines.append("no difference")
    return "\n".join(lines), not result.differences
