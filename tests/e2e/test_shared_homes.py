"""Rejects and dead letters have one home in distributed mode (Kafka + Redis + S3).

Three `convtrack serve` processes on three data dirs stand for three machines:
two collectors and a worker (process, store, deliver). What a collector keeps
or a deliver process dead-letters is seen, and acted on, from any of them.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import Forwarded, Outcome
from convtrack.deliver.inflight import InFlight, unknown_fate_reason
from convtrack.deliver.runner import DeliveryRunner
from convtrack.devservices.kafka import KafkaBroker
from convtrack.log.base import LogEntry
from convtrack.runtime.embedded import Pipeline
from convtrack.runtime.locks import exclusive_roles
from convtrack.store.deadletters.base import DeadLetterStore
from convtrack.testing import wait_for
from convtrack.testing.events import forwarded
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.deliver.test_webhook import SECRET, SECRET_ENV, Receiver
from tests.e2e.test_roles_distributed import cli, distributed_env
from tests.runtime.test_roles import purchase, terminate_within
from tests.support.deliverkit import (
    START_US,
    TinyDestination,
    TinyPlatform,
    drain,
    ingest,
    open_pipeline,
    settings,
)
from tests.support.s3_fixtures import S3Target

pytestmark = pytest.mark.slow

REFUSED = (400, {}, b'{"error":"unknown campaign"}')


def hook_config(path: Path, receiver: Receiver) -> Path:
    # Refusals of single events, one request each, must not open the circuit (it would
    # hold the replay for its cooldown).
    table = {"kind": "webhook", "name": "hook", "endpoint": receiver.url,
             "secret_env": SECRET_ENV, "batch_max_wait_secs": 0,
             "breaker_threshold": 100}  # fmt: skip
    lines = ["[[destinations]]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def admin_get(server: ServerProcess, path: str) -> dict[str, Any]:
    answer = httpx.get(server.url + path, headers=auth(ADMIN_KEY), timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def reject_ids(server: ServerProcess) -> list[str]:
    return sorted(r["event_id"] for r in admin_get(server, "/v1/rejects?limit=100")["items"])


def dead_letter_ids(server: ServerProcess) -> list[str]:
    return sorted(d["event_id"] for d in admin_get(server, "/v1/dead-letters")["items"])


def sent_ok(receiver: Receiver, answered_before: int) -> list[str]:
    """Event ids in the requests the receiver took after its first ``answered_before``."""
    with receiver.lock:
        bodies = [r["body"] for r in receiver.requests[answered_before:]]
    return sorted(e["event_id"] for body in bodies for e in json.loads(body)["events"])


def test_rejects_and_dead_letters_are_shared_by_every_machine(
    kafka_service: KafkaBroker,
    redis_url: str,
    s3_bucket: S3Target,
    server_factory: ServerFactory,
    tmp_path: Path,
) -> None:
    receiver = Receiver(SECRET)
    receiver.plan = [REFUSED] * 50  # the platform refuses until the operator fixes it
    config = hook_config(tmp_path / "convtrack.toml", receiver)
    env = {**distributed_env(kafka_service, redis_url, s3_bucket), SECRET_ENV: SECRET}
    args = ["--config", str(config), "--roles"]
    collectors = [server_factory(env, name=f"collector{n}", args=[*args, "collect"])
                  for n in (1, 2)]  # fmt: skip
    worker = server_factory(env, name="worker", args=[*args, "process,store,deliver"])
    try:
        for process in (*collectors, worker):
            process.start(timeout_secs=30)
        bad = [f"bad-{n}" for n in range(4)]
        for n, event_id in enumerate(bad):  # two rejects on each machine
            body = {**purchase(event_id), "currency": "eur"}
            answer = httpx.post(collectors[n % 2].url + "/v1/track", json=body,
                                headers=auth(WRITE_KEY))  # fmt: skip
            assert answer.status_code == 400, answer.text
        for collector in collectors:
            wait_for("every reject on each collector", lambda c=collector: reject_ids(c) == bad)
            assert admin_get(collector, "/v1/rejects?limit=1")["total"] == len(bad)

        good = [f"order-{n}" for n in range(3)]
        for event_id in good:
            answer = httpx.post(collectors[0].url + "/v1/track", json=purchase(event_id),
                                headers=auth(WRITE_KEY))  # fmt: skip
            assert answer.status_code == 202, answer.text
        # Dead-lettered by the worker, listed by the other collector.
        wait_for("the dead letters", lambda: dead_letter_ids(collectors[1]) == good, 30)
        assert dead_letter_ids(collectors[0]) == good
        with receiver.lock:
            receiver.plan = []  # fixed: the platform takes them now
            answered_before = len(receiver.requests)
        replay = httpx.post(collectors[1].url + "/v1/dead-letters/replay",
                            json={"destination": "hook"}, headers=auth(ADMIN_KEY))  # fmt: skip
        assert replay.json() == {"replayed": len(good)}
        wait_for("the replay", lambda: sent_ok(receiver, answered_before) == good, 30)
        wait_for("the dead letters gone", lambda: dead_letter_ids(collectors[0]) == [])
        assert sent_ok(receiver, answered_before) == good  # each sent once

        for process in (*collectors, worker):
            assert terminate_within(process) == 0  # the worker flushes the lake
        done = cli(env, "query", "--data-dir", str(worker.data_dir), "--format", "json",
                   "select event_id from rejects")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(row["event_id"] for row in json.loads(done.stdout)) == bad  # once each
    finally:
        receiver.server.shutdown()


def test_the_store_role_locks_its_data_dir_only_where_rejects_are_a_local_file() -> None:
    def exclusive(log: str, hot: str) -> list[str]:
        sections: dict[str, Any] = {"log": {"kind": log}, "hot": {"kind": hot}}
        if log == "kafka":
            sections["log"]["kafka_bootstrap"] = "localhost:9092"
        if hot == "redis":
            sections["hot"]["redis_url"] = "redis://localhost:6379/0"
        settings = load_settings(environ={}, overrides=sections)
        return exclusive_roles(settings, ["collect", "process", "store", "deliver"])

    assert exclusive("kafka", "redis") == []  # any number of store processes, anywhere
    assert exclusive("kafka", "sqlite") == ["process", "store"]
    assert exclusive("sqlite", "redis") == ["process", "store", "deliver"]
    assert exclusive("sqlite", "sqlite") == ["process", "store", "deliver"]


# -- in-flight markers across machines (GA4/Slack: never resent) --------------------------


class _Machines:
    """One log (the processed topic) and a dead-letter store per machine, all on one Redis."""

    def __init__(self, pipeline: Pipeline, clock: ManualClock, url: str, prefix: str) -> None:
        self.pipeline, self.clock, self.url, self.prefix = pipeline, clock, url, prefix
        self.stores: list[DeadLetterStore] = []

    def store(self) -> DeadLetterStore:
        from convtrack.store.deadletters.redis import RedisDeadLetterStore

        self.stores.append(RedisDeadLetterStore(self.url, prefix=self.prefix))
        return self.stores[-1]

    def runner(self, destination: TinyDestination, store: DeadLetterStore) -> DeliveryRunner:
        return DeliveryRunner(
            destination=destination, settings=settings(),
            consumer=self.pipeline.processed.consumer("deliver-tiny"), deadletters=store,
            clock=self.clock, metrics=self.pipeline.metrics, sleep=self.clock.advance,
            rng=random.Random(7), default_granted=True,
        )  # fmt: skip


@pytest.fixture
def machines(tmp_path: Path, redis_url: str) -> Iterator[_Machines]:
    clock = ManualClock(start_us=START_US)
    pipeline = open_pipeline(tmp_path, clock)
    made = _Machines(pipeline, clock, redis_url, "t" + uuid.uuid4().hex[:12])
    yield made
    for store in made.stores:
        store.close()
    pipeline.close()


class _DiesOnAnswer(TinyDestination):
    """The platform takes the batch; the process dies before reading the answer."""

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        raise _Crash


class _Crash(BaseException):
    pass


def test_a_deliver_process_on_another_machine_does_not_resend_a_crashed_ones_sends(
    machines: _Machines,
) -> None:
    with TinyPlatform() as platform:
        url = f"{platform.base_url}/events"
        ingest(machines.pipeline, machines.clock, "e1", "e2")
        crashed = machines.runner(_DiesOnAnswer("tiny", url, dedupes=False), machines.store())
        with pytest.raises(_Crash):
            drain(crashed)
        crashed.stop()  # committed nothing: e1 and e2 are read again, elsewhere
        assert platform.accepted == ["e1", "e2"]
        ingest(machines.pipeline, machines.clock, "e3")
        elsewhere = machines.store()
        dest = TinyDestination("tiny", url, dedupes=False)
        taker = machines.runner(dest, elsewhere)
        try:
            drain(taker)
        finally:
            taker.stop()
    assert dest.built == [["e3"]]  # e1 and e2 not sent twice
    letters = elsewhere.items("tiny")
    assert [d.event.event_id for d in letters] == ["e1", "e2"]
    assert {d.last_answer for d in letters} == {unknown_fate_reason("tiny")}
    assert elsewhere.in_flight("tiny") == []


def test_a_peers_sends_on_other_partitions_are_left_alone(machines: _Machines) -> None:
    """Sharing the markers must not make a starting process dead-letter a live peer's
    sends: it looks only at the partitions it reads."""
    peer_store = machines.store()
    peer_event = forwarded("peer-1", 5, 40)
    peer_store.mark_in_flight("tiny", [peer_event])  # a live peer, partition 5
    with TinyPlatform() as platform:
        ingest(machines.pipeline, machines.clock, "e1")
        dest = TinyDestination("tiny", f"{platform.base_url}/events", dedupes=False)
        starting = machines.runner(dest, machines.store())
        try:
            drain(starting)
        finally:
            starting.stop()
    assert dest.built == [["e1"]]
    assert peer_store.in_flight("tiny") == [(peer_event, False)] and peer_store.total() == 0


def test_a_partition_that_comes_back_is_read_as_new_even_at_the_same_offset(
    machines: _Machines,
) -> None:
    def entries(partition: int, *offsets: int) -> list[LogEntry]:
        return [LogEntry(partition, o, "k", b"", 0) for o in offsets]

    inflight = InFlight(machines.store(), "tiny", enabled=True)
    both = {0: 1, 1: 2}  # partition -> the number of the assignment that gave it
    assert inflight.jumped(entries(0, 0, 1) + entries(1, 7), owned=both) == {0, 1}  # first
    assert inflight.jumped(entries(0, 2, 3), owned=both) == set()  # continued
    assert inflight.jumped(entries(0, 4, 5), owned=both) == set()
    assert inflight.jumped(entries(1, 9), owned=both) == {1}  # a gap: a rewind or a move
    assert inflight.jumped(entries(1, 10), owned=both) == set()
    assert inflight.jumped([], owned={1: 2}) == set()  # partition 0 was taken away...
    assert inflight.jumped(entries(0, 6), owned={0: 3, 1: 2}) == {0}  # ...and came back
    # Taken away and given back between two reads (one poll): a new assignment number.
    assert inflight.jumped(entries(0, 7), owned={0: 3, 1: 2}) == set()
    assert inflight.jumped(entries(0, 8), owned={0: 4, 1: 2}) == {0}
    assert InFlight(machines.store(), "x", enabled=False).jumped(entries(0, 0)) == set()
    sqlite_log = InFlight(machines.store(), "y", enabled=True)  # no owners to ask: offsets only
    assert sqlite_log.jumped(entries(0, 0)) == {0}
    assert sqlite_log.jumped(entries(0, 1)) == set()
