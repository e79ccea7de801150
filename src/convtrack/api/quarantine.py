"""The admin view of the quarantine: list the events a stage failed on, queue a replay.

``GET /v1/quarantine?stage=&limit=&cursor=`` pages the rows oldest first;
``POST /v1/quarantine/replay`` with ``{}`` or ``{"stage": "hot_apply"}`` queues
them, and the stage that owns each row re-submits it once (see
store/quarantine/base.py). Store calls run in a worker thread (a slow disk or
Redis never stalls ingestion); a store that fails answers 503 (``StoreError``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from convtrack.api.query import IntParam, QueryInvalid, integer, text
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import Request, Response, error, json_response, read_json
from convtrack.model import codes
from convtrack.store.quarantine.base import MAX_CURSOR, QUARANTINE_STAGES, QuarantineStore

MAX_BODY_BYTES = 4096
STAGE_LIST = ", ".join(QUARANTINE_STAGES)


LIMIT = IntParam("limit", 1, 1000)
CURSOR = IntParam("cursor", 0, MAX_CURSOR)


class QuarantineApi:
    def __init__(self, store: QuarantineStore) -> None:
        self._store = store

    async def listing(self, request: Request, key: ApiKey, route: str) -> Response:
        stage = text(request, "stage")
        if stage is not None and stage not in QUARANTINE_STAGES:  # "stage=" too
            raise QueryInvalid("stage", f"stage must be one of {STAGE_LIST}")
        limit = integer(request, LIMIT, 100)
        cursor = integer(request, CURSOR, 0)
        total, rows = await asyncio.to_thread(self._read, stage, limit, cursor)
        next_cursor = rows[-1]["id"] if len(rows) == limit else None
        return json_response(200, {"total": total, "items": rows, "next_cursor": next_cursor})

    def _read(self, stage: str | None, limit: int, cursor: int) -> tuple[int, list[dict[str, Any]]]:
        items = [row.as_json() for row in self._store.items(stage, limit, cursor)]
        return self._store.total(stage), items

    async def replay(self, request: Request, key: ApiKey, route: str) -> Response:
        read = await read_json(request, MAX_BODY_BYTES)
        if isinstance(read, Response):
            return read
        body: Any = {} if read.code == codes.BODY_EMPTY else read.value
        stage = body.get("stage") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or set(body) - {"stage"}
            or (stage is not None and stage not in QUARANTINE_STAGES)
        ):
            return error(
                400, codes.ERR_VALIDATION,
                message=f'the body must be {{}} or {{"stage": STAGE}}, a stage of {STAGE_LIST}',
            )  # fmt: skip
        replayed = await asyncio.to_thread(self._store.mark_replay, stage)
        return json_response(200, {"replayed": replayed})
