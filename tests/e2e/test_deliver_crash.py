"""SIGKILL of a real ``convtrack serve`` while a webhook delivery is in flight, then restart:
nothing lost, and the copy carries the same ``webhook-id`` for the receiver to drop."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from convtrack.testing import wait_for
from convtrack.testing.standins.base import Answer, Request, Slow, StandIn
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, auth

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


class Receiver(StandIn):
    """A webhook receiver that deduplicates on ``webhook-id``, as Standard Webhooks asks."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.ids: list[str] = []

    def check(self, request: Request) -> Answer:
        msg_id = request.headers["webhook-id"]
        self.ids.append(msg_id)
        if msg_id not in self.seen:
            self.seen.add(msg_id)
            self.accepted += [e["event_id"] for e in json.loads(request.body)["events"]]
        return Answer(204)


def test_a_kill_mid_delivery_resends_with_the_same_id_and_loses_nothing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.plan = [Slow(30)]  # the first delivery hangs until the server is killed
    config = tmp_path / "convtrack.toml"
    config.write_text(
        '[[destinations]]\nkind = "webhook"\nname = "crm"\n'
        f'endpoint = "{receiver.base_url}/hook"\nsecret_env = "HOOK_SECRET"\n'
        "batch_max_wait_secs = 0\n"
    )
    server = server_factory({"HOOK_SECRET": SECRET}, args=["--config", str(config)])
    body = {"event_id": "order-1", "event_name": "Purchase", "user_id": "u1", "value": 4999,
            "currency": "EUR"}  # fmt: skip
    try:
        server.start(timeout_secs=30)  # the machine is shared: allow a slow start
        answer = httpx.post(server.url + "/v1/track", json=body, headers=auth(WRITE_KEY))
        assert answer.status_code == 202
        wait_for("the delivery to reach the receiver", lambda: len(receiver.requests) == 1)
        server.kill()
        server.start(timeout_secs=30)
        wait_for("the delivery after the restart", lambda: receiver.accepted == ["order-1"])
        dead = httpx.get(server.url + "/v1/dead-letters?destination=crm",
                         headers=auth(ADMIN_KEY)).json()  # fmt: skip
    finally:
        server.stop()
        receiver.close()
    assert dead["total"] == 0
    assert len(set(r.headers["webhook-id"] for r in receiver.requests)) == 1  # the same message
