"""The delivery runner's bookkeeping (``CommitWindow``): what is cut, what is committed and
in which order; and a runner whose in-flight marks fail loses nothing it read."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.deliver.base import Forwarded
from convtrack.deliver.window import CommitWindow, SlotState
from convtrack.errors import StoreError
from convtrack.log.base import LogEntry
from convtrack.runtime.embedded import Pipeline
from convtrack.store.deadletters.base import store_path
from tests.support.deliverkit import TinyDestination, TinyPlatform, drain, ingest, runner, settings
from tests.support.sqlite_faults import locked, short_busy_timeout


def entry(offset: int) -> LogEntry:
    return LogEntry(partition=0, offset=offset, key="", payload=b"", logged_at_us=0)


def event(offset: int) -> Forwarded:
    return Forwarded(f"e{offset}", 0, offset, {"event_id": f"e{offset}"})


def ended(value: bool) -> Future[bool]:
    future: Future[bool] = Future()
    future.set_result(value)
    return future


def window(batch_limit: int = 2, max_batches: int = 4, wait: float = 5.0) -> CommitWindow:
    return CommitWindow(batch_limit=batch_limit, max_batches=max_batches, max_wait_secs=wait)


def test_batches_are_due_when_full_waited_or_forced_within_the_room() -> None:
    w = window()
    for offset in range(5):
        w.add(entry(offset), event(offset), logged_at=100.0)
    assert w.room() == 4 * 2 - 5
    assert w.due(101.0, force=False, free=10) == 2  # two full; the fifth waits
    assert w.due(105.0, force=False, free=10) == 3  # waited long enough
    assert w.due(101.0, force=True, free=1) == 1  # no more than may go out
    assert [e.event_id for e in w.next_events(2)] == ["e0", "e1", "e2", "e3"]
    first, second = w.cut(), w.cut()
    assert [e.offset for e in first.entries] == [0, 1] and [e.offset for e in second.entries] == [
        2,
        3,
    ]
    assert first.state is SlotState.HELD and w.batched() == 1


def test_passed_entries_go_with_the_batch_after_them_and_alone_once_nothing_is_out() -> None:
    w = window()
    w.passed(entry(0))  # skipped
    w.add(entry(1), event(1), logged_at=0.0)
    w.passed(entry(2))
    assert w.take_passed() == []  # a batch is waiting
    slot = w.cut()
    assert [e.offset for e in slot.entries] == [0, 1]
    assert w.take_passed() == []  # a batch is out
    slot.start(ended(True))
    assert w.note_ended() is None and slot.state is SlotState.DONE
    assert [e.offset for e in w.settle_front()] == [0, 1, 2]
    assert w.empty and w.uncommitted() == []


def test_commits_stay_in_log_order_and_a_batch_done_early_is_flagged_once() -> None:
    w = window(batch_limit=1)
    for offset in range(3):
        w.add(entry(offset), event(offset), logged_at=0.0)
    slow, fast, stopped = w.cut(), w.cut(), w.cut()
    pending: Future[bool] = Future()
    slow.start(pending)
    fast.start(ended(True))
    stopped.start(ended(False))
    assert w.note_ended() is None
    assert (slow.state, fast.state, stopped.state) == (
        SlotState.RUNNING, SlotState.DONE, SlotState.HELD,
    )  # fmt: skip
    assert w.settle_front() == []  # the first is still out
    assert w.done_behind() == [fast]
    w.flag(w.done_behind())
    assert fast.state is SlotState.FLAGGED and w.done_behind() == []
    assert w.any_held() and w.running() == 1 and w.buffered_events() == 2
    pending.set_result(True)
    w.note_ended()
    assert [e.offset for e in w.settle_front()] == [0, 1]  # the held third waits
    assert [e.offset for e in w.uncommitted()] == [2]


def test_a_job_that_raised_is_held_and_its_error_returned() -> None:
    w = window(batch_limit=1)
    w.add(entry(0), event(0), logged_at=0.0)
    slot = w.cut()
    failed: Future[bool] = Future()
    failed.set_exception(RuntimeError("boom"))
    slot.start(failed)
    error = w.note_ended()
    assert isinstance(error, RuntimeError) and slot.held and w.settle_front() == []


def test_in_flight_marks_that_fail_leave_the_events_batched_and_then_sent_once(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    """GA4-like (no dedup): events are marked in flight before their request. A mark that
    fails must not drop the cut batches: they go once the store is back, each once."""
    destination = TinyDestination("ga", f"{platform.base_url}/events", dedupes=False)
    delivery = runner(pipeline, clock, destination, settings("ga", batch_max_wait_secs=60))
    store = pipeline.deadletters
    short_busy_timeout(store._conn)  # type: ignore[attr-defined]
    try:
        ingest(pipeline, clock, "e1")
        drain(delivery)  # past the first read of the partition (in-flight recovery)
        ingest(pipeline, clock, "e2", "e3")
        delivery.run_once()  # read and batched, not due for a minute
        path = store_path(Path(pipeline.settings.server.data_dir))
        with locked(path), pytest.raises(StoreError):
            delivery.flush()  # cut now, and the mark fails
        assert platform.received() == ["e1"]
        drain(delivery)
        assert sorted(platform.received()) == ["e1", "e2", "e3"]
        assert delivery.health()["lag_events"] == 0
    finally:
        delivery.stop()
