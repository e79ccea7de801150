"""SIGKILL around a flush (failpoints in a real server): no lost or doubled lake rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import WRITE_KEY, ServerFactory, auth, logged_event_ids

pytestmark = pytest.mark.slow


def send(url: str, n: int, tag: str) -> list[str]:
    ids = []
    with httpx.Client(headers=auth(WRITE_KEY), timeout=5) as client:
        for i in range(n):
            event_id = f"{tag}-{i}"
            body = {
                "event_id": event_id,
                "event_name": "Purchase",
                "user_id": f"u{i}",
                "value": 10,
                "currency": "EUR",
                "campaign_id": f"c{i % 3}",
            }
            assert client.post(f"{url}/v1/track", json=body).status_code == 202
            ids.append(event_id)
    return ids


def query(data_dir: str, sql: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convtrack",
            "query",
            "--data-dir",
            data_dir,
            "--format",
            "json",
            sql,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


@pytest.mark.parametrize(
    "failpoint", ["cold.between_files", "cold.before_commit", "cold.after_commit"]
)
def test_sigkill_around_a_flush(server_factory: ServerFactory, failpoint: str) -> None:
    # The first flush starts once all 30 events are buffered; the failpoint kills it.
    server = server_factory(
        {
            "CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "3600",
            "CONVTRACK_COLD_FLUSH_MAX_ROWS": "30",
            "CONVTRACK_FAILPOINTS": failpoint,
            "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0",
        }
    )
    server.start()
    first = send(server.url, 30, uuid.uuid4().hex[:6])
    assert server.proc is not None
    server.proc.wait(15)  # the failpoint kills the server at its first flush
    assert server.proc.returncode == -9
    server.env.pop("CONVTRACK_FAILPOINTS")
    server.start()
    second = send(server.url, 10, uuid.uuid4().hex[:6])
    assert server.terminate() == 0  # SIGTERM flushes
    rows = query(str(server.data_dir), "select event_id from events")
    stored = [str(r["event_id"]) for r in rows]
    assert len(stored) == len(set(stored)), "a row was written twice"
    assert set(stored) == set(first + second) == set(logged_event_ids(server.data_dir))
    date = query(str(server.data_dir), "select max(event_date) as d from events")[0]["d"]
    reconcile = subprocess.run(
        [
            sys.executable,
            "-m",
            "convtrack",
            "reconcile",
            "--date",
            str(date),
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    assert "no difference" in reconcile.stdout


def test_lake_query_works_while_serve_runs(server_factory: ServerFactory) -> None:
    server = server_factory(
        {"CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "0.2", "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"}
    )
    server.start()
    ids = send(server.url, 12, "live")
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = query(str(server.data_dir), "select count(*) as n from events")
        if rows[0]["n"] == len(ids):
            break
        time.sleep(0.1)
    assert rows == [{"n": 12}]
    by_campaign = query(
        str(server.data_dir),
        "select campaign_id, count(*) as n, sum(value) as v from events group by 1 order by 1",
    )
    assert by_campaign == [{"campaign_id": f"c{i}", "n": 4, "v": 40} for i in range(3)]
    csv_out = subprocess.run(
        [
            sys.executable,
            "-m",
            "convtrack",
            "query",
            "--data-dir",
            str(server.data_dir),
            "--format",
            "csv",
            "select campaign_id from events order by 1 limit 1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert csv_out.splitlines() == ["campaign_id", "c0"]
    bad = subprocess.run(
        [sys.executable, "-m", "convtrack", "query", "--data-dir", str(server.data_dir), "selec x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "error" in bad.stderr.lower()
