"""The Kafka log against the log contract, on a real broker, plus what only it promises."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.clock import ManualClock, SystemClock
from convtrack.config import LogSettings
from convtrack.devservices.kafka import KafkaBroker
from convtrack.errors import ConfigError, LogError, LogUnavailable
from convtrack.log.base import EventLog, LogEntry, LogLag, LogRecord, next_positions
from convtrack.log.kafka import KafkaLog
from convtrack.log.kafka_client_log import client_log, install_client_log_filter
from convtrack.observe.logs import RepeatFilter
from convtrack.testing import wait_for
from tests.conftest import free_port
from tests.support.contract.log_contract import LogContract, append, drain, rec
from tests.support.tcp_forward import TcpForwarder

PARTITIONS = 4


def open_kafka_log(broker: KafkaBroker, prefix: str, **overrides: object) -> KafkaLog:
    settings: dict[str, object] = {
        "topic": f"{prefix}.events",
        "group_prefix": prefix,
        "partitions": PARTITIONS,
        "replication": 1,
        "linger_ms": 2.0,
        "clock": SystemClock(),
        **overrides,
    }
    return KafkaLog(broker.bootstrap, **settings)  # type: ignore[arg-type]


def prefix_of(path: Path) -> str:
    """A topic prefix of its own per test; the same one when a test reopens its log."""
    return "t" + hashlib.sha256(str(path).encode()).hexdigest()[:12]


class TestKafkaLogContract(LogContract):
    @pytest.fixture(autouse=True)
    def _broker(self, kafka_service: KafkaBroker) -> None:
        self.broker = kafka_service

    def open_log(self, path: Path) -> EventLog:
        return open_kafka_log(self.broker, prefix_of(path))


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def prefix(tmp_path: Path, kafka_service: KafkaBroker) -> str:
    return prefix_of(tmp_path)


@pytest.fixture
def kafka_log(kafka_service: KafkaBroker, prefix: str) -> Iterator[KafkaLog]:
    opened = open_kafka_log(kafka_service, prefix)
    yield opened
    opened.close()


# -- what only the Kafka log promises -------------------------------------------------


def test_from_settings_names_topics_and_groups(kafka_service: KafkaBroker, prefix: str) -> None:
    settings = LogSettings(
        kind="kafka",
        kafka_bootstrap=kafka_service.bootstrap,
        kafka_topic_prefix=prefix,
        kafka_partitions=3,
        kafka_linger_ms=1.0,
    )
    log = KafkaLog.from_settings(settings, stream="processed", clock=SystemClock())
    try:
        assert log.topic == f"{prefix}.processed"
        assert log.partitions == 3
        offsets = append(log, [rec(0), rec(1)])
        consumer = log.consumer("deliver-hook")
        consumer.commit({next(iter(log.last_entries())): offsets[-1] + 1})
        consumer.close()
        # The group is <prefix>.<group>: a plain client of that group sees the commit.
        from confluent_kafka import Consumer, TopicPartition

        plain = Consumer(
            {"bootstrap.servers": kafka_service.bootstrap, "group.id": f"{prefix}.deliver-hook"}
        )
        try:
            asked = [TopicPartition(f"{prefix}.processed", p) for p in range(3)]
            committed = {tp.offset for tp in plain.committed(asked, timeout=10) if tp.offset >= 0}
        finally:
            plain.close()
        assert committed == {offsets[-1] + 1}
    finally:
        log.close()
    with pytest.raises(ConfigError, match="stream"):
        KafkaLog.from_settings(settings, stream="clicks", clock=SystemClock())


def test_concurrent_creators_share_one_topic(kafka_service: KafkaBroker, prefix: str) -> None:
    opened: list[KafkaLog] = []
    threads = [
        threading.Thread(target=lambda: opened.append(open_kafka_log(kafka_service, prefix)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(opened) == 3
        assert {log.partitions for log in opened} == {PARTITIONS}
        # A later opener asking for more partitions keeps the topic as it is.
        again = open_kafka_log(kafka_service, prefix, partitions=PARTITIONS + 2)
        assert again.partitions == PARTITIONS
        again.close()
    finally:
        for log in opened:
            log.close()


def test_keys_keep_their_order_within_a_partition(kafka_log: KafkaLog) -> None:
    keys = [f"user-{n}" for n in range(24)]
    sent: dict[bytes, tuple[str, int]] = {}  # payload: (key, offset append returned)
    for round_ in range(10):
        records = [LogRecord(key, f"{key}/{round_}".encode()) for key in keys]
        for record, offset in zip(records, append(kafka_log, records), strict=True):
            sent[record.payload] = (record.key, offset)

    entries = drain(kafka_log, "order")
    assert len(entries) == len(sent)
    partitions_of: dict[str, set[int]] = {}
    sequence_of: dict[str, list[int]] = {}
    for entry in entries:
        key, offset = sent[entry.payload]
        assert entry.key == key
        assert entry.offset == offset  # append answered each record's own offset
        partitions_of.setdefault(key, set()).add(entry.partition)
        sequence_of.setdefault(key, []).append(int(entry.payload.split(b"/")[1]))
    assert all(len(p) == 1 for p in partitions_of.values())  # one key, one partition
    assert all(seq == list(range(10)) for seq in sequence_of.values())  # in append order
    assert len(set().union(*partitions_of.values())) > 1  # and keys spread over several


def test_two_members_of_a_group_split_the_partitions(kafka_log: KafkaLog) -> None:
    """Each member handles its own partitions; together they handle everything once."""
    before = [LogRecord(f"u{i}", f"early-{i}".encode()) for i in range(200)]
    after = [LogRecord(f"u{i}", f"late-{i}".encode()) for i in range(200)]
    append(kafka_log, before)
    handled: dict[str, list[bytes]] = {"a": [], "b": []}
    owned: dict[str, set[int]] = {"a": set(), "b": set()}
    strays: list[str] = []
    stop = threading.Event()

    def member(name: str) -> None:
        consumer = kafka_log.consumer("split")
        try:
            while not stop.is_set():
                batch = consumer.poll(50, 0.1)
                mine = consumer.assignment()
                owned[name] = set(mine)
                strays.extend(f"{name}:{e.partition}" for e in batch if e.partition not in mine)
                if not batch:
                    continue
                try:
                    consumer.commit(next_positions(batch))
                except LogError:
                    continue  # a rebalance refused the commit: redelivered, handled later
                handled[name].extend(e.payload for e in batch)
        finally:
            consumer.close()

    a = threading.Thread(target=member, args=("a",))
    b = threading.Thread(target=member, args=("b",))
    a.start()
    try:
        wait_for("the first member to read", lambda: len(handled["a"]) > 0, 30)
        b.start()
        wait_for(
            "the group to split the partitions",
            lambda: owned["a"] and owned["b"] and not owned["a"] & owned["b"],
            30,
        )
        append(kafka_log, after)
        everything = {r.payload for r in before + after}
        wait_for("every record", lambda: set(handled["a"]) | set(handled["b"]) >= everything, 30)
    finally:
        stop.set()
        a.join()
        if b.is_alive() or b.ident is not None:
            b.join()
    together = handled["a"] + handled["b"]
    assert sorted(together) == sorted(everything)  # exactly once
    assert handled["b"], "the second member got no partitions"
    assert owned["a"] | owned["b"] == set(range(PARTITIONS))
    assert strays == []  # never a record of a partition the member did not own


def test_a_partition_given_back_has_a_new_assignment_number(kafka_log: KafkaLog) -> None:
    """Deliveries tell a partition that was away (another owner may have sent from it)
    from one read on, even when it comes back where it left off."""
    first = kafka_log.consumer("epochs")
    try:
        wait_for("the first owner", lambda: len(first.assignment_epochs()) == PARTITIONS, 30)
        before = dict(first.assignment_epochs())
        second = kafka_log.consumer("epochs")
        try:

            def split() -> bool:
                first.poll(10, 0.05)
                second.poll(10, 0.05)
                return 0 < len(first.assignment_epochs()) < PARTITIONS

            wait_for("the group to split the partitions", split, 30)
            lent = set(range(PARTITIONS)) - set(first.assignment_epochs())
        finally:
            second.close()

        def all_back() -> bool:
            first.poll(10, 0.05)
            return set(first.assignment_epochs()) == set(range(PARTITIONS))

        wait_for("the partitions to come back", all_back, 30)
        after = first.assignment_epochs()
        assert lent and all(after[p] > before[p] for p in lent)
    finally:
        first.close()


def test_seek_before_assignment_applies_on_assignment(kafka_log: KafkaLog) -> None:
    offsets = append(kafka_log, [rec(i) for i in range(8)])
    (partition,) = kafka_log.last_entries()
    consumer = kafka_log.consumer("seeker")
    consumer.seek({partition: offsets[5]})
    got = consumer.poll(10, 5.0)
    consumer.seek({partition: offsets[1]})  # assigned now: moves at once
    again = consumer.poll(10, 5.0)
    consumer.close()
    assert [e.payload for e in got] == [rec(i).payload for i in (5, 6, 7)]
    assert [e.payload for e in again] == [rec(i).payload for i in range(1, 8)]


def test_close_closes_consumers_left_open(kafka_service: KafkaBroker, prefix: str) -> None:
    """A consumer its runner left open leaves the group when the log closes."""
    log = open_kafka_log(kafka_service, prefix)
    left_open = log.consumer("g")
    assert left_open.assignment() == set(range(PARTITIONS))
    log.close()
    with pytest.raises(LogError, match="closed"):
        left_open.poll(1, 0.1)
    again = open_kafka_log(kafka_service, prefix)
    successor = again.consumer("g")
    try:
        # It left: the successor gets every partition now, not after the session timeout.
        assert successor.assignment() == set(range(PARTITIONS))
    finally:
        successor.close()
        again.close()


def test_lag_in_events_and_seconds(kafka_service: KafkaBroker, prefix: str) -> None:
    clock = ManualClock(start_us=SystemClock().now_us())
    log = open_kafka_log(kafka_service, prefix, clock=clock)
    try:
        append(log, [LogRecord(f"u{i}", b"x") for i in range(12)])
        clock.advance(30)
        append(log, [LogRecord("late", b"y")])
        consumer = log.consumer("lagging")
        lag = consumer.lag()
        assert lag.events == 13
        assert 30.0 <= lag.seconds < 30.01  # the oldest unread record was appended 30 s ago
        assert log.lag({}) == lag  # nothing read: everything counts, from any thread

        drained: list[LogEntry] = []

        def caught_up() -> bool:
            drained.extend(consumer.poll(100, 0.2))
            return consumer.lag().events == 0

        wait_for("the consumer to catch up", caught_up, 30)
        assert len(drained) == 13
        assert consumer.lag() == LogLag(0, 0.0)
        ends = {p: e.offset + 1 for p, e in log.last_entries().items()}
        assert log.lag(ends) == LogLag(0, 0.0)
        consumer.close()
    finally:
        log.close()


def set_topic_config(broker: KafkaBroker, topic: str, name: str, value: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=10)


def test_a_log_opened_before_its_cluster_waits_unwritable_then_opens(
    kafka_service: KafkaBroker, prefix: str
) -> None:
    """A process may start before Kafka: the log opens at once, refuses appends with
    LogUnavailable (the collector's 503) and opens the topic when the cluster answers."""
    port = free_port()  # nothing listens here yet
    started = time.monotonic()
    log = KafkaLog(
        f"127.0.0.1:{port}",
        topic=f"{prefix}.events",
        group_prefix=prefix,
        partitions=PARTITIONS,
        replication=1,
        linger_ms=2.0,
        clock=SystemClock(),
    )
    forwarder: TcpForwarder | None = None
    try:
        assert time.monotonic() - started < 5.0  # never holds the start up
        status = log.status()
        assert not status.writable and "waiting for the Kafka cluster" in status.detail
        with pytest.raises(LogUnavailable):
            append(log, [rec(0)])
        with pytest.raises(LogError, match="waiting for the Kafka cluster"):
            log.consumer("late")
        with pytest.raises(LogError):
            log.partition_count()

        forwarder = TcpForwarder(port, kafka_service.bootstrap)  # the cluster comes up
        wait_for("the log to open its topic", lambda: log.status().writable, 30)
        assert log.partition_count() == PARTITIONS
        (offset,) = append(log, [rec(1)])
        entries = drain(log, "late")
        assert [(e.offset, e.payload) for e in entries] == [(offset, rec(1).payload)]
    finally:
        log.close()
        if forwarder is not None:
            forwarder.close()


def test_refused_delivery_fails_the_append_and_readiness_says_why(
    kafka_service: KafkaBroker, prefix: str
) -> None:
    """A record the broker refuses fails its whole append; nothing of it counts."""
    log = open_kafka_log(kafka_service, prefix, delivery_timeout_secs=2.0)
    try:
        set_topic_config(kafka_service, log.topic, "max.message.bytes", "2048")
        too_big = LogRecord("k", os.urandom(20_000))  # incompressible, over the topic's limit

        def refused() -> bool:
            try:
                append(log, [rec(0), too_big])
            except LogUnavailable:
                return True
            return False

        wait_for("the broker to refuse a record over the topic's limit", refused, 30)
        status = log.status()
        assert not status.writable
        assert "delivery failed" in status.detail
        assert append(log, [rec(1)])  # a later success clears it
        assert log.status().writable
    finally:
        log.close()


def test_broker_restart_under_load_loses_nothing(kafka_service: KafkaBroker, prefix: str) -> None:
    """Appends during the outage fail or succeed; every success is read exactly once."""
    log = open_kafka_log(kafka_service, prefix, delivery_timeout_secs=3.0)
    accepted: list[bytes] = []
    refused: list[bytes] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            records = [LogRecord(f"u{(n + i) % 13}", f"r{n + i}".encode()) for i in range(5)]
            n += 5
            try:
                log.append_blocking(records)
            except LogUnavailable:
                refused.extend(r.payload for r in records)
                stop.wait(0.02)  # a client's pause before retrying
                continue
            accepted.extend(r.payload for r in records)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for("appends before the outage", lambda: len(accepted) >= 100, 30)
        kafka_service.stop()
        wait_for("status to report the outage", lambda: "unreachable" in log.status().detail, 30)
        assert not log.status().writable
        wait_for("an append refused during the outage", lambda: len(refused) > 0, 30)
        kafka_service.start()
        wait_for("status to recover by itself", lambda: log.status().writable, 60)
        resumed = len(accepted)
        wait_for("appends after the outage", lambda: len(accepted) >= resumed + 100, 30)
    finally:
        stop.set()
        loader.join()
        if not kafka_service.is_running():
            kafka_service.start()
    counts = Counter(e.payload for e in drain(log, "verify", timeout_secs=60))
    log.close()
    assert all(counts[p] == 1 for p in accepted)  # nothing accepted is lost or doubled
    assert all(counts[p] <= 1 for p in refused)  # a refused one may have landed, once
    assert set(counts) <= set(accepted) | set(refused)


def test_librdkafka_repeats_are_passed_once_a_minute() -> None:
    clock = ManualClock()
    repeats = RepeatFilter(60.0, clock.monotonic)

    def passed(message: str) -> bool:
        return repeats.filter(logging.LogRecord("k", logging.ERROR, "f", 1, message, None, None))

    down = (
        "FAIL [convtrack-producer#producer-2] [thrd:127.0.0.1:9092/1]: Connect failed (after 0ms)"
    )
    assert passed(down)
    assert not passed(down.replace("producer-2", "producer-7").replace("0ms", "12ms"))
    assert passed("SESSTMOUT [convtrack.cold#consumer-3]: session timed out")  # another kind
    clock.advance(59.0)
    assert not passed(down)
    clock.advance(1.0)
    assert passed(down)


def test_the_librdkafka_filter_is_installed_by_the_log_not_by_an_import(
    kafka_log: KafkaLog,
) -> None:
    def installed() -> int:
        return sum(isinstance(f, RepeatFilter) for f in client_log.filters)

    assert installed() == 1  # put there when kafka_log was built
    install_client_log_filter()  # a second log in the process adds no second filter
    assert installed() == 1
    imported_only = subprocess.run(
        [
            sys.executable,
            "-c",
            "import convtrack.log.kafka, convtrack.log.kafka_client_log as c;"
            "print(len(c.client_log.filters))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported_only.stdout.strip() == "0"
