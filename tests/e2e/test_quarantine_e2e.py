"""``convtrack serve`` with a poison event and with a hot store that goes away mid-stream
(issue 12, items 1 and 4): the stream keeps counting, and a SIGTERM while a batch fails
exits at once without a flood of retries in the log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.testing import wait_for
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY, ServerFactory, auth
from tests.support.redis_fixtures import start_redis

pytestmark = pytest.mark.slow


def track(url: str, event_id: str, **kw: Any) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
            "value": 100, "currency": "EUR", "campaign_id": "spring", **kw}  # fmt: skip
    answer = httpx.post(f"{url}/v1/track", json=body, headers=auth(WRITE_KEY), timeout=10)
    assert answer.status_code == 202, answer.text


def counted(url: str) -> int:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    answer = httpx.get(f"{url}/v1/stats/conversions?date={date}&campaign_id=spring",
                       headers=auth(SERVER_KEY), timeout=10)  # fmt: skip
    return int(answer.json()["conversions"]) if answer.status_code == 200 else -1


def test_serve_quarantines_a_poison_event_and_keeps_counting(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"CONVTRACK_POISON": "hot_apply=bad-1",
                             "CONVTRACK_PROCESS_POISON_ATTEMPTS": "1"})  # fmt: skip
    server.start()
    for event_id in ("ok-1", "bad-1", "ok-2"):
        track(server.url, event_id)
    wait_for("the two good events counted", lambda: counted(server.url) == 2)
    listing = httpx.get(f"{server.url}/v1/quarantine", headers=auth(ADMIN_KEY), timeout=10).json()
    assert [(r["stage"], r["event_id"]) for r in listing["items"]] == [("hot_apply", "bad-1")]
    track(server.url, "ok-3")
    wait_for("a later event counted", lambda: counted(server.url) == 3)
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'convtrack_quarantined_events_total{stage="hot_apply"} 1.0' in metrics
    assert server.terminate() == 0


def test_sigterm_while_the_hot_store_is_down_exits_at_once_and_loses_nothing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    env = {"CONVTRACK_HOT_KIND": "redis", "CONVTRACK_HOT_REDIS_URL": redis.url,
           "CONVTRACK_HOT_REDIS_PREFIX": uuid.uuid4().hex}  # fmt: skip
    server = server_factory(env)
    try:
        server.start()
        track(server.url, "before")
        wait_for("the first event counted", lambda: counted(server.url) == 1)
        redis.stop()
        track(server.url, "while-down")  # the log takes it durably: 202

        def processor_failing() -> bool:
            ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
            return ready.get("processor", {}).get("healthy") is False

        wait_for("the processor to report its failing batch", processor_failing)
        assert server.terminate() == 0
        retries = ('"event":"batch_failed"', '"event":"resume_check_failed"')
        lines = [line for line in server.log_path.read_text().splitlines()
                 if any(kind in line for kind in retries)]  # fmt: skip
        # The old loop retried with no delay once stopping: thousands of lines.
        assert 1 <= len(lines) <= 3, lines
        assert all('"transient":false' not in line for line in lines)
        redis.start()
        server.start()
        wait_for("the event taken while Redis was down", lambda: counted(server.url) == 2)
        assert httpx.get(f"{server.url}/v1/quarantine", headers=auth(ADMIN_KEY),
                         timeout=10).json()["total"] == 0  # fmt: skip
        assert server.terminate() == 0
    finally:
        server.stop()
        redis.stop()
