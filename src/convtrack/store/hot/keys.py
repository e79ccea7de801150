"""Every Redis key and TTL, in one place: the hot store's, and those of the rejects,
dead letters and in-flight markers that live beside it.

All keys start with ``<prefix>:`` (``hot.redis_prefix``, default ``ct``), so
several deployments (or tests) can share one Redis database. The layout:

- ``pos:<group>`` hash: partition -> next offset applied by the group. No TTL.
- ``rec:<group>:<partition>`` sorted set: per applied batch, the recorded blobs
  of its counted effects as (offset, blob) records (score = the last offset),
  for replays. No TTL: each apply drops those below its batch's first offset.
- ``d:<slice>:<bucket>`` hash: dedup entries, 12-byte id hash -> receive second
  within the slice and position tag. TTL: slice end + window + backlog margin,
  counted from the data's time (every TTL here is; see BACKLOG_MARGIN_SECS).
- ``dm:<slice>`` hash: a slice's first and current fanout ``f0``/``f``, entries
  ``n``, expiry progress (``gone``, ``next``). TTL: as its buckets.
  ``dx`` sorted set: the live slices.
- ``t:<token_id>`` string: a conversion token's expiry (µs). TTL: that + backlog margin.
  ``tc:<slice>`` string / ``tx`` sorted set: tokens counted by their expiry slice.
- ``c:<date>`` hash: conversions ``n`` and value ``v`` per campaign x currency;
  ``x:<dimension>:<date>`` the same per dimension value. No TTL (as in SQLite).
- ``ex:<date>`` hash: events not counted, per reason x campaign (the field is
  the msgpack list [reason, campaign]). No TTL (as in SQLite).
- ``m:<minute>`` / ``l:<minute>`` hash: per-minute events, conversions,
  duplicates and value; latency histogram. TTL: ``minute_retention`` minutes.
- ``tot`` hash: all-time duplicates and latency anomalies. No TTL.
- ``s:<key>`` / ``u:<key>`` string: a session / a user's last touch (msgpack).
  TTL: their expiry + margin.
- ``wm`` string: the highest expiry watermark given to ``expire`` (µs).

The rejects and the dead letters live here too when ``hot.kind = "redis"``
(shared by every process; see store/rejects/redis.py, store/deadletters/redis.py).
None has a TTL: each is bounded by its cap, or removed when settled.

- ``r:seq`` string: the last reject id given (INCR, in the script that writes).
- ``r:ids`` sorted set: reject ids (score = id); ``r:code:<code>`` the same per code.
- ``r:row`` / ``r:codes`` hash: id -> the msgpack row / its codes joined by ``,``.
- ``r:dropped`` string: rejects dropped by ``rejects.max_rows``, all collectors.
- ``dl:seq`` string: the last dead-letter id given.
- ``dl:r:<id>`` hash: one dead letter (destination, event, last answer, attempts, times).
- ``dl:d:<destination>`` / ``dl:q:<destination>`` sorted set: the destination's ids /
  those queued for replay (score = id). ``dl:dests`` set: destinations with rows.
- ``dl:c:<destination>`` sorted set: ids claimed by a replay not settled yet (score =
  the claim's lease end, µs); a lapsed one is queued again.
- ``if:<destination>`` / ``ifs:<destination>`` hash: ``partition:offset`` -> the
  in-flight event (msgpack) / its state (0 unknown, 1 dead-lettered, 2 settled).

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
# TTLs count from the data's time (the batch's newest receive time), not from the
# processor's clock, so a backlog processed days late keeps its dedup entries. A TTL
# set then holds while the processor falls up to this much further behind than it was
# when it wrote the entry (an outage): Kafka's default retention, past which a
# processor has lost events anyway. Dedup slices and token counts are deleted by
# expire() at the data watermark (as in SQLite) well before; tokens go by this TTL.
BACKLOG_MARGIN_SECS: Final = 7 * 86_400


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

    def recorded_base(self, group: str) -> str:
        """Completed in Lua with the partition."""
        return f"{self._p}rec:{group}:"

    def counters(self, date: str) -> str:
        return f"{self._p}c:{date}"

    def dimension(self, dimension: str, date: str) -> str:
        return f"{self._p}x:{dimension}:{date}"

    def excluded(self, date: str) -> str:
        return f"{self._p}ex:{date}"

    def minute(self, minute: int) -> str:
        return f"{self._p}m:{minute}"

    def latency(self, minute: int) -> str:
        return f"{self._p}l:{minute}"

    def session(self, key: str) -> str:
        return f"{self._p}s:{key}"

    def touch(self, key: str) -> str:
        return f"{self._p}u:{key}"

    # -- rejects (store/rejects/redis.py) and dead letters (store/deadletters/redis.py)

    def rejects(self) -> RejectKeys:
        return RejectKeys(self._p + "r:")

    def dead_letters(self) -> DeadLetterKeys:
        return DeadLetterKeys(self._p)

    def pattern(self) -> str:
        """Every key of this prefix (for tests and tooling; never on the hot path)."""
        return self._p + "*"


class RejectKeys:
    def __init__(self, base: str) -> None:
        self.seq = base + "seq"
        self.ids = base + "ids"
        self.rows = base + "row"
        self.codes = base + "codes"
        self.dropped = base + "dropped"
        self.code_base = base + "code:"  # completed with the code, also in Lua

    def code(self, code: str) -> str:
        return self.code_base + code


class DeadLetterKeys:
    def __init__(self, p: str) -> None:
        self.seq = p + "dl:seq"
        self.destinations = p + "dl:dests"
        self.row_base = p + "dl:r:"  # completed with the id, also in Lua
        self.rows_of_base = p + "dl:d:"  # completed with the destination
        self.queued_base = p + "dl:q:"
        self.claimed_base = p + "dl:c:"
        self.in_flight_base = p + "if:"
        self.in_flight_state_base = p + "ifs:"

    def row(self, dead_letter_id: int) -> str:
        return f"{self.row_base}{dead_letter_id}"

    def rows_of(self, destination: str) -> str:
        return self.rows_of_base + destination

    def queued(self, destination: str) -> str:
        return self.queued_base + destination

    def in_flight(self, destination: str) -> str:
        return self.in_flight_base + destination

    def in_flight_state(self, destination: str) -> str:
        return self.in_flight_state_base + destination
