"""The distributed hot store: Redis, one Lua script per applied batch.

The script (``redis_apply.lua``) does, atomically, what the SQLite store does
in one transaction: skip effects already applied at their log positions (a
replay gets its first verdict), dedupe by (source, event_id) over the window
measured on receive time and by conversion token over its lifetime, count
the new ones (per campaign x UTC date x currency, per dimension, per minute,
latency histogram), write sessions and touches, and move the group's
positions. Expiry is decided by comparing the times the store is given, so
a moved test clock behaves like SQLite; Redis TTLs only collect garbage.

Needs a single Redis (or a primary with replicas): one script touches
counters, dedup entries and positions together, which Redis Cluster cannot
do across slots. Key layout and TTLs: ``keys.py``.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import msgspec

from convtrack.config import DedupSettings, HotSettings
from convtrack.errors import ConfigError
from convtrack.store.hot.base import (
    EXCLUDED_REASONS,
    ApplyResult,
    CampaignLive,
    ConversionStats,
    Effect,
    HotStore,
    LiveStats,
    SessionState,
    UserTouch,
    saturate,
)
from convtrack.store.hot.keys import RedisKeys, slice_secs
from convtrack.store.hot.livestats import minute_rows, percentile_ms
from convtrack.store.hot.redis_batch import decode_cell, encode_batch
from convtrack.store.hot.redis_client import RedisClient

if TYPE_CHECKING:
    import redis

Cells = dict[tuple[str, ...], dict[str, int]]  # counter cell -> kind letter -> amount
SKEW_MINUTES = 2  # minutes after the reader's own that live() still reads


def _cells(raw: Mapping[bytes, bytes]) -> Cells:
    cells: Cells = defaultdict(dict)
    for field, amount in raw.items():
        cells[tuple(decode_cell(field[1:]))][chr(field[0])] = int(amount)
    return cells


def _held(values: Mapping[str, int]) -> dict[str, int]:
    return {currency: saturate(total) for currency, total in values.items()}


class RedisHotStore(HotStore):
    def __init__(
        self, url: str, *, prefix: str, dedup_window_secs: int, minute_retention: int
    ) -> None:
        self._redis = RedisClient(url, "hot store")
        self._client: redis.Redis = self._redis.client
        self._keys = RedisKeys(prefix)
        self._window_secs = dedup_window_secs
        self._slice_secs = slice_secs(dedup_window_secs)
        self._minute_retention = minute_retention
        package = "convtrack.store.hot"
        self._apply = self._redis.script(package, "redis_apply.lua")
        self._expire = self._redis.script(package, "redis_expire.lua")
        self._remembered = self._redis.script(package, "redis_remembered.lua")

    @property
    def key_prefix(self) -> str:
        """``hot.redis_prefix``: every key of this store starts with it and ``:``."""
        return self._keys.prefix

    @classmethod
    def from_settings(cls, hot: HotSettings, dedup: DedupSettings) -> RedisHotStore:
        if not hot.redis_url:
            raise ConfigError("hot.redis_url is required when hot.kind = redis")
        return cls(
            hot.redis_url,
            prefix=hot.redis_prefix,
            dedup_window_secs=dedup.window_secs,
            minute_retention=hot.minute_retention,
        )

    def _translate(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Redis errors as ours: unreachable -> StoreUnavailable (retry), else StoreError."""
        return self._redis.translate(what)

    # -- writes -------------------------------------------------------------------------

    def apply(
        self,
        group: str,
        effects: Sequence[Effect],
        positions: Mapping[int, int],
        now_us: int,
        sessions: Sequence[SessionState] = (),
        touches: Sequence[UserTouch] = (),
    ) -> ApplyResult:
        batch = encode_batch(
            self._keys,
            group=group,
            effects=effects,
            positions=positions,
            now_us=now_us,
            sessions=sessions,
            touches=touches,
            window_secs=self._window_secs,
            slice_secs=self._slice_secs,
            minute_retention=self._minute_retention,
        )
        with self._translate("apply"):
            verdicts, duplicates, anomalies, overflows, handed_back = self._apply(
                keys=[], args=batch
            )
        return ApplyResult(
            counted=[flag == ord("1") for flag in verdicts],
            duplicates=int(duplicates),
            latency_anomalies=int(anomalies),
            value_overflows=int(overflows),
            recorded={
                int(handed_back[k]) - 1: bytes(handed_back[k + 1])
                for k in range(0, len(handed_back), 2)
            },
        )

    def expire(self, watermark_us: int, max_rows: int) -> int:
        """Drop the dedup slices and token counts that ended; hide ended sessions and touches.

        Entries are dropped a slice at a time (a quarter window), so ``remembered``
        falls in steps; whether an event is a duplicate is decided exactly anyway.
        ``max_rows`` bounds the bucket keys deleted per call; TTLs get the rest.
        """
        k = self._keys
        args = {
            "watermark_us": watermark_us,
            "max_keys": max_rows,
            "window_us": self._window_secs * 1_000_000,
            "slice_us": self._slice_secs * 1_000_000,
            "wm": k.watermark,
            "d": k.dedup_base,
            "dm": k.slice_meta_base,
            "dx": k.slice_index,
            "tc": k.token_count_base,
            "tx": k.token_index,
        }
        with self._translate("expire"):
            return int(self._expire(keys=[], args=[msgspec.msgpack.encode(args)]))

    # -- reads --------------------------------------------------------------------------

    def _stored(self, names: list[str]) -> tuple[int, list[bytes | None]]:
        """The expiry watermark and the raw values of ``names``, in one round trip."""
        with self._translate("read"):
            raw = self._client.mget([self._keys.watermark, *names]) if names else [None]
        watermark = int(raw[0]) if raw[0] is not None else 0
        return watermark, [r if isinstance(r, bytes) else None for r in raw[1:]]

    def sessions(self, keys: Sequence[str]) -> dict[str, SessionState]:
        unique = list(dict.fromkeys(keys))
        watermark, raw = self._stored([self._keys.session(k) for k in unique])
        found = (msgspec.msgpack.decode(r, type=SessionState) for r in raw if r is not None)
        return {s.key: s for s in found if s.expires_at_us > watermark}

    def user_touches(self, keys: Sequence[str]) -> dict[str, UserTouch]:
        unique = list(dict.fromkeys(keys))
        watermark, raw = self._stored([self._keys.touch(k) for k in unique])
        found = (msgspec.msgpack.decode(r, type=UserTouch) for r in raw if r is not None)
        return {t.key: t for t in found if t.expires_at_us > watermark}

    def positions(self, group: str) -> dict[int, int]:
        with self._translate("read"):
            raw = self._client.hgetall(self._keys.positions(group))
        return {int(p): int(o) for p, o in raw.items()}

    def _hash_cells(self, key: str) -> Cells:
        with self._translate("read"):
            return _cells(cast(dict[bytes, bytes], self._client.hgetall(key)))

    def conversions(self, campaign_id: str | None, date: str) -> ConversionStats:
        conversions, value = 0, defaultdict[str, int](int)
        for (campaign, currency), cell in self._hash_cells(self._keys.counters(date)).items():
            if "n" not in cell or campaign_id not in (None, campaign):
                continue
            conversions += cell["n"]
            if currency:
                value[currency] += cell.get("v", 0)
        return ConversionStats(campaign_id, date, saturate(conversions), _held(value))

    def excluded(self, campaign_id: str | None, date: str) -> dict[str, int]:
        with self._translate("read"):
            raw = cast(dict[bytes, bytes], self._client.hgetall(self._keys.excluded(date)))
        totals = dict.fromkeys(EXCLUDED_REASONS, 0)
        for field, n in raw.items():
            reason, campaign = decode_cell(field)
            if reason in totals and campaign_id in (None, campaign):
                totals[reason] += int(n)
        return totals

    def campaign_totals(self, date: str) -> list[ConversionStats]:
        totals: dict[str, tuple[int, dict[str, int]]] = {}
        for (campaign, currency), cell in self._hash_cells(self._keys.counters(date)).items():
            if cell.get("n", 0) <= 0:
                continue
            count, value = totals.get(campaign, (0, {}))
            if currency:
                value[currency] = cell.get("v", 0)
            totals[campaign] = (count + cell["n"], value)
        return [
            ConversionStats(c, date, saturate(n), _held(v)) for c, (n, v) in sorted(totals.items())
        ]

    def breakdown(self, dimension: str, date: str) -> list[tuple[str, ConversionStats]]:
        totals: dict[str, tuple[int, defaultdict[str, int]]] = {}
        key = self._keys.dimension(dimension, date)
        for (dim_value, _campaign, currency), cell in self._hash_cells(key).items():
            if "n" not in cell:
                continue
            count, value = totals.get(dim_value, (0, defaultdict(int)))
            if currency:
                value[currency] += cell.get("v", 0)
            totals[dim_value] = (count + cell["n"], value)
        return [
            (k, ConversionStats(None, date, saturate(n), _held(v)))
            for k, (n, v) in sorted(totals.items())
        ]

    def live(self, now_us: int, window_minutes: int, latency_minutes: int) -> LiveStats:
        minute = now_us // 60_000_000
        # A processor on a host whose clock runs ahead writes minutes "after" ours.
        ahead = minute + 1 + SKEW_MINUTES
        minutes = list(range(minute - window_minutes + 1, ahead))
        latency_range = range(minute - latency_minutes + 1, ahead)
        with self._translate("read"):
            pipe = self._client.pipeline(transaction=False)
            for m in minutes:
                pipe.hgetall(self._keys.minute(m))
            for m in latency_range:
                pipe.hgetall(self._keys.latency(m))
            pipe.hmget(self._keys.totals, ["duplicates", "latency_anomalies", "value_overflows"])
            replies = pipe.execute()
        value: defaultdict[str, int] = defaultdict(int)
        by_campaign: defaultdict[str, int] = defaultdict(int)
        campaign_value: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        per_minute: dict[int, list[int]] = {}
        for m, raw in zip(minutes, replies, strict=False):
            for (campaign, currency), cell in _cells(raw).items():
                slot = per_minute.setdefault(m, [0, 0, 0])
                n_conv = cell.get("c", 0)
                slot[0] += cell.get("e", 0)
                slot[1] += n_conv
                slot[2] += cell.get("d", 0)
                by_campaign[campaign] += n_conv
                if currency and n_conv:
                    value[currency] += cell.get("v", 0)
                    campaign_value[campaign][currency] += cell.get("v", 0)
        histogram: defaultdict[int, int] = defaultdict(int)
        for raw in replies[len(minutes) : -1]:
            for bucket, n in raw.items():
                histogram[int(bucket)] += int(n)
        duplicates_total, anomalies_total, overflows_total = (int(v or 0) for v in replies[-1])
        campaigns = [
            CampaignLive(c, n, _held(campaign_value[c])) for c, n in by_campaign.items() if n
        ]
        campaigns.sort(key=lambda c: (-c.conversions, c.campaign_id))
        return LiveStats(
            window_minutes=window_minutes,
            events=sum(v[0] for v in per_minute.values()),
            conversions=sum(v[1] for v in per_minute.values()),
            duplicates=sum(v[2] for v in per_minute.values()),
            value=_held(value),
            campaigns=campaigns,
            latency_ms={q: percentile_ms(histogram, f) for q, f in _PERCENTILES},
            latency_samples=sum(histogram.values()),
            duplicates_total=duplicates_total,
            latency_anomalies_total=anomalies_total,
            per_minute=minute_rows(per_minute),
            value_overflows_total=overflows_total,
        )

    def remembered(self) -> int:
        """Ids in the live dedup slices plus tokens, from per-slice counters the script keeps."""
        k = self._keys
        args = [k.slice_index, k.slice_meta_base, k.token_index, k.token_count_base]
        with self._translate("read"):
            return int(self._remembered(keys=[], args=args))

    def close(self) -> None:
        self._redis.close()


_PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
