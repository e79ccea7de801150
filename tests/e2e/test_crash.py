"""SIGKILL under load: every event answered 202 is in the log exactly once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import SERVER_KEY, WRITE_KEY, ServerFactory, auth, logged_event_ids

pytestmark = pytest.mark.slow


class Sender(threading.Thread):
    """Sends unique events until told to stop; records which were answered 202."""

    def __init__(self, url: str, use_batch: bool, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.use_batch = use_batch
        self.stop_flag = stop
        self.acked: list[str] = []
        self.sent = 0

    def run(self) -> None:
        with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
            while not self.stop_flag.is_set():
                events = [
                    {
                        "event_id": str(uuid.uuid4()),
                        "event_name": "Purchase",
                        "user_id": f"u{random.randrange(1000)}",
                        "value": 100,
                        "currency": "EUR",
                    }
                    for _ in range(20 if self.use_batch else 1)
                ]
                self.sent += len(events)
                try:
                    if self.use_batch:
                        response = client.post(self.url + "/v1/batch", json={"batch": events})
                        if response.status_code == 200 and response.json()["accepted"] == 20:
                            self.acked.extend(e["event_id"] for e in events)
                    else:
                        response = client.post(self.url + "/v1/track", json=events[0])
                        if response.status_code == 202:
                            self.acked.append(events[0]["event_id"])
                except httpx.HTTPError:
                    time.sleep(0.02)  # the server is down: back off while it restarts


def test_sigkill_under_load_loses_no_acknowledged_event(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"})
    server.start()
    stop = threading.Event()
    senders = [Sender(server.url, use_batch=i % 2 == 1, stop=stop) for i in range(4)]
    for sender in senders:
        sender.start()
    rng = random.Random(7)
    restart_secs: list[float] = []
    for _ in range(5):
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        restart_secs.append(server.start())
    time.sleep(0.5)
    stop.set()
    for sender in senders:
        sender.join(10)
    assert server.terminate() == 0

    acked = [event_id for sender in senders for event_id in sender.acked]
    assert len(acked) > 200, "the load was too light to test anything"
    logged = Counter(logged_event_ids(server.data_dir))
    missing = [e for e in acked if logged[e] == 0]
    doubled = [e for e, n in logged.items() if n > 1]
    assert missing == [], f"{len(missing)} acknowledged events lost"
    assert doubled == [], f"{len(doubled)} events logged twice"
    assert max(restart_secs) < 10


class RetryingSender(threading.Thread):
    """Sends conversions with duplicates, retrying each until it is acknowledged."""

    def __init__(
        self, url: str, campaign: str, ts_ms: int, seed: int, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.campaign = campaign
        self.ts_ms = ts_ms
        self.rng = random.Random(seed)
        self.stop_flag = stop
        self.acked: set[str] = set()
        self.seed = seed

    def body(self, event_id: str) -> dict[str, object]:
        return {"event_id": event_id, "event_name": "Purchase", "user_id": f"u{self.seed}",
                "value": value_of(event_id), "currency": "USD", "campaign_id": self.campaign,
                "timestamp": self.ts_ms}  # fmt: skip

    def run(self) -> None:
        sent: list[str] = []
        with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
            while not self.stop_flag.is_set():
                if sent and self.rng.random() < 0.3:
                    event_id = self.rng.choice(sent)  # a duplicate of an earlier event
                else:
                    event_id = f"{self.seed}-{len(sent)}"
                    sent.append(event_id)
                while not self.stop_flag.is_set():  # retry until acknowledged
                    try:
                        response = client.post(self.url + "/v1/track", json=self.body(event_id))
                    except httpx.HTTPError:
                        time.sleep(0.02)
                        continue
                    if response.status_code == 202:
                        self.acked.add(event_id)
                        break
                    time.sleep(0.02)


def value_of(event_id: str) -> int:
    return sum(event_id.encode()) * 37 % 100_000


def test_sigkill_under_load_counts_every_accepted_event_once(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"})
    server.start()
    campaign = f"crash-{uuid.uuid4().hex[:6]}"
    ts_ms = int(time.time() * 1000) - 60_000
    date = time.strftime("%Y-%m-%d", time.gmtime(ts_ms / 1000))
    stop = threading.Event()
    senders = [RetryingSender(server.url, campaign, ts_ms, seed, stop) for seed in range(4)]
    for sender in senders:
        sender.start()
    rng = random.Random(11)
    for _ in range(5):
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        server.start()
    time.sleep(0.5)
    stop.set()
    for sender in senders:
        sender.join(10)

    acked = set().union(*(s.acked for s in senders))
    deadline = time.monotonic() + 20
    while True:  # the processor drains the log; then the counters must be exact
        live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
        if live["lag"]["events"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stats = httpx.get(
        f"{server.url}/v1/stats/conversions",
        params={"campaign_id": campaign, "date": date},
        headers=auth(SERVER_KEY),
    ).json()
    assert server.terminate() == 0
    logged = set(logged_event_ids(server.data_dir))
    assert len(acked) > 100, "the load was too light to test anything"
    assert acked <= logged, f"{len(acked - logged)} acknowledged events are not in the log"
    assert stats["conversions"] == len(logged)
    assert stats["value"] == {"USD": sum(value_of(e) for e in logged)}
