"""The event-log contract: every EventLog implementation (SQLite, Kafka) must pass it.

Subclass ``LogContract`` and provide ``open_log(path)``; ``reopen`` must
return a log that sees everything a previous instance made durable.

What the port promises, and no more: offsets increase within a partition
(they are neither global nor known to start at 0 or to be contiguous across
partitions); records with one key share a partition, in append order; which
partition a key lands in is the log's choice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

from convtrack.log.base import EventLog, LogEntry, LogRecord, next_positions


def append(log: EventLog, records: list[LogRecord]) -> list[int]:
    return asyncio.run(log.append(records))


def drain(
    log: EventLog, group: str, limit: int = 100_000, timeout_secs: float = 30.0
) -> list[LogEntry]:
    """Read the group's entries until caught up (lag 0): an empty poll alone proves
    nothing, as a networked log may still be fetching."""
    consumer = log.consumer(group)
    try:
        out: list[LogEntry] = []
        deadline = time.monotonic() + timeout_secs
        while len(out) < limit and time.monotonic() < deadline:
            batch = consumer.poll(1000, 0.2)
            out.extend(batch)
            if not batch and consumer.lag().events == 0:
                break
        return out
    finally:
        consumer.close()


def rec(i: int, key: str = "k") -> LogRecord:
    return LogRecord(key, f"payload-{i}".encode())


class LogContract(ABC):
    @abstractmethod
    def open_log(self, path: Path) -> EventLog: ...

    @pytest.fixture
    def log(self, tmp_path: Path) -> EventLog:
        opened = self.open_log(tmp_path)
        yield opened  # type: ignore[misc]
        opened.close()

    def test_append_returns_increasing_offsets_per_partition(self, log: EventLog) -> None:
        first = append(log, [rec(0), rec(1)])
        second = append(log, [rec(2)])
        assert first[0] < first[1] < second[0]

    def test_empty_append_is_a_no_op(self, log: EventLog) -> None:
        assert append(log, []) == []

    def test_consumer_reads_everything_in_order_with_payloads(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(50)])
        entries = drain(log, "g")
        assert [e.payload for e in entries] == [f"payload-{i}".encode() for i in range(50)]
        assert all(e.key == "k" for e in entries)
        assert all(e.logged_at_us > 0 for e in entries)

    def test_commit_then_new_consumer_resumes_after_it(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(10)])
        consumer = log.consumer("g")
        got = consumer.poll(4, 1.0)
        assert len(got) == 4
        consumer.commit(next_positions(got))
        consumer.close()
        rest = drain(log, "g")
        assert [e.payload for e in rest] == [f"payload-{i}".encode() for i in range(4, 10)]

    def test_a_commit_handed_over_without_waiting_lands(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(6)])
        consumer = log.consumer("g")
        got = consumer.poll(3, 1.0)
        assert len(got) == 3
        consumer.commit(next_positions(got), wait=False)
        deadline = time.monotonic() + 30
        while consumer.committed() != next_positions(got):
            assert time.monotonic() < deadline, "the commit never landed"
            consumer.poll(1, 0.05)  # a networked log serves its callbacks while polling
            consumer.seek(next_positions(got))
        consumer.close()

    def test_uncommitted_entries_are_delivered_again(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(5)])
        consumer = log.consumer("g")
        assert len(consumer.poll(5, 1.0)) == 5
        consumer.close()  # crashed before committing
        assert len(drain(log, "g")) == 5

    def test_groups_are_independent(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(3)])
        a = log.consumer("a")
        a.commit(next_positions(a.poll(3, 1.0)))
        a.close()
        assert len(drain(log, "b")) == 3
        assert drain(log, "a") == []

    def test_poll_waits_for_new_data(self, log: EventLog) -> None:
        consumer = log.consumer("g")
        assert consumer.poll(10, 0.05) == []
        timer = threading.Timer(0.1, lambda: append(log, [rec(1)]))
        timer.start()
        got = consumer.poll(10, 5.0)
        timer.join()
        consumer.close()
        assert [e.payload for e in got] == [b"payload-1"]

    def test_seek_moves_the_position(self, log: EventLog) -> None:
        offsets = append(log, [rec(i) for i in range(6)])
        # One key, so one partition; which one is the log's choice (offsets are per partition).
        (partition,) = log.last_entries()
        consumer = log.consumer("g")
        consumer.seek({partition: offsets[3]})
        got = consumer.poll(10, 1.0)
        consumer.close()
        assert [e.payload for e in got] == [b"payload-3", b"payload-4", b"payload-5"]

    def test_lag_counts_unread_events(self, log: EventLog) -> None:
        append(log, [rec(i) for i in range(7)])
        consumer = log.consumer("g")
        assert consumer.lag().events == 7
        consumer.poll(3, 1.0)
        assert consumer.lag().events == 4
        consumer.poll(10, 1.0)
        assert consumer.lag().events == 0
        consumer.close()

    def test_concurrent_appends_share_commits_and_lose_nothing(self, log: EventLog) -> None:
        async def many() -> list[list[int]]:
            return await asyncio.gather(*(log.append([rec(i, f"u{i % 7}")]) for i in range(2000)))

        results = asyncio.run(many())
        # Offsets are unique per partition, and one key's records share a partition.
        for key in range(7):
            offsets = [r[0] for i, r in enumerate(results) if i % 7 == key]
            assert len(set(offsets)) == len(offsets)
        entries = drain(log, "g")
        assert len({(e.partition, e.offset) for e in entries}) == 2000
        assert {e.payload for e in entries} == {rec(i).payload for i in range(2000)}

    def test_appends_from_several_threads(self, log: EventLog) -> None:
        def worker(n: int) -> None:
            for i in range(50):
                append(log, [rec(n * 1000 + i)])

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        payloads = {e.payload for e in drain(log, "g")}
        assert len(payloads) == 200

    def test_durable_across_reopen(self, tmp_path: Path) -> None:
        first = self.open_log(tmp_path)
        append(first, [rec(i) for i in range(20)])
        consumer = first.consumer("g")
        consumer.commit(next_positions(consumer.poll(5, 1.0)))
        consumer.close()
        first.close()
        second = self.open_log(tmp_path)
        try:
            more = append(second, [rec(99)])
            entries = drain(second, "g")
            assert len(entries) == 16
            assert entries[-1].payload == b"payload-99"
            assert more[0] > max(e.offset for e in entries[:-1])
        finally:
            second.close()

    def test_status_reports_writable(self, log: EventLog) -> None:
        assert log.status().writable

    def test_append_blocking_from_a_thread(self, log: EventLog) -> None:
        results: list[list[int]] = []
        worker = threading.Thread(
            target=lambda: results.append(log.append_blocking([rec(1), rec(2)]))
        )
        worker.start()
        worker.join()
        assert len(results[0]) == 2
        assert [e.payload for e in drain(log, "g")] == [b"payload-1", b"payload-2"]

    def test_last_entries(self, log: EventLog) -> None:
        assert log.last_entries() == {}
        append(log, [rec(i) for i in range(3)])
        last = log.last_entries()
        assert [e.payload for e in last.values()] == [b"payload-2"]
