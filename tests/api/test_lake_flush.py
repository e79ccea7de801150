"""An empty answer says what the lake holds; ``convtrack flush`` writes it now (issue #14).

Over HTTP against a real ``serve``: an event answered 202 is not in the lake
until a flush, ``POST /v1/admin/flush`` (and ``convtrack flush``) writes it,
and the next query sees it. In this process: the lines an empty answer gets,
reconcile's exit 4 on a day with nothing, the flush route's refusals, and
the relative dates the CLI takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from convtrack.cli.dates import parse_day
from convtrack.cli.lakehint import summary_lines, waiting_line
from convtrack.cli.main import cli
from convtrack.cli.server import admin_key, server_url
from convtrack.clock import ManualClock, SystemClock
from convtrack.config import load_settings
from convtrack.log.base import LogLag
from convtrack.runtime.backends import open_cold_store
from convtrack.runtime.embedded import Pipeline
from convtrack.store.cold.runner import ColdStoreRunner
from convtrack.store.cold.summary import LakeSummary
from convtrack.store.cold.tables import EventsSource
from convtrack.store.cold.writer import TableWriter
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.store.test_cold_readiness import Cold, restore, swap_for_file
from tests.support.inprocess import call, make_pipeline, process_all

NOW_US = 1_795_860_000_000_000  # 2026-11-28T10:00:00Z
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0 Safari/537.36"
)


def convtrack(*args: str, admin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with no CONVTRACK_* setting but the admin key given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    if admin is not None:
        env["CONVTRACK_ADMIN_KEY"] = admin
    return subprocess.run(
        [sys.executable, "-m", "convtrack", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def purchase(event_id: str, value: int = 4999, **more: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "Purchase", "user_id": f"u-{event_id}",
            "value": value, "currency": "USD", "campaign_id": "spring",
            "context": {"user_agent": DESKTOP_UA}, **more}  # fmt: skip


def test_flush_over_http_then_query_sees_the_rows(server: ServerProcess) -> None:
    data_dir = str(server.data_dir)
    sent = httpx.post(server.url + "/v1/track", json=purchase("flush-1"), headers=auth(WRITE_KEY))
    assert sent.status_code == 202, sent.text
    sql = "select event_id, value, currency from events"

    before = convtrack("query", "--data-dir", data_dir, sql)
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines()[-1] == "(0 rows)"
    assert "holds no events: the server has not flushed it yet" in before.stderr
    assert "`convtrack flush` writes them now" in before.stderr

    refused = convtrack("flush", "--url", server.url, "--data-dir", data_dir, admin=SERVER_KEY)
    assert refused.returncode == 1
    assert "answered 403 role_not_allowed" in refused.stderr

    flushed = convtrack("flush", "--url", server.url, "--data-dir", data_dir, admin=ADMIN_KEY)
    assert flushed.returncode == 0, flushed.stderr
    today = datetime.now(UTC).date().isoformat()
    assert flushed.stdout.splitlines() == [
        "flushed 1 event(s) and 0 reject(s) to the lake",
        f"the lake holds 1 event(s) dated {today}",
    ]

    after = convtrack("query", "--data-dir", data_dir, "--format", "json", sql)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == [{"event_id": "flush-1", "value": 4999, "currency": "USD"}]
    assert after.stderr == ""  # rows: no hint unless asked
    verbose = convtrack("query", "--data-dir", data_dir, "-v", sql)
    assert f"holds 1 event(s) dated {today}; last flush" in verbose.stderr

    credited = convtrack("attribution", "--model", "last_touch", "--from", "7d",
                         "--data-dir", data_dir, "--format", "csv")  # fmt: skip
    assert credited.returncode == 0, credited.stderr
    assert credited.stdout.splitlines()[1:] == ["(direct),1.0,USD 49.99"]

    # Nothing new: the answer says so and what the lake holds.
    again = httpx.post(server.url + "/v1/admin/flush", headers=auth(ADMIN_KEY), timeout=30)
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["flushed"] == {"events": 0, "rejects": 0}
    assert body["processor_caught_up"] is True
    assert (body["lake"]["rows"], body["lake"]["first_date"]) == (1, today)
    assert body["lake"]["last_flush_at"].endswith("Z")


def test_a_process_without_the_store_role_answers_409(server_factory: ServerFactory) -> None:
    collector = server_factory(name="collect-only", args=["--roles", "collect,process"])
    collector.start()
    answer = httpx.post(collector.url + "/v1/admin/flush", headers=auth(ADMIN_KEY), timeout=30)
    assert answer.status_code == 409
    assert answer.json()["error"] == "store_role_not_running"
    assert "store role" in answer.json()["message"]
    done = convtrack("flush", "--url", collector.url, "--data-dir", str(collector.data_dir),
                     admin=ADMIN_KEY)  # fmt: skip
    assert done.returncode == 1
    assert "answered 409 store_role_not_running: this process does not run" in done.stderr


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", ManualClock(start_us=NOW_US),
                          limits={"user_events_per_sec": 100_000})  # fmt: skip
    yield built
    built.close()


def test_a_cold_store_that_does_not_run_answers_503(pipeline: Pipeline) -> None:
    # Driven by hand: its cold store's thread never started, so nobody could flush.
    answer = call(pipeline, "POST", "/v1/admin/flush", key=ADMIN_KEY)
    assert answer.status_code == 503
    assert answer.json()["error"] == "cold_store_unavailable"
    assert answer.headers["retry-after"] == "2"
    assert call(pipeline, "POST", "/v1/admin/flush", key=SERVER_KEY).status_code == 403
    assert call(pipeline, "GET", "/v1/admin/flush", key=ADMIN_KEY).headers["allow"] == "POST"


def send(pipeline: Pipeline, event: dict[str, Any]) -> None:
    assert call(pipeline, "POST", "/v1/track", event, key=WRITE_KEY).status_code == 202


def test_an_empty_answer_says_what_the_lake_holds(pipeline: Pipeline) -> None:
    data_dir = str(pipeline.settings.data_dir)
    lake = str(pipeline.settings.data_dir / "lake")
    send(pipeline, purchase("a", timestamp=NOW_US // 1000))
    send(pipeline, purchase("b", timestamp=NOW_US // 1000))
    process_all(pipeline)  # counted and published, not flushed
    runner = CliRunner()

    unflushed = runner.invoke(cli, ["query", "--data-dir", data_dir, "select * from events"])
    assert unflushed.exit_code == 0, unflushed.output
    assert unflushed.stdout.splitlines()[-1] == "(0 rows)"
    lines = unflushed.stderr.splitlines()
    assert (
        lines[0]
        == f"convtrack: the lake ({lake}) holds no events: the server has not flushed it yet"
    )
    assert lines[1].startswith("convtrack: 2 processed event(s) are not in the lake yet")
    assert "next flush (every 300 s, cold.flush_interval_secs)" in lines[1]

    pipeline.cold.flush_all()
    elsewhere = runner.invoke(
        cli, ["query", "--data-dir", data_dir, "--format", "csv",
              "select * from events where event_date = '2026-01-01'"],
    )  # fmt: skip
    assert elsewhere.exit_code == 0, elsewhere.output
    assert elsewhere.stdout.count("\n") == 1  # the header only: stdout stays CSV
    lines = elsewhere.stderr.splitlines()
    assert lines[0].startswith(
        f"convtrack: the lake ({lake}) holds 2 event(s) dated 2026-11-28;"
        " last flush 2026-11-28 10:00:00 UTC ("
    )
    assert lines[1] == "convtrack: no processed event is waiting for a flush"

    send(pipeline, purchase("c", timestamp=NOW_US // 1000))  # accepted, not processed
    send(pipeline, purchase("d", timestamp=NOW_US // 1000))
    on_its_way = runner.invoke(
        cli, ["query", "--data-dir", data_dir, "select * from events where value < 0"]
    )
    assert on_its_way.stderr.splitlines()[1] == (
        "convtrack: up to 2 accepted event(s) are not processed yet (the processor takes"
        " them within moments); `convtrack flush` writes them now"
    )
    process_all(pipeline)

    none = runner.invoke(cli, ["attribution", "--model", "linear", "--from", "2026-11-01",
                               "--to", "2026-11-02", "--data-dir", data_dir])  # fmt: skip
    assert none.exit_code == 0, none.output
    assert none.stderr.splitlines()[0] == (
        "convtrack: no conversion dated 2026-11-01 to 2026-11-02 in the lake"
    )
    assert "holds 2 event(s) dated 2026-11-28" in none.stderr


def test_hint_lines() -> None:
    now = NOW_US
    never = LakeSummary(rows=0, first_date=None, last_date=None, last_flush_at_us=None)
    assert summary_lines(never, "s3://b/lake", now) == [
        "the lake (s3://b/lake) holds no events: the server has not flushed it yet"
    ]
    span = LakeSummary(rows=12, first_date="2026-11-20", last_date="2026-11-28",
                       last_flush_at_us=now - 180_000_000)  # fmt: skip
    assert summary_lines(span, "/d/lake", now) == [
        "the lake (/d/lake) holds 12 event(s) dated 2026-11-20 to 2026-11-28;"
        " last flush 2026-11-28 09:57:00 UTC (3 min ago)"
    ]
    emptied = LakeSummary(rows=0, first_date=None, last_date=None, last_flush_at_us=now)
    assert summary_lines(emptied, "/d/lake", now) == [
        "the lake (/d/lake) holds no events; last flush 2026-11-28 10:00:00 UTC (0 s ago)"
    ]
    assert waiting_line(LogLag(0, 0.0), 300) == "no processed event is waiting for a flush"
    assert waiting_line(LogLag(7, 95.2), 60).startswith(
        "7 processed event(s) are not in the lake yet (the oldest for 95 s): the server"
        " writes them at its next flush (every 60 s"
    )
    assert "not in it yet" in waiting_line(None, 300)  # Kafka: not counted from here


def test_reconcile_of_a_day_with_nothing_exits_4(tmp_path: Path) -> None:
    built = make_pipeline(tmp_path / "data", SystemClock())
    try:
        send(built, purchase("only", timestamp=NOW_US // 1000))  # a day that is not today
        process_all(built)
        built.cold.flush_all()
    finally:
        built.close()
    data_dir = str(tmp_path / "data")
    today = datetime.now(UTC).date().isoformat()
    text = convtrack("reconcile", "--date", "today", "--data-dir", data_dir)
    assert text.returncode == 4, text.stdout + text.stderr
    assert text.stdout.splitlines()[-1] == (
        f"no events on {today} in the counters or the lake: no conversions to compare"
    )
    assert "holds 1 event(s) dated 2026-11-28" in text.stderr
    as_json = convtrack("reconcile", "--date", today, "--data-dir", data_dir, "--format", "json")
    assert as_json.returncode == 4
    body = json.loads(as_json.stdout)
    assert (body["status"], body["exit_code"], body["campaigns"]) == ("empty", 4, [])
    agreed = convtrack("reconcile", "--date", "2026-11-28", "--data-dir", data_dir)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "USD 49.99" in agreed.stdout


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("today", date(2026, 12, 2)),
        ("Today", date(2026, 12, 2)),
        ("yesterday", date(2026, 12, 1)),
        ("0d", date(2026, 12, 2)),
        ("7d", date(2026, 11, 25)),
        ("400d", date(2025, 10, 28)),
        ("2026-02-28", date(2026, 2, 28)),
        ("2026-02-30", None),
        ("7", None),
        ("-7d", None),
        ("7 days", None),
        ("20261128", None),
        ("", None),
    ],
)
def test_relative_dates(text: str, day: date | None) -> None:
    assert parse_day(text, today=date(2026, 12, 2)) == day


def test_a_bad_date_names_the_forms(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["attribution", "--model", "linear", "--from", "last week",
                                    "--data-dir", str(tmp_path)])  # fmt: skip
    assert done.exit_code == 2
    assert "'last week' is not a date: use YYYY-MM-DD, today, yesterday or Nd" in done.stderr
    done = CliRunner().invoke(cli, ["reconcile", "--date", "tomorrow", "--data-dir", str(tmp_path)])
    assert done.exit_code == 2
    assert "--date" in done.stderr


def test_the_admin_key_and_the_url(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"server": {"data_dir": str(tmp_path)}})
    with pytest.raises(click.ClickException, match="no admin key: set CONVTRACK_ADMIN_KEY"):
        admin_key(settings, environ={})
    (tmp_path / "keys.json").write_text(json.dumps({"write": "w" * 20, "admin": "a" * 20}))
    assert admin_key(settings, environ={}) == "a" * 20
    assert admin_key(settings, environ={"CONVTRACK_ADMIN_KEY": "e" * 20}) == "e" * 20
    assert server_url(settings, None) == "http://127.0.0.1:8080"
    assert server_url(settings, "http://h:1/") == "http://h:1"
    anywhere = load_settings(environ={}, overrides={"server": {"host": "0.0.0.0", "port": 9}})
    assert server_url(anywhere, None) == "http://127.0.0.1:9"


def test_a_requested_flush_writes_now_and_a_failing_lake_answers_why(tmp_path: Path) -> None:
    cold = Cold(tmp_path, open_cold_store(str(tmp_path / "lake")))
    writer = TableWriter(
        lake=cold.lake, source=EventsSource(cold.log.consumer("flush")), clock=cold.clock,
        metrics=cold.metrics, flush_interval_secs=3600, flush_max_rows=1000,
    )  # fmt: skip
    runner = ColdStoreRunner([writer], cold.metrics, clock=cold.clock)
    assert runner.request_flush() is None  # not started: nobody would answer
    runner.start()
    try:
        for _ in range(3):
            cold.send()
        request = runner.request_flush()
        assert request is not None and request.wait(10)
        assert (request.rows, request.error) == ({"events": 3}, None)
        assert cold.rows() == 3  # without the hour the interval asks for

        away = swap_for_file(Path(cold.lake.root))
        cold.send()
        failed = runner.request_flush()
        assert failed is not None and failed.wait(10)
        assert failed.rows == {}
        assert failed.error is not None and failed.error.startswith("the lake is failing: ")
        # In its backoff (the manual clock does not move): refused at once, saying why.
        refused = runner.request_flush()
        assert refused is not None and refused.wait(10)
        assert refused.error is not None and refused.error.startswith("the lake is failing: ")
        restore(Path(cold.lake.root), away)
    finally:
        runner.stop(flush=False)
        cold.log.close()
    assert runner.request_flush() is None  # stopped
