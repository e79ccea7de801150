"""The admin view of rejected events: a page of them, newest first, by code.

The store is SQLite or Redis: the read runs in a worker thread so a slow answer
never stalls the event loop that serves ingestion.
"""

from __future__ import annotations

import asyncio

from convtrack.api.query import INT64_MAX, IntParam, integer, optional_integer, text
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, json_response
from convtrack.store.rejects.base import RejectStore

LIMIT = IntParam("limit", 1, 1000)
CURSOR = IntParam("cursor", 1, INT64_MAX)


class RejectsApi:
    def __init__(self, store: RejectStore) -> None:
        self._store = store

    async def list(self, request: Request, key: ApiKey, route: str) -> Response:
        code = text(request, "code") or None
        limit = integer(request, LIMIT, 100)
        cursor = optional_integer(request, CURSOR)
        page = await asyncio.to_thread(self._store.page, code=code, limit=limit, before_id=cursor)
        return json_response(200, page)
