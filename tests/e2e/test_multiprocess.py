"""Every role in processes of its own on Kafka, Redis and S3, with kills and restarts.

One collector, two processors and one store+deliver process, all `convtrack
serve --roles ...` children on real servers (tests/support/kafka_fixtures.py,
tests/support/redis_fixtures.py, tests/support/s3_fixtures.py). Load comes from several
threads, every fifth event sent twice. Afterwards the accepted events are
reconciled three ways: the Redis counters, the lake's rows (by event_id) and
the processed topic read through the first-copy rule. Without Java and Kafka's
jars these tests skip (see tests/support/kafka_fixtures.py for how to enable them).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from convtrack.clock import SystemClock
from convtrack.config import load_settings
from convtrack.devservices.kafka import KafkaBroker
from convtrack.log.base import LogEntry
from convtrack.log.published import FirstCopies
from convtrack.model.processed import decode_processed
from convtrack.runtime.backends import open_log
from convtrack.testing import wait_for
from tests.conftest import WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.e2e.test_roles_distributed import cli, distributed_env, lake_event_ids
from tests.runtime.test_roles import (
    DATE,
    conversions,
    conversions_if_available,
    purchase,
    terminate_within,
)
from tests.support.redis_fixtures import start_redis
from tests.support.s3_fixtures import S3Target

pytestmark = pytest.mark.slow

CAMPAIGN = "multi"


@dataclass
class Load:
    """Threads posting events to the collector, remembering every 202 and every 503."""

    url: str
    threads: int = 4
    accepted: set[str] = field(default_factory=set)
    unavailable: int = 0
    # Ids answered 503 (or not answered) that no later try got a 202 for. A 503 says
    # the log could not confirm the event in time, not that it was never written (a
    # produce that timed out may still land once the broker is back), so such an
    # event may be counted once; a real client retries it with the same id.
    unconfirmed: set[str] = field(default_factory=set)
    # Per thread: the longest stretch between the first 503 and the next 202.
    longest_gap_secs: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._run, args=(n,)) for n in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def _run(self, thread: int) -> None:
        sent = 0
        failing_since: float | None = None
        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set():
                event_id = f"mp-{thread}-{sent}"
                body = purchase(event_id, campaign=CAMPAIGN)
                for _ in range(2 if sent % 5 == 0 else 1):
                    try:
                        answer = client.post(
                            f"{self.url}/v1/track", json=body, headers=auth(WRITE_KEY)
                        )
                        status = answer.status_code
                    except httpx.TransportError:
                        status = 0
                    if status == 202:
                        with self._lock:
                            self.accepted.add(event_id)
                            if failing_since is not None:
                                gap = time.monotonic() - failing_since
                                self.longest_gap_secs = max(self.longest_gap_secs, gap)
                        failing_since = None
                    else:
                        assert status == 503, f"unexpected answer {status}"
                        with self._lock:
                            self.unavailable += 1
                            self.unconfirmed.add(event_id)
                        if failing_since is None:
                            failing_since = time.monotonic()
                        self._stop.wait(0.05)  # a client's pause before retrying
                sent += 1

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def wait_for_more(self, what: str, more: int, timeout_secs: float = 60) -> None:
        target = self.count() + more
        wait_for(what, lambda: self.count() >= target, timeout_secs)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)


@dataclass
class Cluster:
    env: dict[str, str]
    collector: ServerProcess
    processors: list[ServerProcess]
    store: ServerProcess
    extra_stores: list[ServerProcess] = field(default_factory=list)

    def start(self) -> None:
        for server in self.all():
            server.start(timeout_secs=60)

    def all(self) -> list[ServerProcess]:
        return [self.collector, *self.processors, self.store, *self.extra_stores]


def cluster(
    server_factory: ServerFactory,
    kafka: KafkaBroker,
    redis_url: str,
    s3: S3Target,
    extra_stores: int = 0,
) -> Cluster:
    env = distributed_env(kafka, redis_url, s3)
    env["CONVTRACK_LOG_KAFKA_PARTITIONS"] = "4"
    return Cluster(
        env=env,
        collector=server_factory(env, name="collector", args=["--roles", "collect"]),
        processors=[
            server_factory(env, name=f"processor-{n}", args=["--roles", "process"])
            for n in range(2)
        ],
        store=server_factory(env, name="store", args=["--roles", "store,deliver"]),
        extra_stores=[
            server_factory(env, name=f"store-{n}", args=["--roles", "store"])
            for n in range(extra_stores)
        ],
    )


def read_processed(env: dict[str, str], data_dir: Path) -> list[LogEntry]:
    """Every record of the processed topic, from its start to its end now."""
    settings = load_settings(environ=env, overrides={"server": {"data_dir": str(data_dir)}})
    log = open_log(settings, "processed", SystemClock())
    try:
        ends = {p: e.offset + 1 for p, e in log.last_entries().items()}
        consumer = log.consumer(f"reconcile-{time.monotonic_ns()}")
        got: list[LogEntry] = []
        read: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while any(read.get(p, 0) < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"read {read} of {ends}"
            for entry in consumer.poll(5000, 0.5):
                got.append(entry)
                read[entry.partition] = entry.offset + 1
        consumer.close()
        return got
    finally:
        log.close()


@dataclass
class Reconciled:
    counted: int
    lake_ids: list[str]
    first_copies: list[str]
    raw_records: int
    misrouted: int


def reconcile(c: Cluster, load: Load, count_url: str) -> Reconciled:
    expected = len(load.accepted)

    # A killed member's partitions move on after the group's session timeout (10 s).
    def all_counted() -> bool:
        counted = conversions_if_available(count_url, CAMPAIGN)
        return counted is not None and counted >= expected

    wait_for("every accepted event counted", all_counted, 120)
    counted = conversions(count_url, CAMPAIGN)
    records = read_processed(c.env, c.store.data_dir)
    rule = FirstCopies()
    kept: list[str] = []
    misrouted = 0
    for entry in records:
        event = decode_processed(entry.payload)
        misrouted += event.source_partition != entry.partition
        if rule.keep(entry.partition, event):
            kept.append(event.event.event_id)
    for server in c.all():
        assert terminate_within(server) == 0  # the store process flushes the lake
    return Reconciled(
        counted=counted,
        lake_ids=lake_event_ids(c.env, c.store.data_dir),
        first_copies=kept,
        raw_records=len(records),
        misrouted=misrouted,
    )


def assert_exactly_once(result: Reconciled, load: Load) -> None:
    """Every 202 counted once; an event never confirmed may be counted, at most once."""
    maybe = load.unconfirmed - load.accepted
    counted = set(result.first_copies)
    assert result.misrouted == 0  # processed partition p holds source partition p only
    doubled = [k for k, n in Counter(result.first_copies).items() if n > 1]
    assert doubled == []
    assert load.accepted <= counted, sorted(load.accepted - counted)[:10]
    assert counted - load.accepted <= maybe, sorted(counted - load.accepted - maybe)[:10]
    assert result.counted == len(counted)
    assert len(result.lake_ids) == len(set(result.lake_ids)) == len(counted)
    assert set(result.lake_ids) == counted


def test_sigkill_of_a_processor_under_load_neither_loses_nor_doubles(
    kafka_service: KafkaBroker, redis_url: str, s3_bucket: S3Target, server_factory: ServerFactory
) -> None:
    # A second store process shares the lake's partitions; it is killed mid-run too.
    c = cluster(server_factory, kafka_service, redis_url, s3_bucket, extra_stores=1)
    c.start()
    load = Load(c.collector.url)
    load.start()
    try:
        load.wait_for_more("load before the kill", 200)
        c.extra_stores[0].kill()
        c.processors[0].kill()
        load.wait_for_more("load while one processor is down", 200)
        c.processors[0].start(timeout_secs=60)  # rejoins: partitions move back (a rebalance)
        c.extra_stores[0].start(timeout_secs=60)
        load.wait_for_more("load after the restart", 200)
        c.processors[1].kill()  # and the other one, while it owns partitions again
        load.wait_for_more("load after the second kill", 150)
        c.processors[1].start(timeout_secs=60)
        load.wait_for_more("load after the second restart", 150)
    finally:
        load.stop()
    result = reconcile(c, load, c.collector.url)
    print(
        f"accepted={len(load.accepted)} processed_records={result.raw_records}"
        f" late_copies={result.raw_records - len(result.first_copies)}"
    )
    assert_exactly_once(result, load)
    done = cli(c.env, "reconcile", "--date", DATE, "--data-dir", str(c.store.data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broker_restart_under_load_loses_nothing(
    kafka_service: KafkaBroker, redis_url: str, s3_bucket: S3Target, server_factory: ServerFactory
) -> None:
    c = cluster(server_factory, kafka_service, redis_url, s3_bucket)
    c.start()
    load = Load(c.collector.url)
    load.start()
    try:
        load.wait_for_more("load before the outage", 200)
        stopping = time.monotonic()
        kafka_service.stop()
        stopped = time.monotonic()
        wait_for("a 503 during the outage", lambda: load.unavailable > 0, 60)
        kafka_service.start()
        outage = (stopping, stopped, time.monotonic())
        load.wait_for_more("load after the outage", 300, timeout_secs=120)
    finally:
        load.stop()
        if not kafka_service.is_running():
            kafka_service.start()
    result = reconcile(c, load, c.collector.url)
    print(
        f"broker restart: accepted={len(load.accepted)} answered_503={load.unavailable}"
        f" longest_gap_secs={load.longest_gap_secs:.2f} broker_stop_secs="
        f"{outage[1] - outage[0]:.2f} broker_down_secs={outage[2] - outage[1]:.2f}"
    )
    assert_exactly_once(result, load)


def test_a_redis_kill_under_load_is_recounted_without_drift(
    kafka_service: KafkaBroker, s3_bucket: S3Target, server_factory: ServerFactory, tmp_path: Path
) -> None:
    # Redis persists with appendfsync everysec: a SIGKILL may lose its last second of
    # applied batches (effects and positions together); the processors notice the hot
    # store holds less than they read and count that stretch again.
    redis = start_redis(tmp_path / "redis")
    try:
        c = cluster(server_factory, kafka_service, redis.url, s3_bucket)
        c.start()
        load = Load(c.collector.url)
        load.start()
        try:
            load.wait_for_more("load before the kill", 300)
            pid = redis.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_for("Redis to die", lambda: not redis.is_running(), 10)
            load.wait_for_more("load while Redis is down", 200)
            redis.start()
            load.wait_for_more("load after the restart", 200)
        finally:
            load.stop()
        result = reconcile(c, load, c.collector.url)
    finally:
        redis.stop()
    print(
        f"redis kill: accepted={len(load.accepted)} counted={result.counted}"
        f" late_copies={result.raw_records - len(result.first_copies)}"
    )
    assert_exactly_once(result, load)
