"""The hot-store contract for the excluded-event counters (``HotStore.excluded``):
every HotStore (SQLite, Redis) must pass it. Kept beside ``hot_contract.py``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.store.hot.base import Effect, HotStore

T0 = 1_796_000_000_000_000
HOUR = 3_600_000_000
DATE = "2026-11-29"
NONE = {"bot": 0, "duplicate": 0, "not_a_conversion": 0}

_offsets = iter(range(10**9))


def event(event_id: str, excluded: str = "", **kw: Any) -> Effect:
    """A conversion, or with ``excluded`` an event the processor did not make one."""
    base: dict[str, Any] = {
        "source": "default", "event_id": event_id, "partition": 0, "offset": next(_offsets),
        "received_at_us": T0, "event_date": DATE, "campaign_id": "spring",
        "is_conversion": not excluded, "excluded": excluded, "value": 100, "currency": "USD",
    }  # fmt: skip
    base.update(kw)
    return Effect(**base)


def bot(event_id: str, **kw: Any) -> Effect:
    return event(event_id, "bot", **kw)


def page_view(event_id: str, **kw: Any) -> Effect:
    return event(event_id, "not_a_conversion", value=None, currency=None, **kw)


class ExcludedContract(ABC):
    WINDOW_SECS = 86_400

    @abstractmethod
    def open_store(self, path: Path) -> HotStore: ...

    @pytest.fixture
    def hot(self, tmp_path: Path) -> Iterator[HotStore]:
        store = self.open_store(tmp_path)
        yield store
        store.close()

    def test_nothing_excluded_is_every_reason_at_zero(self, hot: HotStore) -> None:
        assert hot.excluded("spring", DATE) == NONE
        assert hot.excluded(None, DATE) == NONE
        hot.apply("g", [event("a")], {0: 1}, T0)
        assert hot.excluded("spring", DATE) == NONE

    def test_each_reason_per_campaign_and_day(self, hot: HotStore) -> None:
        effects = [
            event("a"),
            bot("b"),
            page_view("c"),
            event("a"),  # a duplicate in the same batch
            bot("b"),  # a bot's duplicate is a duplicate
            bot("d", campaign_id="autumn"),
            page_view("e", event_date="2026-11-30"),
            event("f", source="other", campaign_id="autumn"),
        ]
        result = hot.apply("g", effects, {0: 8}, T0)
        assert result.counted == [True, True, True, False, False, True, True, True]
        assert hot.excluded("spring", DATE) == {"bot": 1, "duplicate": 2, "not_a_conversion": 1}
        assert hot.excluded("autumn", DATE) == {**NONE, "bot": 1}
        assert hot.excluded(None, DATE) == {"bot": 2, "duplicate": 2, "not_a_conversion": 1}
        assert hot.excluded(None, "2026-11-30") == {**NONE, "not_a_conversion": 1}
        assert hot.excluded("nobody", DATE) == NONE
        # Only the conversions count; a later copy of any of them is a duplicate.
        assert hot.conversions("spring", DATE).conversions == 1
        later = T0 + HOUR
        hot.apply("g", [event("a", received_at_us=later), page_view("c", received_at_us=later)],
                  {0: 10}, later)  # fmt: skip
        assert hot.excluded("spring", DATE) == {"bot": 1, "duplicate": 4, "not_a_conversion": 1}

    def test_counts_add_up_batch_after_batch(self, hot: HotStore) -> None:
        hot.apply("g", [event("a", offset=0)], {0: 1}, T0)
        for n in range(1, 8):  # each batch adds exactly one of each
            at = T0 + n * HOUR
            batch = [event("a", offset=3 * n, received_at_us=at),
                     bot(f"b{n}", offset=3 * n + 1, received_at_us=at),
                     page_view(f"p{n}", offset=3 * n + 2, received_at_us=at)]  # fmt: skip
            hot.apply("g", batch, {0: 3 * n + 3}, at)
            assert hot.excluded("spring", DATE) == {"bot": n, "duplicate": n, "not_a_conversion": n}

    def test_a_replayed_batch_adds_nothing(self, hot: HotStore) -> None:
        batch = [bot("b", offset=0), page_view("c", offset=1), event("a", offset=2)]
        batch.append(event("a", offset=3))
        hot.apply("g", batch, {0: 4}, T0)
        before = hot.excluded("spring", DATE)
        assert before == {"bot": 1, "duplicate": 1, "not_a_conversion": 1}
        assert hot.apply("g", batch, {0: 4}, T0).counted == [True, True, True, False]
        assert hot.excluded("spring", DATE) == before
        # A batch that only partly replays counts its new part.
        tail = [event("a", offset=3), bot("x", offset=4)]
        hot.apply("g", tail, {0: 5}, T0)
        assert hot.excluded("spring", DATE) == {**before, "bot": 2}

    def test_durable_across_reopen(self, tmp_path: Path) -> None:
        first = self.open_store(tmp_path)
        first.apply("g", [bot("b"), bot("b")], {0: 2}, T0)
        first.close()
        second = self.open_store(tmp_path)
        try:
            assert second.excluded("spring", DATE) == {**NONE, "bot": 1, "duplicate": 1}
        finally:
            second.close()
