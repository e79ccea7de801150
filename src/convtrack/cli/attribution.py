"""``convtrack attribution``: the attribution report of ``GET /v1/reports/attribution``, offline."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from convtrack.cli.output import render
from convtrack.config import Settings
from convtrack.errors import StoreError
from convtrack.model.currency import format_money
from convtrack.runtime.backends import open_lake
from convtrack.store.cold.attribution import MODELS, AttributionRow, attribute
from convtrack.store.cold.query import connect

COLUMNS = ["campaign_id", "conversions", "value"]


def rows(
    settings: Settings, model: str, start: date, end: date, lookback_days: int
) -> list[AttributionRow]:
    chosen = next(m for m in MODELS if m == model)
    lake = open_lake(settings, create_bucket=False)
    try:
        con = connect(lake)
        try:
            return attribute(con, chosen, start, end, lookback_days)
        finally:
            con.close()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the lake: {str(exc).splitlines()[0]}") from exc


def money_text(value: dict[str, int] | dict[str, float]) -> str:
    """Per-currency amounts in minor units as one cell: "EUR 1.50 USD 3.00"."""
    return " ".join(format_money(value[currency], currency) for currency in sorted(value))


def report(found: list[AttributionRow], fmt: str) -> str:
    """JSON rows are those of the HTTP answer (value in minor units). Table and CSV
    round conversions to 6 decimals and show value in major units by each currency's
    exponent, rounded to its digits: "EUR 1.50 USD 3.01" for {"EUR": 150, "USD": 300.5}."""
    table: list[tuple[Any, ...]] = [
        (r.campaign_id, r.conversions, r.value)
        if fmt == "json"
        else (r.campaign_id, round(r.conversions, 6), money_text(r.value))
        for r in found
    ]
    return render(COLUMNS, table, fmt)
