"""Rejects in Redis, beside the hot store: one store for every collector and copier.

Each batch is one Lua script (``redis_add.lua``) that takes its ids from a
shared counter and writes the rows and their per-code indexes, then applies
``rejects.max_rows`` across all collectors: the oldest are dropped, and the
count is added to a shared counter and returned (this process counts what
its own writes dropped; ``dropped`` reads the shared total). Reads are
scripts too, so a page's total and items are one snapshot. Key layout:
store/hot/keys.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from convtrack.model.timeparse import format_us
from convtrack.store.hot.keys import RedisKeys
from convtrack.store.hot.redis_client import RedisClient
from convtrack.store.rejects.base import IngestReject, RejectPage, RejectStore, StoredReject
from convtrack.store.rejects.batcher import WriteBatcher
from convtrack.store.rejects.sqlite import truncated

# Rejects per script call: bounds how long one call holds Redis, and keeps its commands
# under Lua's unpack limit (8000 values: two per reject).
MAX_BATCH = 2_000
MAX_PENDING = 50_000
MAX_SINCE = 10_000  # rows per since() call; the copier asks again for more

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IngestReject)


class RedisRejectStore(RejectStore):
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        max_rows: int,
        max_body_bytes: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._redis = RedisClient(url, "rejects store")
        self._keys = RedisKeys(prefix).rejects()
        self._max_rows = max_rows
        self._max_body_bytes = max_body_bytes
        self._on_drop = on_drop
        self._add = self._redis.script(__package__, "redis_add.lua")
        self._page = self._redis.script(__package__, "redis_page.lua")
        self._since = self._redis.script(__package__, "redis_since.lua")
        self._writer: WriteBatcher[IngestReject] = WriteBatcher(
            "rejects", self._write, max_pending=MAX_PENDING, max_batch=MAX_BATCH
        )

    def _write(self, rejects: list[IngestReject]) -> None:
        # One request may bring more than a batch (the batcher never splits a caller's).
        for start in range(0, len(rejects), MAX_BATCH):
            self._write_batch(rejects[start : start + MAX_BATCH])

    def _write_batch(self, rejects: list[IngestReject]) -> None:
        k = self._keys
        args: list[Any] = [k.seq, k.ids, k.rows, k.codes, k.dropped, k.code_base, self._max_rows]
        for r in rejects:
            kept = msgspec.structs.replace(r, body=truncated(r.body, self._max_body_bytes))
            args += [_encoder.encode(kept), ",".join(dict.fromkeys(r.codes))]
        with self._redis.translate("add"):
            _first, gone = self._add(keys=[], args=args)
        if int(gone) > 0 and self._on_drop is not None:
            self._on_drop(int(gone))

    async def add(self, rejects: list[IngestReject]) -> None:
        if rejects:
            await self._writer.submit(rejects)

    def add_blocking(self, rejects: list[IngestReject]) -> None:
        """The same for a caller on a plain thread (tests, tools)."""
        if rejects:
            self._writer.submit_blocking(rejects)

    def page(self, *, code: str | None, limit: int, before_id: int | None) -> RejectPage:
        index = self._keys.ids if code is None else self._keys.code(code)
        highest = "+inf" if before_id is None else f"({before_id}"
        with self._redis.translate("page"):
            reply = self._page(keys=[], args=[index, self._keys.rows, highest, limit])
        items = _rows(reply[1:])
        next_cursor = items[-1].id if len(items) == limit else None
        return RejectPage(total=int(reply[0]), items=items, next_cursor=next_cursor)

    def since(self, after_id: int, limit: int) -> list[StoredReject]:
        k = self._keys
        with self._redis.translate("since"):
            reply = self._since(keys=[], args=[k.ids, k.rows, after_id, min(limit, MAX_SINCE)])
        return _rows(reply)

    @property
    def dropped(self) -> int:
        """Dropped by the cap, by every collector sharing this Redis, since it was created."""
        with self._redis.translate("read"):
            value = self._redis.client.get(self._keys.dropped)
        return int(value or 0)

    def close(self) -> None:
        self._writer.close()
        self._redis.close()


def _rows(flat: list[Any]) -> list[StoredReject]:
    out: list[StoredReject] = []
    for i in range(0, len(flat), 2):
        r = _decoder.decode(flat[i + 1])
        out.append(
            StoredReject(
                id=int(flat[i]),
                received_at=format_us(r.received_at_us),
                received_at_us=r.received_at_us,
                route=r.route,
                status=r.status,
                codes=r.codes,
                body=r.body,
                source=r.source,
                key_role=r.key_role,
                key_id=r.key_id,
                event_id=r.event_id,
                index=r.index,
            )
        )
    return out
