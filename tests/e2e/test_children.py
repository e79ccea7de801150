"""``convtrack serve`` with its roles in child processes (``server.child_roles``, the default):
one server to talk to, children that die with it, restart when they die alone, and every
202 counted once through it all."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.e2e.test_cold_crash import query

pytestmark = pytest.mark.slow
NO_LIMIT = {"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"}


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def children(server: ServerProcess) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.url}/readyz", timeout=5).json()["processes"]["children"])


def running_children(server: ServerProcess) -> dict[str, int]:
    """Roles -> pid of each child, once every one runs and has reported."""
    found: dict[str, int] = {}

    def up() -> bool:
        body = httpx.get(f"{server.url}/readyz", timeout=5).json()
        states = body["processes"]["children"]
        found.clear()
        found.update({child["roles"]: child["pid"] for child in states})
        return body["processes"]["healthy"] and body["processor"]["healthy"]

    wait_for("running children", up)
    return dict(found)


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return None if state == "Z" else int(ppid)


def counted(server: ServerProcess, campaign: str) -> int:
    day = datetime.now(tz=UTC).strftime("%Y-%m-%d")
    url = f"{server.url}/v1/stats/conversions?campaign_id={campaign}&date={day}"
    return int(httpx.get(url, headers=auth(SERVER_KEY), timeout=5).json()["conversions"])


def metric(server: ServerProcess, line_start: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"/metrics has no {line_start}")


def lake_ids(server: ServerProcess) -> list[str]:
    return [
        str(row["event_id"]) for row in query(str(server.data_dir), "select event_id from events")
    ]


def purchase(campaign: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_name": "Purchase",
        "user_id": f"u{random.randrange(500)}",
        "value": 100,
        "currency": "EUR",
        "campaign_id": campaign,
    }


def send(server: ServerProcess, campaign: str, n: int) -> list[str]:
    with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
        events = [purchase(campaign) for _ in range(n)]
        answer = client.post(f"{server.url}/v1/batch", json={"batch": events})
        assert answer.status_code == 200 and answer.json()["accepted"] == n
    return [str(event["event_id"]) for event in events]


def test_the_processor_and_the_lake_writer_run_in_children_behind_one_server(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(NO_LIMIT)
    server.start()
    pids = running_children(server)
    assert sorted(pids) == ["process", "store+deliver"]
    assert server.proc is not None
    assert all(parent_of(pid) == server.proc.pid for pid in pids.values())
    campaign = uuid.uuid4().hex[:8]
    sent = send(server, campaign, 40)
    wait_for("the events counted", lambda: counted(server, campaign) == len(sent))
    # /metrics sums the children's series into the collector's
    assert metric(server, 'convtrack_events_accepted_total{route="/v1/batch"}') == 40
    assert metric(server, 'convtrack_processor_events_total{outcome="counted"}') == 40
    # the flush is the lake writer's, in its child
    flushed = httpx.post(f"{server.url}/v1/admin/flush", headers=auth(ADMIN_KEY), timeout=60)
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["flushed"]["events"] == 40
    assert metric(server, 'convtrack_cold_rows_written_total{table="events"}') == 40
    assert server.terminate() == 0
    for pid in pids.values():
        assert parent_of(pid) is None, f"child {pid} outlived the stop"
    assert lake_ids(server) == sent


class Load(threading.Thread):
    """Batches of unique events until stopped; the ids answered accepted."""

    def __init__(self, server: ServerProcess, campaign: str) -> None:
        super().__init__(daemon=True)
        self.server, self.campaign = server, campaign
        self.stop = threading.Event()
        self.acked: list[str] = []

    def run(self) -> None:
        with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
            while not self.stop.is_set():
                events = [purchase(self.campaign) for _ in range(20)]
                answer = client.post(f"{self.server.url}/v1/batch", json={"batch": events})
                if answer.status_code == 200 and answer.json()["accepted"] == 20:
                    self.acked.extend(str(event["event_id"]) for event in events)


def test_a_child_killed_under_load_starts_again_and_every_202_counts_once(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(NO_LIMIT)
    server.start()
    campaign = uuid.uuid4().hex[:8]
    load = [Load(server, campaign) for _ in range(2)]
    for sender in load:
        sender.start()
    rng = random.Random(11)
    kills = {"process": 0, "store+deliver": 0}
    for roles in ["process", "store+deliver", "process"]:
        pid = running_children(server)[roles]
        enough = 200 * (sum(kills.values()) + 1)
        wait_for("some load", lambda: sum(len(s.acked) for s in load) > enough)  # noqa: B023
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(pid, signal.SIGKILL)
        kills[roles] += 1
        wait_for("it started again", lambda: running_children(server)[roles] != pid)  # noqa: B023
    for sender in load:
        sender.stop.set()
        sender.join(10)
    acked = [event_id for sender in load for event_id in sender.acked]
    wait_for("every 202 counted", lambda: counted(server, campaign) >= len(acked), timeout=60)
    assert counted(server, campaign) == len(acked)
    for roles, n in kills.items():
        assert metric(server, f'convtrack_child_restarts_total{{roles="{roles}"}}') == n
    assert {c["roles"]: c["restarts"] for c in children(server)} == kills
    assert server.terminate() == 0
    stored = lake_ids(server)
    assert len(stored) == len(set(stored)), "a lake row was written twice"
    assert set(stored) == set(acked)


def test_children_die_with_a_killed_server_and_the_next_start_takes_over(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(NO_LIMIT)
    server.start()
    pids = running_children(server)
    campaign = uuid.uuid4().hex[:8]
    first = send(server, campaign, 30)
    server.kill()
    wait_for("the children gone", lambda: all(parent_of(pid) is None for pid in pids.values()))
    server.start()  # the role locks were the children's too: they are free again
    running_children(server)
    second = send(server, campaign, 30)
    wait_for("both sends counted", lambda: counted(server, campaign) >= len(first + second))
    assert counted(server, campaign) == len(first) + len(second)


def test_sigterm_drains_the_processor_child_before_the_server_exits(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(NO_LIMIT)
    server.start()
    running_children(server)
    campaign = uuid.uuid4().hex[:8]
    sent = [event_id for _ in range(10) for event_id in send(server, campaign, 100)]
    assert server.terminate() == 0
    # Read by a collector alone: nothing processes the log after the stop.
    reader = server_factory(NO_LIMIT, name=server.data_dir.name, args=["--roles", "collect"])
    reader.start()
    assert counted(reader, campaign) == len(sent)


def test_no_child_roles_runs_every_role_in_one_process(server_factory: ServerFactory) -> None:
    server = server_factory({**NO_LIMIT, "CONVTRACK_SERVER_CHILD_ROLES": ""})
    server.start()
    body = httpx.get(f"{server.url}/readyz", timeout=5).json()
    assert "processes" not in body and "processor" in body
    assert server.proc is not None
    assert not Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    campaign = uuid.uuid4().hex[:8]
    sent = send(server, campaign, 10)
    wait_for("the events counted", lambda: counted(server, campaign) == len(sent))


def test_a_wrong_destination_fails_the_start_though_deliveries_run_in_a_child(
    tmp_path: Path,
) -> None:
    config = tmp_path / "convtrack.toml"
    config.write_text(
        '[[destinations]]\nkind = "webhook"\nname = "crm"\n'
        'endpoint = "https://crm.example/hook"\nsecret_env = "CRM_HOOK_SECRET"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CRM_HOOK_SECRET"}
    started = subprocess.run(
        [sys.executable, "-m", "convtrack", "serve", "--port", "0", "--config", str(config),
         "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 2, started.stdout + started.stderr
    assert "CRM_HOOK_SECRET" in started.stderr


def test_a_child_that_stops_answering_shows_in_readyz_until_it_answers_again(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(NO_LIMIT)
    server.start()
    pid = running_children(server)["process"]
    os.kill(pid, signal.SIGSTOP)  # alive, holding its locks, answering nothing
    try:

        def silent() -> bool:
            body = httpx.get(f"{server.url}/readyz", timeout=5).json()
            state = {c["roles"]: c["state"] for c in body["processes"]["children"]}
            return state["process"] == "not answering" and "processor" in body["degraded"]

        wait_for("the silent child reported", silent)
        answer = httpx.get(f"{server.url}/readyz", timeout=5)
        assert answer.status_code == 200  # the log still takes events: ready
        assert "has not answered /readyz" in answer.json()["processor"]["detail"]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert running_children(server)["process"] == pid  # the same process, not a restart
