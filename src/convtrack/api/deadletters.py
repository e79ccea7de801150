"""The admin view of dead letters: list them, and queue them for replay.

The store is SQLite or Redis (with the hot store, shared by every deliver
process): its calls run in a worker thread so a slow disk, a slow network or a
runner's write never stalls the event loop that serves ingestion. A store that
fails answers 503 (the app maps ``StoreError``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from convtrack.api.query import IntParam, integer, text
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import (
    Request,
    Response,
    error,
    json_response,
    read_json,
)
from convtrack.model import codes
from convtrack.store.deadletters.base import DeadLetterStore

MAX_BODY_BYTES = 4096
LIMIT = IntParam("limit", 1, 1000)
_NAME = re.compile(r"[a-z0-9_-]+")


class DeadLettersApi:
    def __init__(self, store: DeadLetterStore, destinations: Sequence[str]) -> None:
        self._store = store
        self._destinations = frozenset(destinations)

    async def list(self, request: Request, key: ApiKey, route: str) -> Response:
        destination = text(request, "destination")
        if destination is not None and _NAME.fullmatch(destination) is None:
            message = "destination must be a destination name (a-z, 0-9, _ and -)"
            return error(400, codes.ERR_BAD_QUERY, parameter="destination", message=message)
        limit = integer(request, LIMIT, 100)
        if destination is not None and destination not in self._destinations:
            return error(404, codes.ERR_NOT_FOUND)
        total, rows = await asyncio.to_thread(_read, self._store, destination, limit)
        return json_response(200, {"total": total, "items": rows})

    async def replay(self, request: Request, key: ApiKey, route: str) -> Response:
        read = await read_json(request, MAX_BODY_BYTES)
        if isinstance(read, Response):
            return read
        body: Any = read.value
        destination = body.get("destination") if isinstance(body, dict) else None
        if not isinstance(destination, str) or not destination:
            return error(
                400, codes.ERR_VALIDATION, message='the body must be {"destination": "NAME"}'
            )
        if destination not in self._destinations:
            return error(404, codes.ERR_NOT_FOUND)
        replayed = await asyncio.to_thread(self._store.mark_replay, destination)
        return json_response(200, {"replayed": replayed})


def _read(
    store: DeadLetterStore, destination: str | None, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    items = [row.as_json() for row in store.items(destination, limit)]
    return store.total(destination), items
