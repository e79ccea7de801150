"""Rejects and dead letters have one home in distributed mode (Kafka + Redis + S3).

Three `convtrack serve` processes on three data dirs stand for three machines:
two collectors and a worker (process, store, deliver). What a collector keeps
or a deliver process dead-letters is seen, and acted on, from any of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from convtrack.config import load_settings
from convtrack.devservices.kafka import KafkaBroker
from convtrack.runtime.locks import exclusive_roles
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.s3_fixtures import S3Target
from tests.test_roles import purchase, terminate_within, wait_for
from tests.test_roles_distributed import cli, distributed_env
from tests.test_webhook import SECRET, SECRET_ENV, Receiver

REFUSED = (400, {}, b'{"error":"unknown campaign"}')


def hook_config(path: Path, receiver: Receiver) -> Path:
    table = {"kind": "webhook", "name": "hook", "endpoint": receiver.url,
             "secret_env": SECRET_ENV, "batch_max_wait_secs": 0}  # fmt: skip
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
