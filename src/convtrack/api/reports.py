"""Reports over a date range: the lake for past days, the hot counters for today.

The lake holds today only up to its last flush (``cold.flush_interval_secs``),
so today and later dates come from the live counters, which the hot store
keeps by campaign and by the enriched dimensions (``country_code``,
``device_type``); ``today_from`` says which source served today.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

import duckdb

from convtrack.api.query import QueryInvalid, text
from convtrack.clock import Clock
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, error, json_response
from convtrack.errors import ConvtrackError
from convtrack.model import codes
from convtrack.store.cold import reports
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.query import connect
from convtrack.store.cold.reports import GROUP_BY, GroupBy, ReportRow
from convtrack.store.hot.base import HotStore

log = logging.getLogger("convtrack.http")

MAX_DAYS: Final = 366
HOT_GROUPS: Final[frozenset[str]] = frozenset({"day", "campaign_id", "country_code", "device_type"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str | None) -> date | None:
    if value is None or _DATE.fullmatch(value) is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def date_range(request: Request) -> tuple[date, date]:
    """``from`` and ``to``: dates, in order, at most ``MAX_DAYS`` days; else QueryInvalid."""
    start = parse_date(text(request, "from"))
    if start is None:
        raise QueryInvalid("from", "from and to must be YYYY-MM-DD")
    end = parse_date(text(request, "to"))
    if end is None:
        raise QueryInvalid("to", "from and to must be YYYY-MM-DD")
    if start > end:
        raise QueryInvalid("from", "from must not be after to")
    if (end - start).days + 1 > MAX_DAYS:
        raise QueryInvalid("to", f"at most {MAX_DAYS} days at once")
    return start, end


class ReportsApi:
    def __init__(self, *, lake: ColdStore, hot: HotStore, clock: Clock) -> None:
        self._lake = lake
        self._hot = hot
        self._clock = clock

    async def conversions(self, request: Request, key: ApiKey, route: str) -> Response:
        start, end = date_range(request)
        group_by = text(request, "group_by")
        group: GroupBy | None = next((g for g in GROUP_BY if g == group_by), None)
        if group is None:
            message = f"group_by must be one of {', '.join(GROUP_BY)}"
            return error(400, codes.ERR_BAD_QUERY, parameter="group_by", message=message)
        today = datetime.fromtimestamp(self._clock.now_us() / 1e6, tz=UTC).date()
        today_from = "hot" if group in HOT_GROUPS else "lake"
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(None, self._report, group, start, end, today)
        except (ConvtrackError, duckdb.Error, OSError) as exc:
            log.warning("report_failed", extra={"error": str(exc)})
            message = "the lake cannot be read now"
            return error(503, codes.ERR_UNAVAILABLE, message=message, retry_after=5)
        body = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "group_by": group,
            "today_from": today_from,
            "rows": rows,
        }
        return json_response(200, body)

    def _report(self, group: GroupBy, start: date, end: date, today: date) -> list[ReportRow]:
        """Runs on a worker thread: DuckDB over the lake, and the hot counters if they serve."""
        if group not in HOT_GROUPS:
            return self._lake_rows(group, start, end)
        lake_end = min(end, today - timedelta(days=1))
        cold = self._lake_rows(group, start, lake_end) if start <= lake_end else []
        hot: list[ReportRow] = []
        day = max(start, today)
        while day <= end:
            if group in ("day", "campaign_id"):
                for stats in self._hot.campaign_totals(day.isoformat()):
                    key = day.isoformat() if group == "day" else str(stats.campaign_id)
                    hot.append(ReportRow(key, stats.conversions, dict(stats.value)))
            else:
                for key, stats in self._hot.breakdown(group, day.isoformat()):
                    hot.append(ReportRow(key, stats.conversions, dict(stats.value)))
            day += timedelta(days=1)
        return reports.merge(cold, hot)

    def _lake_rows(self, group: GroupBy, start: date, end: date) -> list[ReportRow]:
        # A connection per request: the lake's file list changes with every flush.
        con = connect(self._lake)
        try:
            return reports.conversions(con, group, start.isoformat(), end.isoformat())
        finally:
            con.close()
