"""Hot reads: conversion counters and the live view, straight from the hot store."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from convtrack.api.query import IntParam, integer, text
from convtrack.clock import Clock
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, error, json_response
from convtrack.log.base import LogLag
from convtrack.model import codes
from convtrack.store.hot.base import DIMENSIONS, HotStore

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MINUTES = IntParam("minutes", 1, 1440)


def _valid_date(text: str) -> bool:
    if _DATE.fullmatch(text) is None:
        return False
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return True


class StatsApi:
    def __init__(
        self,
        *,
        hot: HotStore,
        clock: Clock,
        lag: Callable[[], LogLag],
        live_window_minutes: int,
        latency_window_minutes: int,
        dead_letters: Callable[[], int] | None = None,
    ) -> None:
        self._hot = hot
        self._clock = clock
        self._lag = lag
        self._live_window = live_window_minutes
        self._latency_window = latency_window_minutes
        self._dead_letters = dead_letters

    async def conversions(self, request: Request, key: ApiKey, route: str) -> Response:
        campaign_id = text(request, "campaign_id") or None
        date = text(request, "date")
        if date is None:
            date = datetime.fromtimestamp(self._clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")
        elif not _valid_date(date):
            message = "date must be YYYY-MM-DD"
            return error(400, codes.ERR_BAD_QUERY, parameter="date", message=message)
        group_by = text(request, "group_by")
        if group_by is not None:
            if group_by not in DIMENSIONS:
                allowed = ", ".join(DIMENSIONS)
                message = f"group_by must be one of {allowed}"
                return error(400, codes.ERR_BAD_QUERY, parameter="group_by", message=message)
            rows = [
                {"key": key, "conversions": s.conversions, "value": s.value}
                for key, s in self._hot.breakdown(group_by, date)
            ]
            return json_response(200, {"date": date, "group_by": group_by, "rows": rows})
        body = msgspec.to_builtins(self._hot.conversions(campaign_id, date))
        # Why events of that campaign and day are not in `conversions`: a 0 explained.
        body["excluded"] = self._hot.excluded(campaign_id, date)
        return json_response(200, body)

    async def live(self, request: Request, key: ApiKey, route: str) -> Response:
        window = integer(request, MINUTES, self._live_window)
        stats = self._hot.live(self._clock.now_us(), window, self._latency_window)
        lag = self._lag()
        body = msgspec.to_builtins(stats)
        body["latency_window_minutes"] = self._latency_window
        body["lag"] = {"events": lag.events, "seconds": round(lag.seconds, 3)}
        body["dead_letters"] = self._dead_letters() if self._dead_letters is not None else 0
        today = datetime.fromtimestamp(self._clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")
        body["today_by"] = {
            dimension: [
                {"key": key, "conversions": s.conversions, "value": s.value}
                for key, s in sorted(
                    self._hot.breakdown(dimension, today), key=lambda kv: -kv[1].conversions
                )[:20]
            ]
            for dimension in DIMENSIONS
        }
        return json_response(200, body)
