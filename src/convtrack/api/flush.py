"""``POST /v1/admin/flush`` (admin): write what the lake's writer holds now, not at its next flush.

The lake is flushed every ``cold.flush_interval_secs`` (5 minutes by
default), so right after the first events ``convtrack query`` answers
nothing. This asks the process's cold store to read its sources to their
end and flush, after the processor has taken the events accepted before the
request (up to a few seconds), and answers what was written and what the
lake holds. The work is done by the runtime (``runtime/flush.py``); a process
without the store role answers 409, a cold store that is not running or a
lake that fails 503, each with a stable code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, error, json_response
from convtrack.model import codes


class FlushRefused(Exception):
    """Why a flush cannot be done here now: an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# Blocking: runs in a worker thread; returns the answer's body or raises FlushRefused.
FlushNow = Callable[[], dict[str, Any]]


class FlushApi:
    def __init__(self) -> None:
        self.flush_now: FlushNow | None = None  # set by the runtime when it runs the store role

    async def flush(self, request: Request, key: ApiKey, route: str) -> Response:
        flush_now = self.flush_now
        if flush_now is None:
            return error(
                409, codes.ERR_NO_STORE_ROLE,
                message="this process does not run the store role, which writes the lake:"
                " flush the server that runs it (its lake is flushed every"
                " cold.flush_interval_secs and at stop)",
            )  # fmt: skip
        try:
            body = await asyncio.to_thread(flush_now)
        except FlushRefused as exc:
            extra = {"retry_after": 2} if exc.status == 503 else {}
            return error(exc.status, exc.code, message=exc.message, **extra)
        return json_response(200, body)
