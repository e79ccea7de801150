"""Every Redis key and TTL of the hot store, in one place.

All keys start with ``<prefix>:`` (``hot.redis_prefix``, default ``ct``), so
several deployments (or tests) can share one Redis database. The layout:

- ``pos:<group>`` hash: partition -> next offset applied by the group. No TTL.
- ``d:<slice>:<bucket>`` hash: dedup entries, 12-byte id hash -> receive second
  within the slice and position tag. TTL: slice end + window + margin.
- ``dm:<slice>`` hash: a slice's first and current fanout ``f0``/``f``, entries
  ``n``, expiry progress (``gone``, ``next``). TTL: as its buckets.
  ``dx`` sorted set: the live slices.
- ``t:<token_id>`` string: a conversion token's expiry (µs). TTL: that + margin.
  ``tc:<slice>`` string / ``tx`` sorted set: tokens counted by their expiry slice.
- ``c:<date>`` hash: conversions ``n`` and value ``v`` per campaign x currency;
  ``x:<dimension>:<date>`` the same per dimension value. No TTL (as in SQLite).
- ``m:<minute>`` / ``l:<minute>`` hash: per-minute events, conversions,
  duplicates and value; latency histogram. TTL: ``minute_retention`` minutes.
- ``tot`` hash: all-time duplicates and latency anomalies. No TTL.
- ``s:<key>`` / ``u:<key>`` string: a session / a user's last touch (msgpack).
  TTL: their expiry + margin.
- ``wm`` string: the highest expiry watermark given to ``expire`` (µs).

Dedup entries live in time slices of a quarter window (by receive time) so
that a whole slice expires at once and one entry costs a hash field instead
of a key; see docs/operations.md, "Redis hot store".
"""

from __future__ import annotations

from typing import Final

# A slice is a quarter of the dedup window: a lookup checks at most 5 slices, and an
# entry outlives its window by at most a quarter window before its slice is dropped.
SLICES_PER_WINDOW: Final = 4
# Buckets (hashes) per slice: a power of two, sized from the busiest slice when a
# slice starts and doubled whenever it holds TARGET_PER_BUCKET entries per bucket,
# so buckets stay in Redis's compact listpack encoding (<= 128 entries). Entries
# stay where they were written: a lookup checks one bucket per fanout the slice had.
MIN_FANOUT: Final = 2**7
MAX_FANOUT: Final = 2**22
TARGET_PER_BUCKET: Final = 32
# The id hash: SEED_BYTES choose the bucket, FIELD_BYTES are the field (96 bits).
SEED_BYTES: Final = 3
FIELD_BYTES: Final = 12
# A dedup value packs the receive second within its slice above a 32-bit position tag.
TAG_MODULUS: Final = 2**32
# Expiry is decided by the times the store is given (exact); TTLs only collect
# garbage, so they are set this much later than the data's end.
GC_MARGIN_SECS: Final = 3600


def slice_secs(dedup_window_secs: int) -> int:
    return max(1, dedup_window_secs // SLICES_PER_WINDOW)


class RedisKeys:
    """The key names under one prefix; bases ending in ``:`` are completed in Lua."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        p = prefix + ":"
        self.dedup_base = p + "d:"
        self.slice_meta_base = p + "dm:"
        self.slice_index = p + "dx"
        self.token_base = p + "t:"
        self.token_count_base = p + "tc:"
        self.token_index = p + "tx"
        self.totals = p + "tot"
        self.watermark = p + "wm"
        self._p = p

    def positions(self, group: str) -> str:
        return f"{self._p}pos:{group}"

    def counters(self, date: str) -> str:
        return f"{self._p}c:{date}"

    def dimension(self, dimension: str, date: str) -> str:
        return f"{self._p}x:{dimension}:{date}"

    def minute(self, minute: int) -> str:
        return f"{self._p}m:{minute}"

    def latency(self, minute: int) -> str:
        return f"{self._p}l:{minute}"

    def session(self, key: str) -> str:
        return f"{self._p}s:{key}"

    def touch(self, key: str) -> str:
        return f"{self._p}u:{key}"

    def pattern(self) -> str:
        """Every key of this prefix (for tests and tooling; never on the hot path)."""
        return self._p + "*"
