"""Deduplication end to end against a real server: concurrency, batches, fingerprints."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import SERVER_KEY, WRITE_KEY, ServerProcess, auth

pytestmark = pytest.mark.slow


def today() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d")


def wait_for(
    server: ServerProcess, campaign: str, expected: int, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the hot read until it shows ``expected`` (then a little longer, to catch overcounts)."""
    deadline = time.monotonic() + timeout
    url = f"{server.url}/v1/stats/conversions?campaign_id={campaign}&date={today()}"
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = httpx.get(url, headers=auth(SERVER_KEY)).json()
        if stats["conversions"] >= expected:
            break
        time.sleep(0.02)
    live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
    assert live["lag"]["events"] == 0 or stats["conversions"] >= expected
    return stats


def event(campaign: str, **kw: Any) -> dict[str, Any]:
    body = {"event_name": "Purchase", "user_id": "u1", "value": 700, "currency": "USD",
            "campaign_id": campaign}  # fmt: skip
    body.update(kw)
    return body


def test_one_event_id_from_many_threads_and_batches_counts_once(server: ServerProcess) -> None:
    campaign = f"race-{uuid.uuid4().hex[:8]}"
    body = event(campaign, event_id="the-one")
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def hammer(use_batch: bool) -> None:
        with httpx.Client(headers=auth(WRITE_KEY), timeout=10) as client:
            barrier.wait()
            for _ in range(10):
                if use_batch:
                    r = client.post(f"{server.url}/v1/batch", json={"batch": [body] * 5})
                else:
                    r = client.post(f"{server.url}/v1/track", json=body)
                statuses.append(r.status_code)

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 202}
    # a marker event after the storm: once it is counted, everything before it is too
    httpx.post(f"{server.url}/v1/track", json=event(campaign + "-end", event_id="end"),
               headers=auth(WRITE_KEY))  # fmt: skip
    wait_for(server, campaign + "-end", 1)
    stats = wait_for(server, campaign, 1)
    assert stats["conversions"] == 1 and stats["value"] == {"USD": 700}
    live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
    assert live["duplicates_total"] == 4 * 10 + 4 * 10 * 5 - 1


def test_fingerprint_rule(server: ServerProcess) -> None:
    campaign = f"fp-{uuid.uuid4().hex[:8]}"
    body = event(campaign, timestamp=int(time.time() * 1000) - 1000)
    for _ in range(3):
        assert (
            httpx.post(f"{server.url}/v1/track", json=body, headers=auth(WRITE_KEY)).status_code
            == 202
        )
    different = {**body, "value": 701}
    httpx.post(f"{server.url}/v1/track", json=different, headers=auth(WRITE_KEY))
    httpx.post(f"{server.url}/v1/track", json=event(campaign + "-end", event_id="end-fp"),
               headers=auth(WRITE_KEY))  # fmt: skip
    wait_for(server, campaign + "-end", 1)
    stats = wait_for(server, campaign, 2)
    assert stats["conversions"] == 2 and stats["value"] == {"USD": 1401}


def test_counter_is_visible_quickly_after_the_202(server: ServerProcess) -> None:
    campaign = f"fast-{uuid.uuid4().hex[:8]}"
    r = httpx.post(
        f"{server.url}/v1/track", json=event(campaign, event_id="f1"), headers=auth(WRITE_KEY)
    )
    assert r.status_code == 202
    assert wait_for(server, campaign, 1, timeout=5)["conversions"] == 1
