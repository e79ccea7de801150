"""One batch of hot-store effects, encoded for the apply script (pure, no I/O).

Four script arguments: a small msgpack header (settings, key names, the
batch's distinct counter cells, positions, tokens, big amounts), the effects
as fixed-size binary records (``RECORD``: Lua's ``struct.unpack`` reads one in
a single call, several times faster than msgpack), and the session and touch
writes as length-prefixed records, and each effect's recorded blob
(length-prefixed, empty for none). Python does what Lua cannot do exactly or
cheaply (the id hash, money amounts above 2**37 as decimal strings); the
script derives slices, tags and deadlines from the times, in doubles that
stay exact below 2**53. Redis's cmsgpack reads no ``bin`` type, so binary
strings in the header are msgpack ``str`` holding the raw bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from convtrack.store.hot.base import Effect, SessionState, UserTouch
from convtrack.store.hot.keys import (
    BACKLOG_MARGIN_SECS,
    FIELD_BYTES,
    GC_MARGIN_SECS,
    MAX_FANOUT,
    MIN_FANOUT,
    SEED_BYTES,
    TARGET_PER_BUCKET,
    RedisKeys,
)
from convtrack.store.hot.livestats import ANOMALY_US, latency_bucket

# Amounts below this are summed inside the script (a batch of up to 2**16 of them
# stays exact in a double); larger ones are added one by one as decimal strings.
SMALL_VALUE_LIMIT = 2**37
# partition, offset, received_at_us, cell group, latency bucket, small value,
# big value (index, 0: none), token (index, 0: none), id hash; Lua: '>I4ddI4BdI4I4c15'
RECORD = struct.Struct(">IddIBdII15s")
_WRITE_HEAD = struct.Struct(">I")
_WRITE_TTL = struct.Struct(">d")
_encode = msgspec.msgpack.Encoder().encode


def lua_bytes(data: bytes) -> msgspec.Raw:
    """``data`` as a msgpack str (raw bytes), which the script's cmsgpack can read."""
    size = len(data)
    if size < 32:
        head = bytes([0xA0 | size])
    elif size < 2**8:
        head = b"\xd9" + bytes([size])
    elif size < 2**16:
        head = b"\xda" + struct.pack(">H", size)
    else:
        head = b"\xdb" + struct.pack(">I", size)
    return msgspec.Raw(head + data)


def id_digest(source: str, event_id: str) -> bytes:
    """The dedup key's hash: BLAKE2b-120 of (source, event_id).

    Its first SEED_BYTES choose the bucket, the other FIELD_BYTES are the field.
    """
    raw = f"{len(source)}:{source}{event_id}".encode()
    return hashlib.blake2b(raw, digest_size=SEED_BYTES + FIELD_BYTES).digest()


class _Groups:
    """The counter cells an effect increments, numbered from 1 as Lua tables are.

    A group is [minute cell, then for a conversion its day cell and dimension
    cells]; a cell is [hash key, field suffix]. Effects of one campaign, day,
    currency and dimensions share a group, so the header stays small.
    ``excluded`` holds, per group, its excluded-event counters: [hash key,
    duplicate field, field of its own reason or ""] (see keys.py, ``ex:``).
    """

    def __init__(self, keys: RedisKeys, minute_key: str) -> None:
        self._keys = keys
        self._minute_key = minute_key
        self.index: dict[tuple[Any, ...], int] = {}
        self.groups: list[list[list[Any]]] = []
        self.excluded: list[list[Any]] = []
        self._suffixes: dict[tuple[str, ...], msgspec.Raw] = {}

    def _cell(self, key: str, *parts: str) -> list[Any]:
        suffix = self._suffixes.get(parts)
        if suffix is None:
            suffix = self._suffixes[parts] = lua_bytes(_encode(list(parts)))
        return [key, suffix]

    def __call__(self, e: Effect) -> int:
        currency = e.currency or ""
        identity = (
            e.campaign_id,
            currency,
            e.is_conversion,
            e.event_date,
            e.excluded,
            *e.dimensions.items(),
        )
        found = self.index.get(identity)
        if found is not None:
            return found
        cells = [self._cell(self._minute_key, e.campaign_id, currency)]
        if e.is_conversion:
            cells.append(self._cell(self._keys.counters(e.event_date), e.campaign_id, currency))
            for dimension, dim_value in e.dimensions.items():
                key = self._keys.dimension(dimension, e.event_date)
                cells.append(self._cell(key, dim_value, e.campaign_id, currency))
        self.groups.append(cells)
        self.excluded.append(self._excluded_cells(e))
        found = self.index[identity] = len(self.groups)
        return found

    def _excluded_cells(self, e: Effect) -> list[Any]:
        key = self._keys.excluded(e.event_date)
        own = lua_bytes(_encode([e.excluded, e.campaign_id])) if e.excluded else ""
        return [key, lua_bytes(_encode(["duplicate", e.campaign_id])), own]


def encode_batch(
    keys: RedisKeys,
    *,
    group: str,
    effects: Sequence[Effect],
    positions: Mapping[int, int],
    now_us: int,
    sessions: Sequence[SessionState],
    touches: Sequence[UserTouch],
    window_secs: int,
    slice_secs: int,
    minute_retention: int,
) -> list[bytes]:
    """The script's four arguments: header, effect records, writes, recorded blobs."""
    window_us = window_secs * 1_000_000
    minute = now_us // 60_000_000
    minute_key = keys.minute(minute)
    groups = _Groups(keys, minute_key)
    bigs: list[str] = []
    tokens: list[list[Any]] = []
    records = bytearray()
    pack = RECORD.pack
    for e in effects:
        value = e.value or 0
        small = abs(value) < SMALL_VALUE_LIMIT
        if not small:
            bigs.append(str(value))
        if e.token_id is not None:
            tokens.append([e.token_id, e.token_expires_at_us or e.received_at_us + window_us])
        records += pack(
            e.partition, float(e.offset), float(e.received_at_us), groups(e),
            latency_bucket(max(0, now_us - e.received_at_us)),
            float(value) if small else 0.0, 0 if small else len(bigs),
            0 if e.token_id is None else len(tokens), id_digest(e.source, e.event_id),
        )  # fmt: skip
    # The data's time: TTLs count from it, so entries of a backlog last as long (in
    # Redis's clock) as the data still needs them (keys.py, BACKLOG_MARGIN_SECS).
    data_now_us = min(now_us, max((e.received_at_us for e in effects), default=now_us))
    header = {
        "n": len(effects),
        "now_us": now_us,
        "data_now_us": data_now_us,
        "window_us": window_us,
        "slice_us": slice_secs * 1_000_000,
        "anomaly_us": ANOMALY_US,
        "margin_s": BACKLOG_MARGIN_SECS,
        "min_fanout": MIN_FANOUT,
        "max_fanout": MAX_FANOUT,
        "target": TARGET_PER_BUCKET,
        "pos": keys.positions(group),
        "rec": keys.recorded_base(group),
        "d": keys.dedup_base,
        "dm": keys.slice_meta_base,
        "dx": keys.slice_index,
        "t": keys.token_base,
        "tc": keys.token_count_base,
        "tx": keys.token_index,
        "tot": keys.totals,
        "lat": keys.latency(minute),
        "minute_keys": [minute_key, keys.latency(minute)],
        "minute_ttl_s": (minute + 1 + minute_retention) * 60 - now_us // 1_000_000,
        "positions": [[p, o] for p, o in positions.items()],
        "groups": groups.groups,
        "excluded": groups.excluded,
        "bigs": bigs,
        "tokens": tokens,
    }
    blobs = b"".join(_WRITE_HEAD.pack(len(e.recorded)) + e.recorded for e in effects)
    return [
        _encode(header),
        bytes(records),
        _writes(keys, sessions, touches, data_now_us),
        blobs,
    ]


def _writes(
    keys: RedisKeys,
    sessions: Sequence[SessionState],
    touches: Sequence[UserTouch],
    data_now_us: int,
) -> bytes:
    """Sessions and touches as (key, payload, TTL ms) records: Lua '>I4c0I4c0d'.

    Their TTL counts from the data's time, with the short margin: they are many,
    and a lost one only changes the enrichment of a later event, never a count."""
    out = bytearray()
    margin_ms = GC_MARGIN_SECS * 1000
    items: list[tuple[str, SessionState | UserTouch, int]]
    items = [(keys.session(s.key), s, s.expires_at_us) for s in sessions]
    items += [(keys.touch(t.key), t, t.expires_at_us) for t in touches]
    for key, item, expires_at_us in items:
        name, payload = key.encode(), _encode(item)
        ttl_ms = max(1, (expires_at_us - data_now_us) // 1000) + margin_ms
        out += _WRITE_HEAD.pack(len(name)) + name + _WRITE_HEAD.pack(len(payload)) + payload
        out += _WRITE_TTL.pack(float(ttl_ms))
    return bytes(out)


def decode_cell(suffix: bytes) -> list[str]:
    """The parts of a counter field after its one-letter kind."""
    return msgspec.msgpack.decode(suffix, type=list[str])
