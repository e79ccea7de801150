"""``convtrack destinations check`` against real stand-ins: GA4's validator, the other
kinds' configuration, credentials and endpoint resolution."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from convtrack.cli.main import cli
from convtrack.testing.standins.base import Answer
from convtrack.testing.standins.ga4 import Ga4StandIn
from convtrack.testing.standins.google_ads import GoogleAdsStandIn

SECRET = "s3cr3t-never-printed"


@pytest.fixture
def ga4_standin() -> Iterator[Ga4StandIn]:
    server = Ga4StandIn(SECRET)
    yield server
    server.close()


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def run(tmp_path: Path, tables: list[dict[str, Any]], *args: str,
        env: dict[str, str] | None = None) -> Result:  # fmt: skip
    text = "".join(
        "[[destinations]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) + "\n"
        for t in tables
    )
    path = tmp_path / "convtrack.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n{text}')
    environ = {"GA4_SECRET": SECRET, "GADS_TOKEN": "ya29.token", **(env or {})}
    return CliRunner().invoke(cli, ["destinations", "check", "--config", str(path), *args],
                              env=environ)  # fmt: skip


def ga4_table(standin: Ga4StandIn, **kw: Any) -> dict[str, Any]:
    table = {"kind": "ga4", "name": "analytics", "endpoint": standin.base_url,
             "measurement_id": "G-ABC123XYZ", "api_secret_env": "GA4_SECRET",
             "event_map": {"Purchase": "purchase"}}  # fmt: skip
    table.update(kw)
    return table


def test_ga4_passes_the_validator(tmp_path: Path, ga4_standin: Ga4StandIn) -> None:
    result = run(tmp_path, [ga4_table(ga4_standin)])
    assert result.exit_code == 0, result.output
    assert "analytics (ga4): ok" in result.output
    assert "Purchase -> 'purchase': /debug/mp/collect has no validation messages" in result.output
    assert "not checked:" in result.output
    assert SECRET not in result.output
    # The sample went to the validator only: a real shape, and nothing was recorded.
    (request,) = ga4_standin.requests
    assert request.path == "/debug/mp/collect" and ga4_standin.accepted == []
    body = json.loads(request.body)
    assert body["events"][0]["name"] == "purchase" and body["client_id"]
    assert body["validation_behavior"] == "ENFORCE_RECOMMENDATIONS"
    assert body["events"][0]["params"]["value"] == 49.99


def test_ga4_validation_messages_fail_the_check(tmp_path: Path, ga4_standin: Ga4StandIn) -> None:
    complaint = {"validationMessages": [{"fieldPath": "events[0].params.currency",
                                         "description": "Currency must be ISO 4217.",
                                         "validationCode": "VALUE_INVALID"}]}  # fmt: skip
    ga4_standin.plan = [Answer(200, {}, json.dumps(complaint).encode())]
    result = run(tmp_path, [ga4_table(ga4_standin)])
    assert result.exit_code == 1, result.output
    assert "analytics (ga4): FAILED" in result.output
    assert "VALUE_INVALID at events[0].params.currency: Currency must be ISO 4217." in (
        result.output
    )


def test_ga4_names_that_would_be_skipped_fail(tmp_path: Path, ga4_standin: Ga4StandIn) -> None:
    table = ga4_table(ga4_standin, event_map={"Signup": "session_start", "Purchase": "purchase"})
    result = run(tmp_path, [table])
    assert result.exit_code == 1, result.output
    assert "Signup -> 'session_start': would be skipped as reserved_name" in result.output
    assert "Purchase -> 'purchase': /debug/mp/collect has no validation messages" in result.output
    assert len(ga4_standin.requests) == 1


def test_a_missing_secret_or_a_bad_answer_fails(tmp_path: Path, ga4_standin: Ga4StandIn) -> None:
    result = run(tmp_path, [ga4_table(ga4_standin, api_secret_env="NOT_SET_ANYWHERE")])
    assert result.exit_code == 1 and "NOT_SET_ANYWHERE" in result.output
    assert ga4_standin.requests == []
    ga4_standin.plan = [Answer(404, {}, b"nope")]
    result = run(tmp_path, [ga4_table(ga4_standin)])
    assert result.exit_code == 1 and "answered HTTP 404" in result.output


def test_other_kinds_are_checked_offline(tmp_path: Path) -> None:
    standin = GoogleAdsStandIn()
    try:
        good = {"kind": "google_ads", "name": "google", "endpoint": standin.base_url,
                "customer_id": "1234567890", "conversion_action_id": "555",
                "access_token_env": "GADS_TOKEN"}  # fmt: skip
        unresolvable = dict(good, name="nowhere", endpoint="https://convtrack-check.invalid")
        result = run(tmp_path, [good, unresolvable])
        # A host that does not resolve from here is not a wrong setting: exit 3, not 1.
        assert result.exit_code == 3, result.output
        assert "google (google_ads): ok" in result.output
        assert "endpoint: 127.0.0.1 resolves" in result.output
        assert f"endpoint: 127.0.0.1:{standin.base_url.rsplit(':', 1)[1]} takes" in result.output
        assert "not checked: that the OAuth token is valid" in result.output
        assert "nowhere (google_ads): unreachable from here" in result.output
        assert "UNREACHABLE endpoint: convtrack-check.invalid does not resolve" in result.output
        assert standin.requests == []  # nothing is sent to Google
        only = run(tmp_path, [good, unresolvable], "--name", "google")
        assert only.exit_code == 0 and "nowhere" not in only.output
        unknown = run(tmp_path, [good], "--name", "nope")
        assert unknown.exit_code == 2 and "no destination is named 'nope'" in unknown.output
        missing = run(tmp_path, [good], env={"GADS_TOKEN": ""})
        assert missing.exit_code == 1 and "GADS_TOKEN" in missing.output
    finally:
        standin.close()


def test_no_destinations(tmp_path: Path) -> None:
    result = run(tmp_path, [])
    assert result.exit_code == 0 and "no destinations configured" in result.output


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nothing else takes it), not listening."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_a_refused_connection_is_unreachable_not_wrong(tmp_path: Path, closed_port: int) -> None:
    table = {"kind": "google_ads", "name": "google", "endpoint": f"http://127.0.0.1:{closed_port}",
             "customer_id": "1234567890", "conversion_action_id": "555",
             "access_token_env": "GADS_TOKEN"}  # fmt: skip
    result = run(tmp_path, [table])
    assert result.exit_code == 3, result.output
    assert "google (google_ads): unreachable from here (the settings may be right)" in (
        result.output
    )
    assert f"UNREACHABLE endpoint: 127.0.0.1:{closed_port} cannot be connected to" in (
        result.output
    )
    # Wrong settings win: a missing credential beside an unreachable platform is exit 1.
    missing = dict(table, name="other", access_token_env="NOT_SET_ANYWHERE")
    both = run(tmp_path, [table, missing])
    assert both.exit_code == 1, both.output
    assert "other (google_ads): FAILED" in both.output


def test_ga4_out_of_reach_or_failing_is_unreachable(
    tmp_path: Path, ga4_standin: Ga4StandIn, closed_port: int
) -> None:
    ga4_standin.plan = [Answer(503, {}, b"busy")]
    failing = run(tmp_path, [ga4_table(ga4_standin)])
    assert failing.exit_code == 3, failing.output
    assert "UNREACHABLE /debug/mp/collect answered HTTP 503" in failing.output
    away = run(tmp_path, [ga4_table(ga4_standin, endpoint=f"http://127.0.0.1:{closed_port}")])
    assert away.exit_code == 3, away.output
    assert "analytics (ga4): unreachable from here" in away.output
    assert len(ga4_standin.requests) == 1  # only the first run reached the validator
