"""``convtrack reconcile`` against a real server's data dir: hot counters vs the lake."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from convtrack.cli.main import cli
from tests.conftest import SERVER_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth


def reconcile(data_dir: Path, day: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    return subprocess.run(
        [sys.executable, "-m", "convtrack", "reconcile", "--date", day, "--data-dir",
         str(data_dir)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def event(event_id: str, campaign: str, value: int, currency: str, at_ms: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "timestamp": at_ms,
        "value": value,
        "currency": currency,
        "campaign_id": campaign,
    }


def wait_counted(server: ServerProcess, day: str, conversions: int) -> None:
    deadline = time.monotonic() + 10
    url = f"{server.url}/v1/stats/conversions?date={day}"
    while time.monotonic() < deadline:
        answer = httpx.get(url, headers=auth(SERVER_KEY)).json()
        if answer["conversions"] == conversions:
            return
        time.sleep(0.05)
    raise AssertionError(f"not counted in time: {answer}")


def test_reconcile_agrees_after_a_stop_and_is_behind_while_the_lake_lacks_events(
    server_factory: ServerFactory,
) -> None:
    now_ms = int(time.time() * 1000)
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    server = server_factory(
        {
            "CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "1",
            "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000",
        }
    )
    server.start()
    batch = [
        event("o1", "spring", 1000, "USD", now_ms),
        event("o2", "spring", 250, "EUR", now_ms),
        event("o3", "fall", 700, "USD", now_ms),
        event("o1", "spring", 1000, "USD", now_ms),  # duplicates: counted once on both sides
        event("o3", "fall", 700, "USD", now_ms),
        {"event_name": "page_view", "session_id": "s1", "timestamp": now_ms},
    ]
    answer = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, headers=auth(WRITE_KEY))
    assert answer.status_code == 200 and answer.json()["accepted"] == 6, answer.text
    wait_counted(server, day, 3)
    assert server.terminate() == 0  # SIGTERM flushes the lake

    agreed = reconcile(server.data_dir, day)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "no difference" in agreed.stdout
    assert "spring" in agreed.stdout and "fall" in agreed.stdout
    assert "USD 10.00" in agreed.stdout and "EUR 2.50" in agreed.stdout  # major units
    assert "DIFFERS" not in agreed.stdout

    # Counted in the hot store but killed before the lake's next flush.
    again = server_factory(
        {
            "CONVTRACK_COLD_FLUSH_INTERVAL_SECS": "3600",
            "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000",
        }
    )
    again.start()
    late = event("o4", "summer", 42, "USD", now_ms)
    answer = httpx.post(f"{again.url}/v1/track", json=late, headers=auth(WRITE_KEY))
    assert answer.status_code == 202, answer.text
    wait_counted(again, day, 4)
    again.kill()

    # The processed log holds it: on its way to the lake, so reconcile says behind (3)
    # with what is in flight, not a difference, and not "no difference" either.
    behind = reconcile(again.data_dir, day)
    assert behind.returncode == 3, behind.stdout + behind.stderr
    assert "no difference" not in behind.stdout
    assert "counted, not yet in the lake: 1 event(s) (1 of them dated" in behind.stdout
    assert "behind: 1 event(s) in flight may still change" in behind.stdout
    summer = next(line for line in behind.stdout.splitlines() if line.startswith("summer"))
    assert summer.split()[:4] == ["summer", "1", "0", "1"]  # hot, lake, to_lake
    assert "DIFFERS" not in behind.stdout

    # Once the cold store ran again (the restart flushes it at its stop), they agree.
    again.start()
    assert again.terminate() == 0
    agreed = reconcile(again.data_dir, day)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "summer" in agreed.stdout and agreed.stdout.splitlines()[-1] == "no difference"


def test_reconcile_refuses_a_bad_date_and_a_missing_data_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["reconcile", "--date", "2026-13-01", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    missing = subprocess.run(
        [sys.executable, "-m", "convtrack", "reconcile", "--date", "2026-11-28", "--data-dir",
         str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "no hot store" in missing.stderr
