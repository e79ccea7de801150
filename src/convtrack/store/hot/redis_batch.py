"""One batch of hot-store effects, encoded for the apply script (pure, no I/O).

Python does the arithmetic Lua cannot do exactly (Lua numbers are doubles):
id hashes, slice numbers, packed dedup values and money amounts as decimal
strings. The script only looks up, compares and writes. The batch travels as
one msgpack document; Redis's cmsgpack reads no ``bin`` type, so binary
strings are sent as msgpack ``str`` holding the raw bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from convtrack.store.hot.base import Effect, SessionState, UserTouch
from convtrack.store.hot.keys import (
    FIELD_BYTES,
    GC_MARGIN_SECS,
    MAX_FANOUT,
    MIN_FANOUT,
    SEED_BYTES,
    TAG_MODULUS,
    TARGET_PER_BUCKET,
    RedisKeys,
)
from convtrack.store.hot.sqlite import ANOMALY_US, latency_bucket

# Amounts below this are summed inside the script (a batch of up to 2**16 of them
# stays exact in a double); larger ones are added one by one as decimal strings.
SMALL_VALUE_LIMIT = 2**37
_TAG_STRIDE = 2_654_435_761  # spreads partitions over the tag space
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


def id_hash(source: str, event_id: str) -> tuple[int, bytes]:
    """(bucket seed, field) of a dedup key: a 120-bit BLAKE2b of (source, event_id)."""
    raw = f"{len(source)}:{source}{event_id}".encode()
    digest = hashlib.blake2b(raw, digest_size=SEED_BYTES + FIELD_BYTES).digest()
    return int.from_bytes(digest[:SEED_BYTES], "big"), digest[SEED_BYTES:]


def position_tag(partition: int, offset: int) -> int:
    """32 bits that tell this log position from another copy's (for replay verdicts)."""
    return (offset + partition * _TAG_STRIDE) % TAG_MODULUS


class _Cells:
    """Counter cells (hash key, field suffix) numbered from 1, as Lua tables are."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, bytes], int] = {}

    def __call__(self, key: str, *parts: str) -> int:
        cell = (key, _encode(list(parts)))
        found = self.index.get(cell)
        if found is None:
            found = self.index[cell] = len(self.index) + 1
        return found

    def encoded(self) -> list[list[Any]]:
        return [[key, lua_bytes(suffix)] for key, suffix in self.index]


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
) -> bytes:
    window_us = window_secs * 1_000_000
    slice_us = slice_secs * 1_000_000
    minute = now_us // 60_000_000
    minute_key = keys.minute(minute)
    cells = _Cells()
    encoded = []
    for e in effects:
        seed, field = id_hash(e.source, e.event_id)
        at = e.received_at_us
        remembered_s = -(-at // 1_000_000)  # rounded up: the window is never shorter
        slice_no = at // slice_us
        tag = position_tag(e.partition, e.offset)
        stored = (remembered_s - slice_no * slice_secs) * TAG_MODULUS + tag
        currency = e.currency or ""
        conv_cells: list[int] = []
        value = e.value or 0
        if e.is_conversion:
            conv_cells.append(cells(keys.counters(e.event_date), e.campaign_id, currency))
            for dimension, dim_value in e.dimensions.items():
                dim_key = keys.dimension(dimension, e.event_date)
                conv_cells.append(cells(dim_key, dim_value, e.campaign_id, currency))
        lag_us = max(0, now_us - at)
        encoded.append(
            [
                e.partition, e.offset, tag, slice_no, (at - window_us) // slice_us, seed,
                lua_bytes(field), str(stored), at, remembered_s * 1_000_000,
                e.token_id or "",
                e.token_expires_at_us or at + window_us,
                cells(minute_key, e.campaign_id, currency), conv_cells,
                str(value), value if abs(value) < SMALL_VALUE_LIMIT else False,
                latency_bucket(lag_us), lag_us > ANOMALY_US,
            ]
        )  # fmt: skip
    margin_ms = GC_MARGIN_SECS * 1000
    writes = [
        [keys.session(s.key), lua_bytes(_encode(s)), _ttl_ms(s.expires_at_us, now_us) + margin_ms]
        for s in sessions
    ] + [
        [keys.touch(t.key), lua_bytes(_encode(t)), _ttl_ms(t.expires_at_us, now_us) + margin_ms]
        for t in touches
    ]
    minute_ttl_s = (minute + 1 + minute_retention) * 60 - now_us // 1_000_000
    return _encode(
        {
            "now_us": now_us,
            "window_us": window_us,
            "slice_us": slice_us,
            "margin_s": GC_MARGIN_SECS,
            "min_fanout": MIN_FANOUT,
            "max_fanout": MAX_FANOUT,
            "target": TARGET_PER_BUCKET,
            "pos": keys.positions(group),
            "d": keys.dedup_base,
            "dm": keys.slice_meta_base,
            "dx": keys.slice_index,
            "t": keys.token_base,
            "tc": keys.token_count_base,
            "tx": keys.token_index,
            "tot": keys.totals,
            "lat": keys.latency(minute),
            "minute_keys": [minute_key, keys.latency(minute)],
            "minute_ttl_s": minute_ttl_s,
            "positions": [[p, o] for p, o in positions.items()],
            "cells": cells.encoded(),
            "effects": encoded,
            "writes": writes,
        }
    )


def _ttl_ms(expires_at_us: int, now_us: int) -> int:
    return max(1, (expires_at_us - now_us) // 1000)


def decode_cell(suffix: bytes) -> list[str]:
    """The parts of a counter field after its one-letter kind."""
    return msgspec.msgpack.decode(suffix, type=list[str])
