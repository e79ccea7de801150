"""The quarantine in Redis, beside the hot store: one quarantine for every process.

Used when ``hot.kind = "redis"``: every processor, lake writer and deliver
process, every collector (``GET /v1/quarantine``) and ``convtrack quarantine``
on any machine see the same rows. Each operation is one call of one Lua script
(``redis_quarantine.lua``, which also draws the key layout), so adding is
idempotent per position and a claim is atomic. The keys live under
``<hot.redis_prefix>:q:``; none has a TTL (a row stays until it is replayed).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from convtrack.store.hot.redis_client import RedisClient
from convtrack.store.quarantine.base import (
    CLAIM_LEASE_SECS,
    Quarantined,
    QuarantineRow,
    QuarantineStore,
    with_note,
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Quarantined)


def _queue(event: Quarantined) -> str:
    return f"{event.stage}\x00{event.scope}"


def _noted(event: Quarantined, note: bytes | str) -> Quarantined:
    text = note.decode() if isinstance(note, bytes) else note
    return msgspec.structs.replace(event, error=with_note(event.error, text)) if text else event


def _position(event: Quarantined) -> str:
    return f"{_queue(event)}\x00{event.log}\x00{event.partition}\x00{event.offset}"


class RedisQuarantineStore(QuarantineStore):
    def __init__(self, url: str, *, prefix: str) -> None:
        self._redis = RedisClient(url, "quarantine")
        self._base = f"{prefix}:q:"
        self._script = self._redis.script(__package__ or "", "redis_quarantine.lua")

    def _call(self, op: str, *args: Any) -> Any:
        with self._redis.translate(op):
            return self._script(keys=[], args=[op, self._base, *args])

    def add(self, events: Sequence[Quarantined]) -> int:
        if not events:
            return 0
        args: list[Any] = []
        for e in events:
            args += [_position(e), e.stage, _queue(e), _encoder.encode(e)]
        return int(self._call("add", *args))

    def total(self, stage: str | None = None) -> int:
        return int(self._call("read", stage or "", 0, 0)[0])

    def items(
        self, stage: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[QuarantineRow]:
        flat = self._call("read", stage or "", after_id, limit)[1:]
        return [
            QuarantineRow(id=int(flat[i]), event=_noted(_decoder.decode(flat[i + 1]), flat[i + 4]),
                          attempts=int(flat[i + 2]), replay=int(flat[i + 3]) == 1)
            for i in range(0, len(flat), 5)
        ]  # fmt: skip

    def mark_replay(self, stage: str | None = None) -> int:
        return int(self._call("mark", stage or ""))

    def claim(
        self,
        stages: Collection[str],
        scope: str,
        limit: int,
        now_us: int,
        lease_secs: float = CLAIM_LEASE_SECS,
    ) -> list[QuarantineRow]:
        if not stages:
            return []
        queues = [f"{stage}\x00{scope}" for stage in stages]
        flat = self._call("claim", now_us, now_us + int(lease_secs * 1e6), limit, *queues)
        return [
            QuarantineRow(id=int(flat[i]), event=_decoder.decode(flat[i + 1]),
                          attempts=int(flat[i + 2]), replay=True)
            for i in range(0, len(flat), 3)
        ]  # fmt: skip

    def remove(self, ids: Sequence[int]) -> None:
        if ids:
            self._call("remove", *ids)

    def settle_claims(self, ids: Sequence[int], note: str) -> list[int]:
        if not ids:
            return []
        return [int(i) for i in self._call("settle", note, *ids)]

    def give_back(self, ids: Sequence[int]) -> None:
        if ids:
            self._call("giveback", *ids)

    def failed_again(self, row_id: int, error: str, now_us: int) -> None:
        rows = {r.id: r for r in self._claimed_row(row_id)}
        row = rows.get(row_id)
        if row is None:
            return
        updated = msgspec.structs.replace(row.event, error=error, at_us=now_us)
        self._call("again", row_id, _encoder.encode(updated))

    def _claimed_row(self, row_id: int) -> list[QuarantineRow]:
        return self.items(None, 1, row_id - 1)

    def close(self) -> None:
        self._redis.close()
