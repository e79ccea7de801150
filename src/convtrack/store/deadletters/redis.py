"""Dead letters and in-flight markers in Redis: the home when ``hot.kind = "redis"``.

Every deliver process, collector and ``convtrack dlq`` command sharing the
Redis sees the same rows, so a process that takes a partition over from a
crashed one on another machine finds its in-flight markers. Each change is
one Lua script (atomic): adding with the cap, claiming a replay batch (two
runners of one destination never both get a row), updating rows by id, the
in-flight markers. Semantics: store/deadletters/base.py; key layout:
store/hot/keys.py. Like the hot store, a single Redis (no Cluster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import decode_payload, encode_payload
from convtrack.store.deadletters.base import (
    REPLAY_LEASE_SECS,
    DeadLetter,
    DeadLetterStore,
    Failure,
)
from convtrack.store.hot.keys import RedisKeys
from convtrack.store.hot.redis_client import RedisClient

_marker_encoder = msgspec.msgpack.Encoder()
_marker_decoder = msgspec.msgpack.Decoder(tuple[str, str])  # event id, payload (JSON)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def _forwarded(event_id: bytes, partition: bytes, offset: bytes, payload: bytes) -> Forwarded:
    return Forwarded(
        event_id=event_id.decode(), source_partition=int(partition), source_offset=int(offset),
        payload=decode_payload(payload),
    )  # fmt: skip


def _dead_letter(identifier: bytes, destination: str, queued: bool, v: list[Any]) -> DeadLetter:
    """From the fields e, p, o, y, s, a, n, f, l of a row (the scripts' order)."""
    return DeadLetter(
        id=int(identifier), destination=destination, event=_forwarded(v[0], v[1], v[2], v[3]),
        last_status=int(v[4]) if v[4] else None, last_answer=_text(v[5]), attempts=int(v[6]),
        first_attempt_at_us=int(v[7]), last_attempt_at_us=int(v[8]), replay=queued,
    )  # fmt: skip


class RedisDeadLetterStore(DeadLetterStore):
    def __init__(self, url: str, *, prefix: str) -> None:
        self._redis = RedisClient(url, "dead letters")
        self._keys = RedisKeys(prefix).dead_letters()
        package = __package__ or "convtrack.store.deadletters"
        self._add = self._redis.script(package, "redis_add.lua")
        self._update = self._redis.script(package, "redis_update.lua")
        self._queue = self._redis.script(package, "redis_queue.lua")
        self._read = self._redis.script(package, "redis_read.lua")
        self._in_flight = self._redis.script(package, "redis_inflight.lua")

    def _bases(self) -> list[str]:
        k = self._keys
        return [k.row_base, k.rows_of_base, k.queued_base, k.claimed_base]

    def add_rows(
        self,
        destination: str,
        rows: Sequence[tuple[Forwarded, Failure]],
        *,
        cap: int | None = None,
        in_flight: bool = False,
    ) -> int:
        if not rows:
            return 0
        k = self._keys
        args: list[Any] = [
            k.seq, k.destinations, k.row_base, k.rows_of(destination), k.queued(destination),
            k.in_flight(destination), k.in_flight_state(destination), destination,
            "" if cap is None else cap, "1" if in_flight else "0",
        ]  # fmt: skip
        for event, failure in rows:
            args += [
                event.event_id, event.source_partition, event.source_offset,
                encode_payload(event.payload),
                "" if failure.last_status is None else failure.last_status,
                failure.last_answer, failure.attempts, failure.first_attempt_at_us,
                failure.last_attempt_at_us,
            ]  # fmt: skip
        with self._redis.translate("add"):
            return int(self._add(keys=[], args=args))

    def _snapshot(self, destination: str | None, limit: int) -> list[Any]:
        k = self._keys
        args = [k.destinations, k.row_base, k.rows_of_base, k.queued_base, destination or "", limit]
        with self._redis.translate("read"):
            return list(self._read(keys=[], args=args))

    def total(self, destination: str | None = None) -> int:
        return int(self._snapshot(destination, 0)[0])

    def items(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        rows = self._snapshot(destination, limit)[1:]
        return [_dead_letter(r[0], r[1].decode(), r[2] == 1, r[3:]) for r in rows]

    def _queue_op(self, op: str, destination: str | None, *extra: Any) -> Any:
        k = self._keys
        args = [op, k.destinations, k.row_base, k.rows_of_base, k.queued_base, destination or ""]
        args.append(k.claimed_base)
        with self._redis.translate(op):
            return self._queue(keys=[], args=[*args, *extra])

    def mark_replay(self, destination: str | None = None) -> int:
        return int(self._queue_op("mark", destination))

    def replay_batch(
        self, destination: str, limit: int, now_us: int, lease_secs: float = REPLAY_LEASE_SECS
    ) -> list[DeadLetter]:
        until_us = now_us + int(lease_secs * 1_000_000)
        rows = self._queue_op("claim", destination, limit, now_us, until_us)
        return [_dead_letter(r[0], destination, True, r[1:]) for r in rows]

    def purge(self, destination: str | None = None) -> int:
        return int(self._queue_op("purge", destination))

    def _change(self, op: str, op_args: Sequence[Any], targets: Sequence[Any]) -> None:
        if not targets:
            return
        with self._redis.translate(op):
            self._update(keys=[], args=[op, *self._bases(), len(op_args), *op_args, *targets])

    def remove(self, ids: Sequence[int]) -> None:
        self._change("remove", [], ids)

    def failed_again(self, ids: Sequence[int], failure: Failure) -> None:
        status = "" if failure.last_status is None else failure.last_status
        op_args = [status, failure.last_answer, failure.attempts, failure.last_attempt_at_us]
        self._change("failed", op_args, ids)

    def claim(self, ids: Sequence[int], note: str) -> None:
        self._change("claim", [note], ids)

    def unclaim(self, rows: Sequence[DeadLetter]) -> None:
        self._change("unclaim", [], [v for row in rows for v in (row.id, row.last_answer)])

    # -- in-flight markers ----------------------------------------------------------

    def mark_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        if not events:
            return
        markers: dict[str, bytes] = {}
        for e in events:
            payload = encode_payload(e.payload)
            markers[f"{e.source_partition}:{e.source_offset}"] = _marker_encoder.encode(
                (e.event_id, payload)
            )
        k = self._keys
        with self._redis.translate("mark in flight"):
            pipe = self._redis.client.pipeline(transaction=True)
            pipe.hset(k.in_flight(destination), mapping=markers)  # type: ignore[arg-type]
            pipe.hset(k.in_flight_state(destination), mapping=dict.fromkeys(markers, 0))
            pipe.execute()

    def in_flight(self, destination: str) -> list[tuple[Forwarded, bool]]:
        k = self._keys
        with self._redis.translate("read in flight"):
            pipe = self._redis.client.pipeline(transaction=True)
            pipe.hgetall(k.in_flight(destination))
            pipe.hgetall(k.in_flight_state(destination))
            markers, states = pipe.execute()
        found: list[tuple[int, int, Forwarded, bool]] = []
        for position, raw in markers.items():
            partition, offset = (int(x) for x in position.split(b":"))
            event_id, payload = _marker_decoder.decode(raw)
            event = Forwarded(event_id=event_id, source_partition=partition,
                              source_offset=offset, payload=decode_payload(payload))  # fmt: skip
            found.append((partition, offset, event, int(states.get(position, 0)) != 0))
        found.sort(key=lambda m: (m[0], m[1]))
        return [(event, resolved) for _, _, event, resolved in found]

    def _markers(self, op: str, destination: str, args: Sequence[Any]) -> None:
        k = self._keys
        keys = [k.in_flight(destination), k.in_flight_state(destination)]
        with self._redis.translate(f"{op} in flight"):
            self._in_flight(keys=[], args=[op, *keys, *args])

    def settle_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        if events:
            positions = [f"{e.source_partition}:{e.source_offset}" for e in events]
            self._markers("settle", destination, positions)

    def clear_in_flight(self, destination: str, committed: Mapping[int, int]) -> None:
        if committed:
            pairs = [v for partition, offset in committed.items() for v in (partition, offset)]
            self._markers("clear", destination, pairs)

    def close(self) -> None:
        self._redis.close()
