"""The hot-store contract: every HotStore (SQLite, Redis) must pass it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.store.hot.base import Effect, HotStore, SessionState, UserTouch

T0 = 1_796_000_000_000_000
HOUR = 3_600_000_000
MINUTE = 60_000_000
DAY = 24 * HOUR


_offsets = iter(range(10**9))


def effect(event_id: str, at: int = T0, **kw: Any) -> Effect:
    base: dict[str, Any] = {
        "source": "default",
        "event_id": event_id,
        "partition": 0,
        "offset": next(_offsets),
        "received_at_us": at,
        "event_date": "2026-11-29",
        "campaign_id": "spring",
        "is_conversion": True,
        "value": 100,
        "currency": "USD",
    }
    base.update(kw)
    return Effect(**base)


class HotContract(ABC):
    WINDOW_SECS = 86_400

    @abstractmethod
    def open_store(self, path: Path) -> HotStore: ...

    @pytest.fixture
    def hot(self, tmp_path: Path) -> Iterator[HotStore]:
        store = self.open_store(tmp_path)
        yield store
        store.close()

    def test_new_events_count_and_duplicates_do_not(self, hot: HotStore) -> None:
        result = hot.apply("g", [effect("a"), effect("b"), effect("a")], {0: 3}, T0)
        assert result.counted == [True, True, False]
        assert result.duplicates == 1
        again = hot.apply("g", [effect("a", at=T0 + HOUR)], {0: 4}, T0 + HOUR)
        assert again.counted == [False]
        stats = hot.conversions("spring", "2026-11-29")
        assert (stats.conversions, stats.value) == (2, {"USD": 200})

    def test_dedup_is_per_source(self, hot: HotStore) -> None:
        result = hot.apply("g", [effect("a"), effect("a", source="other")], {0: 2}, T0)
        assert result.counted == [True, True]

    def test_window_edges(self, hot: HotStore) -> None:
        hot.apply("g", [effect("a")], {0: 1}, T0)
        just_inside = T0 + DAY - MINUTE
        assert hot.apply("g", [effect("a", at=just_inside)], {0: 2}, just_inside).counted == [False]
        just_outside = T0 + DAY + MINUTE
        assert hot.apply("g", [effect("a", at=just_outside)], {0: 3}, just_outside).counted == [
            True
        ]
        assert hot.conversions("spring", "2026-11-29").conversions == 2

    def test_a_duplicate_does_not_extend_the_window(self, hot: HotStore) -> None:
        hot.apply("g", [effect("a")], {0: 1}, T0)
        hot.apply("g", [effect("a", at=T0 + 12 * HOUR)], {0: 2}, T0)
        later = T0 + DAY + MINUTE
        assert hot.apply("g", [effect("a", at=later)], {0: 3}, later).counted == [True]

    def test_token_counts_once_for_its_lifetime(self, hot: HotStore) -> None:
        expires = T0 + 3 * DAY
        first = effect("order-page-1", token_id="tok", token_expires_at_us=expires)
        refresh = effect(
            "order-page-2", at=T0 + 2 * DAY, token_id="tok", token_expires_at_us=expires
        )
        assert hot.apply("g", [first], {0: 1}, T0).counted == [True]
        assert hot.apply("g", [refresh], {0: 2}, T0).counted == [False]
        same_batch = [
            effect("x1", token_id="tok2", token_expires_at_us=expires),
            effect("x2", token_id="tok2", token_expires_at_us=expires),
        ]
        assert hot.apply("g", same_batch, {0: 4}, T0).counted == [True, False]

    def test_counters_per_campaign_date_and_currency(self, hot: HotStore) -> None:
        effects = [
            effect("1", value=500, currency="USD"),
            effect("2", value=700, currency="EUR"),
            effect("3", value=None, currency=None),
            effect("4", campaign_id="fall", value=1, currency="JPY"),
            effect("5", event_date="2026-11-28"),
            effect("6", is_conversion=False),
        ]
        hot.apply("g", effects, {0: 6}, T0)
        spring = hot.conversions("spring", "2026-11-29")
        assert (spring.conversions, spring.value) == (3, {"USD": 500, "EUR": 700})
        everything = hot.conversions(None, "2026-11-29")
        assert (everything.conversions, everything.value) == (4, {"USD": 500, "EUR": 700, "JPY": 1})
        assert hot.conversions("spring", "2026-11-28").conversions == 1
        assert hot.conversions("nope", "2026-11-29").conversions == 0

    def test_campaign_totals_per_campaign_sorted(self, hot: HotStore) -> None:
        effects = [
            effect("1", campaign_id="spring", value=500, currency="USD"),
            effect("2", campaign_id="spring", value=700, currency="EUR"),
            effect("3", campaign_id="spring", value=None, currency=None),
            effect("4", campaign_id="fall", value=1, currency="JPY"),
            effect("4", campaign_id="fall", value=1, currency="JPY"),  # a duplicate
            effect("5", campaign_id="(none)"),
            effect("6", campaign_id="browse", is_conversion=False),  # not a conversion
            effect("7", campaign_id="fall", event_date="2026-11-28"),  # another day
        ]
        hot.apply("g", effects, {0: len(effects)}, T0)
        totals = hot.campaign_totals("2026-11-29")
        assert [(t.campaign_id, t.date, t.conversions, t.value) for t in totals] == [
            ("(none)", "2026-11-29", 1, {"USD": 100}),
            ("fall", "2026-11-29", 1, {"JPY": 1}),
            ("spring", "2026-11-29", 3, {"USD": 500, "EUR": 700}),
        ]
        everything = hot.conversions(None, "2026-11-29")
        assert sum(t.conversions for t in totals) == everything.conversions
        assert [t.campaign_id for t in hot.campaign_totals("2026-11-28")] == ["fall"]
        assert hot.campaign_totals("2026-11-30") == []

    def test_large_values_sum_exactly(self, hot: HotStore) -> None:
        big = 2**53 + 1
        hot.apply("g", [effect("a", value=big), effect("b", value=big)], {0: 2}, T0)
        assert hot.conversions("spring", "2026-11-29").value == {"USD": 2 * big}

    def test_positions_move_with_the_effects(self, hot: HotStore) -> None:
        assert hot.positions("g") == {}
        hot.apply("g", [effect("a")], {0: 10, 1: 5}, T0)
        assert hot.positions("g") == {0: 10, 1: 5}
        assert hot.positions("other") == {}

    def test_sums_saturate_at_64_bits_count_the_overflow_and_counting_goes_on(
        self, hot: HotStore
    ) -> None:
        top = 2**63 - 1
        de = {"country_code": "DE"}
        poison = [effect("a", value=top, dimensions=de), effect("b", value=top, dimensions=de)]
        first = hot.apply("g", poison, {0: 2}, T0)
        assert first.counted == [True, True]
        assert first.value_overflows == 1
        assert hot.conversions("spring", "2026-11-29").value == {"USD": top}
        # later events of the capped total and of others are still counted
        later = [effect("c", value=5, dimensions=de), effect("d", value=7, campaign_id="other")]
        second = hot.apply("g", later, {0: 4}, T0 + MINUTE)
        assert second.counted == [True, True]
        assert second.value_overflows == 1
        assert hot.positions("g") == {0: 4}
        spring = hot.conversions("spring", "2026-11-29")
        assert (spring.conversions, spring.value) == (3, {"USD": top})
        assert hot.conversions("other", "2026-11-29").value == {"USD": 7}
        # sums over rows that each fit are held at the bound too
        everything = hot.conversions(None, "2026-11-29")
        assert (everything.conversions, everything.value) == (4, {"USD": top})
        assert [(t.campaign_id, t.value) for t in hot.campaign_totals("2026-11-29")] == [
            ("other", {"USD": 7}),
            ("spring", {"USD": top}),
        ]
        ((country, by_country),) = hot.breakdown("country_code", "2026-11-29")
        assert (country, by_country.conversions, by_country.value) == ("DE", 3, {"USD": top})
        hot.apply("g", [effect("e", value=top, campaign_id="other")], {0: 5}, T0 + MINUTE)
        live = hot.live(T0 + MINUTE, window_minutes=60, latency_minutes=60)
        assert live.value == {"USD": top}
        assert live.conversions == 5
        assert {c.campaign_id: c.value for c in live.campaigns} == {
            "spring": {"USD": top},
            "other": {"USD": top},
        }
        assert live.value_overflows_total == 3
        everything = hot.conversions(None, "2026-11-29")
        assert (everything.conversions, everything.value) == (5, {"USD": top})

    def let_time_pass(self, hot: HotStore, secs: float) -> None:
        """What ``secs`` of real time do to the store by themselves (none in SQLite)."""
        return None

    def test_a_backlog_days_behind_still_meets_its_first_copies(self, hot: HotStore) -> None:
        """Dedup follows the data's time: 3 days of backlog, processed hours late."""
        processing = T0 + 3 * DAY + HOUR
        first = effect(
            "a", at=processing - 30 * HOUR, offset=0, token_id="tok",
            token_expires_at_us=processing - 28 * HOUR,
        )  # fmt: skip
        assert hot.apply("g", [first], {0: 1}, processing).counted == [True]
        self.let_time_pass(hot, 2.5)
        retry = effect("a", at=processing - 29 * HOUR, offset=1)
        token_retry = effect("b", at=processing - 29 * HOUR, offset=2, token_id="tok")
        second = hot.apply("g", [retry, token_retry], {0: 3}, processing + 2_500_000)
        assert second.counted == [False, False]
        self.let_time_pass(hot, 2 * 3600)  # hours later, the token is still remembered
        late_token = effect("c", at=processing - 28 * HOUR - MINUTE, offset=3, token_id="tok")
        assert hot.apply("g", [late_token], {0: 4}, processing + 2 * HOUR).counted == [False]
        # a stream over 3 days, each id sent again 50 min later and some 25 h later
        start = processing - 3 * DAY
        stream = []
        for i in range(72):
            stream += [(start + i * HOUR, f"id{i}"), (start + i * HOUR + 50 * MINUTE, f"id{i}")]
            if i % 10 == 0:
                stream.append((start + i * HOUR + 25 * HOUR, f"id{i}"))
        stream.sort()
        expected, counted_at = [], {}
        for at, event_id in stream:
            new = counted_at.get(event_id, -DAY) + self.WINDOW_SECS * 1_000_000 <= at
            expected.append(new)
            if new:
                counted_at[event_id] = at
        batches = []
        for n, begin in enumerate(range(0, len(stream), 9)):
            effects = [
                effect(event_id, at=at, offset=4 + begin + k)
                for k, (at, event_id) in enumerate(stream[begin : begin + 9])
            ]
            now = processing + 2 * HOUR + n * 10 * MINUTE
            batches.append((effects, {0: 4 + begin + len(effects)}, now))
        verdicts = []
        for effects, positions, now in batches:
            self.let_time_pass(hot, 600)
            verdicts += hot.apply("g", effects, positions, now).counted
        assert verdicts == expected
        assert hot.conversions("spring", "2026-11-29").conversions == 1 + sum(expected)
        # a replay of the whole backlog gets every first verdict back and counts nothing
        replayed = [c for e, p, now in batches for c in hot.apply("g", e, p, now).counted]
        assert replayed == expected
        assert hot.conversions("spring", "2026-11-29").conversions == 1 + sum(expected)

    def test_two_counted_copies_of_an_id_in_one_batch_both_keep_their_verdict(
        self, hot: HotStore
    ) -> None:
        """Copies more than a window apart both count, and a replay says so for each."""
        copies = [
            effect("a", at=T0, offset=0),
            effect("a", at=T0 + 10 * MINUTE, offset=1),
            effect("a", at=T0 + 25 * HOUR, offset=2),
            effect("a", at=T0 + 50 * HOUR, offset=3),
        ]
        assert hot.apply("g", copies, {0: 4}, T0 + 51 * HOUR).counted == [True, False, True, True]
        replay = hot.apply("g", copies, {0: 4}, T0 + 51 * HOUR + MINUTE)
        assert replay.counted == [True, False, True, True]
        # the same after a later batch moved the window on
        later = effect("a", at=T0 + 50 * HOUR + MINUTE, offset=4)
        assert hot.apply("g", [later], {0: 5}, T0 + 51 * HOUR).counted == [False]
        assert hot.apply("g", copies, {0: 5}, T0 + 52 * HOUR).counted == [True, False, True, True]
        assert hot.conversions("spring", "2026-11-29").conversions == 3

    def test_expire_forgets_only_what_ended(self, hot: HotStore) -> None:
        hot.apply("g", [effect("old"), effect("new", at=T0 + 2 * DAY)], {0: 2}, T0 + 2 * DAY)
        assert hot.remembered() == 2
        removed = hot.expire(T0 + DAY + MINUTE, max_rows=1000)
        assert removed == 1 and hot.remembered() == 1
        at = T0 + 2 * DAY + HOUR
        assert hot.apply("g", [effect("new", at=at)], {0: 3}, at).counted == [False]

    def test_live_view_and_latency(self, hot: HotStore) -> None:
        now = T0 + 10 * MINUTE
        effects = [
            effect("a", at=now - 20_000),  # 20 ms
            effect("b", at=now - 40_000, campaign_id="fall", value=5, currency="EUR"),
            effect("c", at=now - 6_000_000),  # 6 s: an anomaly
            effect("a", at=now),
        ]
        result = hot.apply("g", effects, {0: 4}, now)
        assert result.latency_anomalies == 1
        live = hot.live(now, window_minutes=60, latency_minutes=5)
        assert (live.events, live.conversions, live.duplicates) == (4, 3, 1)
        assert live.value == {"USD": 200, "EUR": 5}
        assert [(c.campaign_id, c.conversions) for c in live.campaigns] == [
            ("spring", 2),
            ("fall", 1),
        ]
        assert live.latency_samples == 3
        assert live.latency_ms["p50"] is not None and 20 <= live.latency_ms["p50"] <= 50
        assert live.latency_ms["p99"] is not None and live.latency_ms["p99"] >= 5000
        assert live.duplicates_total == 1 and live.latency_anomalies_total == 1
        later = hot.live(now + 2 * HOUR, window_minutes=60, latency_minutes=5)
        assert later.events == 0 and later.latency_samples == 0

    def test_durable_across_reopen(self, tmp_path: Path) -> None:
        first = self.open_store(tmp_path)
        first.apply("g", [effect("a")], {0: 1}, T0)
        first.close()
        second = self.open_store(tmp_path)
        try:
            assert second.positions("g") == {0: 1}
            assert second.apply("g", [effect("a")], {0: 2}, T0).counted == [False]
            assert second.conversions("spring", "2026-11-29").conversions == 1
        finally:
            second.close()

    def test_replaying_an_applied_batch_changes_nothing_and_keeps_verdicts(
        self, hot: HotStore
    ) -> None:
        batch = [
            effect("a", offset=100),
            effect("b", offset=101),
            effect("a", offset=102),
            effect("c", offset=103, token_id="t", token_expires_at_us=T0 + DAY),
            effect("d", offset=104, token_id="t", token_expires_at_us=T0 + DAY),
        ]
        first = hot.apply("g", batch, {0: 105}, T0)
        assert first.counted == [True, True, False, True, False]
        replay = hot.apply("g", batch, {0: 105}, T0 + MINUTE)
        assert replay.counted == first.counted
        assert replay.duplicates == 0
        assert hot.conversions("spring", "2026-11-29").conversions == 3
        live = hot.live(T0 + MINUTE, window_minutes=60, latency_minutes=60)
        assert (live.events, live.duplicates, live.duplicates_total) == (5, 2, 2)
        # a crash replays part of the batch together with new entries
        mixed = [*batch[3:], effect("e", offset=105), effect("a", offset=106)]
        assert hot.apply("g", mixed, {0: 107}, T0).counted == [True, False, True, False]
        assert hot.conversions("spring", "2026-11-29").conversions == 4

    def test_a_replay_gets_back_the_blobs_recorded_with_counted_copies(self, hot: HotStore) -> None:
        batch = [
            effect("a", offset=10, recorded=b"A"),
            effect("a", offset=11, recorded=b"not counted"),
            effect("b", offset=12),
            effect("c", offset=13, recorded=b"C\x00:binary"),
        ]
        first = hot.apply("g", batch, {0: 14}, T0)
        assert (first.counted, first.recorded) == ([True, False, True, True], {})
        replay = hot.apply("g", batch, {0: 14}, T0)
        assert replay.recorded == {0: b"A", 3: b"C\x00:binary"}
        # a replay from the middle, with new entries after it
        mixed = [*batch[3:], effect("d", offset=14, recorded=b"D")]
        assert hot.apply("g", mixed, {0: 15}, T0).recorded == {0: b"C\x00:binary"}
        assert hot.apply("g", mixed, {0: 15}, T0).recorded == {0: b"C\x00:binary", 1: b"D"}
        # a batch that starts past them forgets them: all before it was published
        hot.apply("g", [effect("e", offset=15, partition=0)], {0: 16}, T0)
        assert hot.apply("g", mixed, {0: 16}, T0).recorded == {}
        other = [effect("f", partition=1, offset=0, recorded=b"F")]
        hot.apply("g", other, {1: 1}, T0)
        assert hot.apply("g", other, {1: 1}, T0).recorded == {0: b"F"}
        assert hot.apply("h", other, {1: 1}, T0).recorded == {}  # per group

    def test_sessions_and_touches_are_written_with_the_batch(self, hot: HotStore) -> None:
        session = SessionState(
            key="s1",
            opened_at_us=T0,
            last_seen_us=T0,
            expires_at_us=T0 + 30 * MINUTE,
            first_touch={"source": "google", "medium": "cpc"},
            last_touch=None,
        )
        touch = UserTouch(
            key="u1",
            touch={"source": "google", "campaign": "spring"},
            at_us=T0,
            expires_at_us=T0 + 30 * DAY,
        )
        hot.apply("g", [effect("a")], {0: 1}, T0, sessions=[session], touches=[touch])
        assert hot.sessions(["s1", "nope"]) == {"s1": session}
        assert hot.user_touches(["u1"]) == {"u1": touch}
        refreshed = SessionState(
            key="s1",
            opened_at_us=T0,
            last_seen_us=T0 + MINUTE,
            expires_at_us=T0 + 31 * MINUTE,
            first_touch=session.first_touch,
            last_touch={"source": "facebook"},
        )
        hot.apply("g", [], {0: 2}, T0 + MINUTE, sessions=[refreshed])
        assert hot.sessions(["s1"])["s1"] == refreshed

    def test_expired_sessions_and_touches_disappear(self, hot: HotStore) -> None:
        sessions = [
            SessionState(key=f"s{i}", opened_at_us=T0, last_seen_us=T0, expires_at_us=T0 + i * HOUR)
            for i in (1, 3)
        ]
        touch = UserTouch(key="u", touch={}, at_us=T0, expires_at_us=T0 + 2 * HOUR)
        hot.apply("g", [], {0: 1}, T0, sessions=sessions, touches=[touch])
        hot.expire(T0 + 2 * HOUR, max_rows=100)
        assert set(hot.sessions(["s1", "s3"])) == {"s3"}
        assert hot.user_touches(["u"]) == {}

    def test_conversions_by_dimension(self, hot: HotStore) -> None:
        dims = {"country_code": "DE", "device_type": "mobile", "campaign_source": "google"}
        hot.apply(
            "g",
            [
                effect("a", dimensions=dims, value=10, currency="EUR"),
                effect("b", dimensions={**dims, "country_code": "FR"}, value=5, currency="EUR"),
                effect("c", dimensions=dims, campaign_id="fall", value=1, currency="USD"),
                effect("a", dimensions=dims),  # a duplicate: not counted
                effect("d", dimensions=dims, is_conversion=False),
            ],
            {0: 5},
            T0,
        )
        by_country = dict(hot.breakdown("country_code", "2026-11-29"))
        assert {k: (v.conversions, v.value) for k, v in by_country.items()} == {
            "DE": (2, {"EUR": 10, "USD": 1}),
            "FR": (1, {"EUR": 5}),
        }
        assert [k for k, _ in hot.breakdown("device_type", "2026-11-29")] == ["mobile"]
        assert hot.breakdown("campaign_source", "2026-11-28") == []
