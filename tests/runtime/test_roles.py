"""`convtrack serve --roles`: the roles split over real processes sharing one SQLite data dir."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from convtrack.cli.main import cli
from convtrack.testing import wait_for
from tests.conftest import (
    ADMIN_KEY,
    SERVER_KEY,
    WRITE_KEY,
    ServerFactory,
    ServerProcess,
    auth,
    logged_event_ids,
)

ENV = {
    "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000",
    "CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "0.5",
}
WORKER_ROLES = "process,store,deliver"
EVENT_TIME = datetime.now(UTC) - timedelta(minutes=1)
DATE = EVENT_TIME.strftime("%Y-%m-%d")


def worker_on(collector: ServerProcess, roles: str = WORKER_ROLES) -> ServerProcess:
    """A second `serve` process on the collector's data dir, running other roles."""
    worker = ServerProcess(collector.data_dir, {**ENV}, ["--roles", roles])
    worker.log_path = collector.data_dir.parent / f"worker-{roles.replace(',', '-')}.log"
    return worker


@pytest.fixture
def split(server_factory: ServerFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A collect-only process and a process,store,deliver process on one data dir."""
    collector = server_factory(ENV, args=["--roles", "collect"])
    worker = worker_on(collector)
    collector.start()
    worker.start()
    yield collector, worker
    worker.stop()
    collector.stop()


def purchase(event_id: str, campaign: str = "spring", value: int = 100) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"user-{event_id}",
        "timestamp": EVENT_TIME.isoformat().replace("+00:00", "Z"),
        "value": value,
        "currency": "USD",
        "campaign_id": campaign,
    }


def track(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/track", json=body, headers=auth(WRITE_KEY), timeout=15)


def send_until_answered(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """Send like an SDK: a request whose answer was lost (collector killed) is sent again
    with the same event_id, so an event made durable without its 202 is answered later."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return client.post(f"{url}/v1/track", json=body, headers=auth(WRITE_KEY))
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the collector never came back"
            time.sleep(0.05)


def conversions(url: str, campaign: str) -> int:
    counted = conversions_if_available(url, campaign)
    assert counted is not None, "the hot store answered 503"
    return counted


def conversions_if_available(url: str, campaign: str) -> int | None:
    """The counted conversions, or None while the hot store answers 503 (the documented
    answer while a backend is away: a Redis restarted a moment ago may still be loading)."""
    answer = httpx.get(
        f"{url}/v1/stats/conversions",
        params={"campaign_id": campaign, "date": DATE},
        headers=auth(SERVER_KEY),
        timeout=10,
    )
    if answer.status_code == 503:
        return None
    assert answer.status_code == 200, answer.text
    return int(answer.json()["conversions"])


def cli_run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convtrack", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lake_rows(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    done = cli_run("query", "--data-dir", str(data_dir), "--format", "json", sql)
    if done.returncode != 0:
        return []  # no files yet: the table does not exist
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def lake_event_ids(data_dir: Path) -> list[str]:
    rows = lake_rows(data_dir, "select event_id from events")
    return [str(row["event_id"]) for row in rows]


def terminate_within(process: ServerProcess, secs: float = 10.0) -> int:
    started = time.monotonic()
    code = process.terminate(timeout_secs=secs + 5)
    assert time.monotonic() - started < secs, "SIGTERM took longer than 10 s"
    return code


# -- the role list -----------------------------------------------------------------------


def test_unknown_roles_are_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["serve", "--roles", "collect,bogus,nope"])
    assert result.exit_code == 2
    assert "bogus" in result.output and "nope" in result.output
    assert "collect, process, store, deliver" in result.output


def test_roles_are_parsed_in_pipeline_order() -> None:
    from convtrack.runtime.roles import ROLES, parse_roles

    assert parse_roles(None) == ROLES
    assert parse_roles(" deliver , collect ") == ("collect", "deliver")
    assert parse_roles("store,store") == ("store",)


def test_a_kafka_log_without_its_bootstrap_names_the_setting(tmp_path: Path) -> None:
    from convtrack.config import load_settings
    from convtrack.errors import ConfigError
    from convtrack.runtime.node import Node

    for overrides, setting in (
        ({"log": {"kind": "kafka"}}, "log.kafka_bootstrap"),
        ({"hot": {"kind": "redis"}}, "hot.redis_url"),
    ):
        settings = load_settings(
            environ={}, overrides={"server": {"data_dir": str(tmp_path)}, **overrides}
        )
        with pytest.raises(ConfigError, match=setting):
            Node(settings, ("collect",), environ={})


# -- one data dir, two processes ---------------------------------------------------------


def test_collector_and_worker_share_one_sqlite_data_dir(
    split: tuple[ServerProcess, ServerProcess],
) -> None:
    collector, worker = split
    ids = [f"split-{i}" for i in range(40)]
    for event_id in ids:
        assert track(collector.url, purchase(event_id)).status_code == 202
    bad = track(collector.url, {"event_name": "Purchase", "value": "12"})
    assert bad.status_code == 400

    wait_for("the counters", lambda: conversions(collector.url, "spring") == len(ids))
    wait_for("the lake", lambda: sorted(lake_event_ids(collector.data_dir)) == sorted(ids))
    # The collector wrote the reject; the worker's store role copied it into the lake.
    wait_for("the rejects table", lambda: lake_rows(collector.data_dir, "select * from rejects"))
    rejects = lake_rows(collector.data_dir, "select codes from rejects")
    assert len(rejects) == 1 and "user_id_missing" in str(rejects[0]["codes"])

    # The worker serves only its probes; the collector the whole API.
    assert httpx.get(f"{worker.url}/healthz").json()["roles"] == ["process", "store", "deliver"]
    assert track(worker.url, purchase("not-here")).status_code == 404
    ready = httpx.get(f"{worker.url}/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["degraded"] == [] and body["hot"]["reachable"] is True
    assert {"processor", "cold", "hot", "log", "processed_log"} <= set(body)
    assert "convtrack_processor_events_total" in httpx.get(f"{worker.url}/metrics").text
    collector_ready = httpx.get(f"{collector.url}/readyz").json()
    assert collector_ready["processor"]["lag_events"] == 0
    rejects_api = httpx.get(f"{collector.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    assert rejects_api["total"] == 1

    assert terminate_within(collector) == 0
    assert terminate_within(worker) == 0


def test_a_second_processing_process_on_sqlite_is_refused(
    split: tuple[ServerProcess, ServerProcess],
) -> None:
    collector, _worker = split
    second = worker_on(collector, "process")
    with pytest.raises(RuntimeError, match="already runs the process role"):
        second.start()
    # Another collector on the same data dir is fine: appends are ordered by SQLite's lock.
    other = worker_on(collector, "collect")
    other.start()
    try:
        assert track(other.url, purchase("via-second-collector")).status_code == 202
        assert track(collector.url, purchase("via-first-collector")).status_code == 202
        wait_for("both collectors' events", lambda: conversions(collector.url, "spring") == 2)
    finally:
        assert terminate_within(other) == 0


@pytest.mark.parametrize("victim", ["worker", "collector"])
def test_sigkill_under_load_counts_every_202_once(
    split: tuple[ServerProcess, ServerProcess], victim: str
) -> None:
    collector, worker = split
    killed = worker if victim == "worker" else collector
    accepted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(thread: int) -> None:
        sent = 0
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                event_id = f"load-{thread}-{sent}"
                body = purchase(event_id, campaign="load")
                for _ in range(2 if sent % 5 == 0 else 1):  # every 5th is sent twice
                    answer = send_until_answered(client, collector.url, body)
                    if answer.status_code == 202:
                        with lock:
                            accepted.add(event_id)
                sent += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for("load before the kill", lambda: len(accepted) >= 150)
        killed.kill()
        killed_at = len(accepted)
        if killed is worker:
            wait_for("load while the worker is down", lambda: len(accepted) >= killed_at + 100)
        killed.start()
        wait_for("load after the restart", lambda: len(accepted) >= killed_at + 250)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    expected = len(accepted)
    wait_for("every accepted event counted", lambda: conversions(collector.url, "load") >= expected)
    assert conversions(collector.url, "load") == expected
    assert terminate_within(collector) == 0
    assert terminate_within(worker) == 0  # flushes the lake

    lake_ids = lake_event_ids(collector.data_dir)
    assert len(lake_ids) == len(set(lake_ids)) == expected
    assert set(lake_ids) == accepted
    done = cli_run("reconcile", "--date", DATE, "--data-dir", str(collector.data_dir))
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_unwritable_log_answers_503_and_recovers_by_itself(
    split: tuple[ServerProcess, ServerProcess],
) -> None:
    collector, _worker = split
    assert track(collector.url, purchase("before")).status_code == 202
    # Another process holds the log's write lock past the writer's 10 s busy timeout:
    # the append cannot be made durable, so it must not be answered 202.
    holder = sqlite3.connect(collector.data_dir / "log" / "events.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        refused = track(collector.url, purchase("during"))
        assert refused.status_code == 503, refused.text
        assert refused.json() == {"error": "unavailable"}
        assert int(refused.headers["retry-after"]) >= 1
        ready = httpx.get(f"{collector.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["log"]["writable"] is False
        assert "locked" in ready.json()["log"]["detail"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert track(collector.url, purchase("after")).status_code == 202
    assert httpx.get(f"{collector.url}/readyz").status_code == 200
    wait_for("the counters", lambda: conversions(collector.url, "spring") == 2)


def test_hot_reads_fail_fast_while_the_monitor_sees_the_store_down(tmp_path: Path) -> None:
    from convtrack.errors import StoreUnavailable
    from convtrack.runtime.guarded import ReadGuardedHotStore
    from convtrack.store.hot.sqlite import SqliteHotStore

    inner = SqliteHotStore(tmp_path / "hot.db")
    down: list[str] = ["Connection refused"]
    guarded = ReadGuardedHotStore(inner, lambda: down[0] if down else None)
    try:
        with pytest.raises(StoreUnavailable, match="Connection refused"):
            guarded.conversions("spring", DATE)
        down.clear()  # the next check found it again
        assert guarded.conversions("spring", DATE).conversions == 0
    finally:
        inner.close()


def _probe(app: Any, method: str, path: str) -> httpx.Response:
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            return await client.request(method, path)

    return asyncio.run(go())


def test_a_process_without_collect_serves_only_its_probes(tmp_path: Path) -> None:
    from convtrack.config import load_settings
    from convtrack.runtime.health import ProbeApp
    from convtrack.runtime.node import Node

    settings = load_settings(environ={}, overrides={"server": {"data_dir": str(tmp_path)}})
    node = Node(settings, ("store", "process"), environ={})
    try:
        assert node.roles == ("process", "store") and node.collect is None
        assert isinstance(node.app, ProbeApp)
        node.monitor.check_now()
        assert _probe(node.app, "GET", "/healthz").json() == {
            "status": "ok",
            "roles": ["process", "store"],
        }
        ready = _probe(node.app, "GET", "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["degraded"] == []
        assert _probe(node.app, "GET", "/metrics").status_code == 200
        assert _probe(node.app, "POST", "/readyz").status_code == 405
        missing = _probe(node.app, "POST", "/v1/track")
        assert missing.status_code == 404 and "collect role" in missing.json()["message"]
        node.app.draining = True
        assert _probe(node.app, "GET", "/readyz").status_code == 503
    finally:
        node.close()


def test_a_processor_whose_hot_store_is_down_waits_and_says_so(tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="the redis client: pip install 'convtrack[redis]'")
    from convtrack.config import load_settings
    from convtrack.runtime.node import Node
    from tests.conftest import free_port

    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings(
        environ={},
        overrides={
            "server": {"data_dir": str(tmp_path)},
            "hot": {"kind": "redis", "redis_url": nothing_there},
        },
    )
    node = Node(settings, ("process",), environ={})  # starts although Redis is down
    try:
        assert node.processor is None
        node.monitor.check_now()
        ready = _probe(node.app, "GET", "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["degraded"] == ["hot", "processor"]
        assert body["hot"]["reachable"] is False
        assert "waiting for a backend" in body["processor"]["detail"]
    finally:
        node.close()


def test_sigterm_exits_0_within_10_s_even_while_the_log_hangs(
    server_factory: ServerFactory,
) -> None:
    collector = server_factory(ENV, args=["--roles", "collect"])
    collector.start()
    answers: list[int] = []

    def send() -> None:
        try:
            answers.append(track(collector.url, purchase("stuck")).status_code)
        except httpx.TransportError:
            answers.append(0)  # no answer: the process went away

    # Another process holds the log's write lock: the append waits (busy timeout 10 s)
    # and the graceful stop cannot finish it in time.
    holder = sqlite3.connect(collector.data_dir / "log" / "events.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sender = threading.Thread(target=send)
    try:
        sender.start()
        wait_for(
            "the append to wait",
            lambda: httpx.get(f"{collector.url}/readyz").json()["log"]["pending_events"] >= 1,
        )
        assert terminate_within(collector) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        sender.join(30)
    assert answers and answers[0] != 202  # never accepted without durability
    assert "stop_deadline_reached" in collector.log_path.read_text()


def test_collectors_sharing_one_port_with_reuse_port_split_the_connections(
    server_factory: ServerFactory,
) -> None:
    shared = {**ENV, "CONVTRACK_SERVER_REUSE_PORT": "true"}
    first = server_factory(shared, args=["--roles", "collect"])
    second = worker_on(first, "collect")
    second.env.update(shared)
    second.port = first.port  # the same address: the kernel spreads the connections
    first.start()
    second.start()  # not refused: both listen
    try:
        ids = [f"shared-port-{i}" for i in range(200)]
        for event_id in ids:  # a connection each
            assert track(first.url, purchase(event_id)).status_code == 202
        assert terminate_within(first) == 0
        later = [f"after-one-stopped-{i}" for i in range(20)]
        for event_id in later:  # the port still answers: the second process took it all
            assert track(second.url, purchase(event_id)).status_code == 202
        metrics = httpx.get(f"{second.url}/metrics", timeout=10).text
        handled = next(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('convtrack_events_accepted_total{route="/v1/track"}')
        )
        assert 20 <= handled < len(ids) + len(later)  # the first process took some too
    finally:
        assert terminate_within(second) == 0
    assert sorted(logged_event_ids(first.data_dir)) == sorted(ids + later)  # each once


def test_a_second_listener_without_reuse_port_is_refused(server_factory: ServerFactory) -> None:
    first = server_factory(ENV, args=["--roles", "collect"])
    first.start()
    plain = worker_on(first, "collect")
    plain.port = first.port
    with contextlib.suppress(RuntimeError):  # the first process may answer its probe
        plain.start()
    assert plain.proc is not None and plain.proc.wait(30) != 0
    assert "address already in use" in plain.log_path.read_text().lower()
    assert terminate_within(first) == 0
