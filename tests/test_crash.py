"""SIGKILL under load: every event answered 202 is in the log exactly once."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import WRITE_KEY, ServerFactory, auth, logged_event_ids

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
