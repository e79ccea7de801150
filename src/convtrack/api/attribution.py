"""GET /v1/reports/attribution: credit per campaign under an attribution model, from the lake.

The models and their definitions are in ``store.cold.attribution``. Only the
lake is read (journeys need every touch, which the hot counters do not
keep), so today counts up to the lake's last flush.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Final

import duckdb

from convtrack.api.query import IntParam, integer, text
from convtrack.api.reports import date_range
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, error, json_response
from convtrack.errors import ConvtrackError
from convtrack.model import codes
from convtrack.store.cold.attribution import (
    DEFAULT_LOOKBACK_DAYS,
    MODELS,
    AttributionRow,
    Model,
    attribute,
    count_conversions,
)
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.query import connect

log = logging.getLogger("convtrack.http")

MAX_LOOKBACK_DAYS: Final = 365
LOOKBACK_DAYS = IntParam("lookback_days", 1, MAX_LOOKBACK_DAYS)


class AttributionApi:
    def __init__(self, *, lake: ColdStore) -> None:
        self._lake = lake

    async def attribution(self, request: Request, key: ApiKey, route: str) -> Response:
        chosen = text(request, "model")
        model: Model | None = next((m for m in MODELS if m == chosen), None)
        if model is None:
            message = f"model must be one of {', '.join(MODELS)}"
            return error(400, codes.ERR_BAD_QUERY, parameter="model", message=message)
        start, end = date_range(request)
        lookback = integer(request, LOOKBACK_DAYS, DEFAULT_LOOKBACK_DAYS)
        loop = asyncio.get_running_loop()
        try:
            total, rows = await loop.run_in_executor(
                None, self._report, model, start, end, lookback
            )
        except (ConvtrackError, duckdb.Error, OSError) as exc:
            log.warning("attribution_failed", extra={"error": str(exc)})
            message = "the lake cannot be read now"
            return error(503, codes.ERR_UNAVAILABLE, message=message, retry_after=5)
        body = {
            "model": model,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "lookback_days": lookback,
            "conversions": total,
            "rows": rows,
        }
        return json_response(200, body)

    def _report(
        self, model: Model, start: date, end: date, lookback_days: int
    ) -> tuple[int, list[AttributionRow]]:
        """Runs on a worker thread; a connection per request (the file list changes)."""
        con = connect(self._lake)
        try:
            total = count_conversions(con, start, end)
            return total, attribute(con, model, start, end, lookback_days)
        finally:
            con.close()
