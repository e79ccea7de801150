"""The roles in separate processes on Kafka, Redis and S3 (real servers from the fixtures)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.devservices.kafka import KafkaBroker
from convtrack.testing import wait_for
from tests.conftest import SERVER_KEY, WRITE_KEY, ServerFactory, auth
from tests.runtime.test_roles import DATE, ENV, conversions, purchase, terminate_within, track
from tests.support.s3_fixtures import S3Target

pytestmark = pytest.mark.slow


def distributed_env(broker: KafkaBroker, redis_url: str, s3: S3Target) -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {
        **ENV,
        "CONVTRACK_LOG_KIND": "kafka",
        "CONVTRACK_LOG_KAFKA_BOOTSTRAP": broker.bootstrap,
        "CONVTRACK_LOG_KAFKA_TOPIC_PREFIX": f"roles-{tag}",
        "CONVTRACK_LOG_KAFKA_PARTITIONS": "3",
        "CONVTRACK_HOT_KIND": "redis",
        "CONVTRACK_HOT_REDIS_URL": redis_url,
        "CONVTRACK_HOT_REDIS_PREFIX": f"roles-{tag}",
        "CONVTRACK_COLD_URI": s3.uri,
        **s3.env,
    }


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "convtrack", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def lake_event_ids(env: dict[str, str], data_dir: Path) -> list[str]:
    import json

    done = cli(
        env, "query", "--data-dir", str(data_dir), "--format", "json", "select event_id from events"
    )
    if done.returncode != 0:
        return []
    return [str(row["event_id"]) for row in json.loads(done.stdout)]


def test_collector_and_worker_on_kafka_redis_s3_count_exactly_once_through_a_kill(
    kafka_service: KafkaBroker, redis_url: str, s3_bucket: S3Target, server_factory: ServerFactory
) -> None:
    env = distributed_env(kafka_service, redis_url, s3_bucket)
    # Separate data dirs: on these backends the two processes share no local file.
    collector = server_factory(env, name="collector", args=["--roles", "collect"])
    worker = server_factory(env, name="worker", args=["--roles", "process,store,deliver"])
    collector.start(timeout_secs=30)
    worker.start(timeout_secs=30)
    accepted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(thread: int) -> None:
        sent = 0
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                event_id = f"kafka-{thread}-{sent}"
                body = purchase(event_id, campaign="dist")
                for _ in range(2 if sent % 5 == 0 else 1):  # every 5th is sent twice
                    answer = client.post(
                        f"{collector.url}/v1/track", json=body, headers=auth(WRITE_KEY)
                    )
                    if answer.status_code == 202:
                        with lock:
                            accepted.add(event_id)
                sent += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for("load before the kill", lambda: len(accepted) >= 150, 60)
        worker.kill()
        killed_at = len(accepted)
        wait_for("load while the worker is down", lambda: len(accepted) >= killed_at + 100, 60)
        worker.start(timeout_secs=30)
        wait_for("load after the restart", lambda: len(accepted) >= killed_at + 250, 60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    expected = len(accepted)
    # A killed member's partitions move to the new one after the group's session timeout.
    wait_for(
        "every accepted event counted", lambda: conversions(collector.url, "dist") >= expected, 90
    )
    assert conversions(collector.url, "dist") == expected
    ready = httpx.get(f"{worker.url}/readyz").json()
    assert ready["degraded"] == [] and ready["hot"]["kind"] == "redis", ready
    assert terminate_within(collector) == 0
    assert terminate_within(worker) == 0  # flushes the lake to S3

    lake_ids = lake_event_ids(env, worker.data_dir)
    assert len(lake_ids) == len(set(lake_ids)) == expected
    assert set(lake_ids) == accepted
    done = cli(env, "reconcile", "--date", DATE, "--data-dir", str(worker.data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_hot_store_that_is_down_is_named_and_everything_recovers(
    kafka_service: KafkaBroker, s3_bucket: S3Target, server_factory: ServerFactory, tmp_path: Path
) -> None:
    from tests.support.redis_fixtures import require_redis

    require_redis()
    from convtrack.devservices import RedisServer

    redis = RedisServer(tmp_path / "redis")  # its URL (a free port) is known before it starts
    env = distributed_env(kafka_service, redis.url, s3_bucket)
    collector = server_factory(env, name="collector", args=["--roles", "collect"])
    worker = server_factory(env, name="worker", args=["--roles", "process,store,deliver"])
    # Nothing listens at the Redis URL yet: both processes start and say so.
    collector.start(timeout_secs=30)
    worker.start(timeout_secs=30)
    try:
        wait_for("the collector to name the hot store", lambda: _degraded(collector.url) != [])
        ready = httpx.get(f"{collector.url}/readyz")
        body = ready.json()
        # The log still takes events durably: the collector stays ready for ingest.
        assert ready.status_code == 200 and body["log"]["writable"] is True
        assert "hot" in body["degraded"] and body["hot"]["reachable"] is False
        assert "Redis" in body["hot"]["detail"] or "Connection" in body["hot"]["detail"]
        ids = [f"while-down-{i}" for i in range(20)]
        for event_id in ids:
            assert track(collector.url, purchase(event_id, campaign="down")).status_code == 202
        stats = httpx.get(
            f"{collector.url}/v1/stats/conversions",
            params={"campaign_id": "down", "date": DATE},
            headers=auth(SERVER_KEY),
            timeout=30,
        )
        assert stats.status_code == 503 and int(stats.headers["retry-after"]) >= 1
        wait_for("the worker to be unready", lambda: _status(worker.url) == 503, 30)
        worker_body = httpx.get(f"{worker.url}/readyz").json()
        assert "hot" in worker_body["degraded"], worker_body

        redis.start()  # the backend returns: everything catches up by itself
        wait_for("the counters", lambda: _conversions_or_none(collector.url) == len(ids), 90)
        wait_for("the worker to be ready", lambda: _status(worker.url) == 200, 30)
        assert _degraded(collector.url) == []
    finally:
        assert terminate_within(collector) == 0
        assert terminate_within(worker) == 0
        redis.stop()


def _status(url: str) -> int:
    return httpx.get(f"{url}/readyz", timeout=10).status_code


def _degraded(url: str) -> list[str]:
    body: dict[str, Any] = httpx.get(f"{url}/readyz", timeout=10).json()
    return list(body["degraded"])


def _conversions_or_none(url: str) -> int | None:
    answer = httpx.get(
        f"{url}/v1/stats/conversions",
        params={"campaign_id": "down", "date": DATE},
        headers=auth(SERVER_KEY),
        timeout=30,
    )
    return int(answer.json()["conversions"]) if answer.status_code == 200 else None


def test_processes_started_before_kafka_answer_503_then_work_by_themselves(
    kafka_service: KafkaBroker, redis_url: str, s3_bucket: S3Target, server_factory: ServerFactory
) -> None:
    from tests.conftest import free_port
    from tests.support.tcp_forward import TcpForwarder

    port = free_port()  # Kafka's address, where nothing listens yet
    env = {**distributed_env(kafka_service, redis_url, s3_bucket)}
    env["CONVTRACK_LOG_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    collector = server_factory(env, name="collector", args=["--roles", "collect"])
    worker = server_factory(env, name="worker", args=["--roles", "process,store,deliver"])
    collector.start(timeout_secs=10)  # alive within the contract's 10 s, Kafka or not
    worker.start(timeout_secs=10)
    forwarder: TcpForwarder | None = None
    try:
        ready = httpx.get(f"{collector.url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert "waiting for the Kafka cluster" in ready.json()["log"]["detail"]
        refused = track(collector.url, purchase("before-kafka", campaign="late"))
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "unavailable"
        assert _status(worker.url) == 503

        forwarder = TcpForwarder(port, kafka_service.bootstrap)  # the cluster comes up
        wait_for("the collector to be ready", lambda: _status(collector.url) == 200, 60)
        # The client retries what got a 503, as Retry-After told it to.
        assert track(collector.url, purchase("before-kafka", campaign="late")).status_code == 202
        wait_for("the worker to count it", lambda: conversions(collector.url, "late") == 1, 60)
        wait_for("the worker to be ready", lambda: _status(worker.url) == 200, 30)
    finally:
        assert terminate_within(collector) == 0
        assert terminate_within(worker) == 0
        if forwarder is not None:
            forwarder.close()


def test_a_processed_topic_with_other_partitions_than_the_events_is_refused(
    kafka_service: KafkaBroker, redis_url: str, s3_bucket: S3Target, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient

    from convtrack.log.kafka_client import client_settings
    from convtrack.log.kafka_topic import ensure_topic

    env = distributed_env(kafka_service, redis_url, s3_bucket)
    prefix = env["CONVTRACK_LOG_KAFKA_TOPIC_PREFIX"]
    admin = AdminClient(client_settings(kafka_service.bootstrap, "test-admin"))
    assert ensure_topic(admin, f"{prefix}.events", 3, 1, 30) == 3
    assert ensure_topic(admin, f"{prefix}.processed", 2, 1, 30) == 2
    done = cli(env, "serve", "--roles", "process", "--port", "0", "--data-dir", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "3 partitions but the processed log has 2" in done.stderr
