"""Slack incoming webhooks: golden messages, alerts, answers, the stand-in's contract, and the
real pipeline against the stand-in with faults (destinations.md §6c, §8)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import Delivered, Forwarded, Reject, Retry, SetupFault, Throttled
from convtrack.deliver.destinations import create_destination
from convtrack.deliver.destinations.slack import SlackDestination
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing import wait_for
from convtrack.testing.standins.base import Answer, Slow
from convtrack.testing.standins.slack import SlackStandIn
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import ENV, call

URL_ENV = "SLACK_HOOK_URL"
SECRET_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/sEcReTtOkEn42"
EVENT_US = 1_759_320_000_000_000  # 2025-10-01 12:00:00 UTC


def table(**kw: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"kind": "slack", "name": "sales", "webhook_url_env": URL_ENV}
    settings.update(kw)
    return settings


def only(destination: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides with this one destination table."""
    return {"destinations": [destination]}


def make_destination(environ: dict[str, str] | None = None, **kw: Any) -> SlackDestination:
    settings = load_settings(environ={}, overrides=only(table(**kw)))
    env = {URL_ENV: SECRET_URL} if environ is None else environ
    destination = create_destination(settings.destinations[0], env)
    assert isinstance(destination, SlackDestination)
    return destination


def forwarded(
    event_id: str,
    *,
    event_name: str = "Purchase",
    value: int | None = 1250,
    currency: str | None = "EUR",
    campaign_id: str = "spring",
    country_code: str = "DE",
    device_type: str = "mobile",
    seconds: int = 0,
) -> Forwarded:
    """An event as the runner forwards it, with a user that must never show in Slack."""
    time_us = EVENT_US + seconds * 1_000_000
    contact = {"email": "jane.doe@example.com", "phone": "+1 555 123 4567",
               "client_ip": "203.0.113.7", "fbp": "fb.1.1759000000000.1098115397"}  # fmt: skip
    user = hash_user(contact)
    envelope = Envelope(event_id=event_id, source="default", event_name=event_name,
                        event_time_us=time_us, received_at_us=time_us, value=value,
                        currency=currency, user_id="user-8842", user=user,
                        context={"ip": "203.0.113.7"})  # fmt: skip
    processed = ProcessedEvent(event=envelope, source_partition=0, source_offset=0,
                               campaign_id=campaign_id, event_date="2025-10-01",
                               is_conversion=True, device_type=device_type,
                               country_code=country_code, logged_at_us=time_us,
                               processed_at_us=time_us, counted_at_us=time_us)  # fmt: skip
    return Forwarded(event_id, 0, 0, forward_payload(processed))


def message(destination: SlackDestination, events: list[Forwarded]) -> dict[str, Any]:
    request = destination.build(events, EVENT_US)
    assert request.method == "POST" and request.url == SECRET_URL
    assert request.headers == {"Content-Type": "application/json"}
    result: dict[str, Any] = json.loads(request.body)
    return result


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def footer(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


# -- golden messages --------------------------------------------------------------


def test_a_batch_is_one_readable_message() -> None:
    events = [
        forwarded("o1"),
        forwarded("o2", value=2500, campaign_id="(none)", country_code="ZZ", seconds=5),
        forwarded(
            "o3", event_name="Lead", value=1000, currency="USD", device_type="desktop", seconds=65
        ),
        forwarded("o4", event_name="Signup", value=None, currency=None, seconds=3),
    ]
    assert message(make_destination(), events) == {
        "text": "4 conversions: EUR 37.50 + USD 10.00",
        "blocks": [
            mrkdwn(":moneybag: *4 conversions* · EUR 37.50 + USD 10.00"),
            mrkdwn(
                "• *Purchase* · EUR 12.50 · campaign spring · DE · mobile\n"
                "• *Purchase* · EUR 25.00 · mobile\n"
                "• *Lead* · USD 10.00 · campaign spring · DE · desktop\n"
                "• *Signup* · campaign spring · DE · mobile"
            ),
            footer("convtrack · 2025-10-01 12:00:00 UTC to 2025-10-01 12:01:05 UTC"),
        ],
    }


def test_a_message_per_conversion() -> None:
    destination = make_destination(message_per="conversion")
    assert destination.max_batch_events == 1
    assert message(destination, [forwarded("o1", value=123456, currency="JPY")]) == {
        "text": "New conversion: *Purchase* · JPY 123456 · campaign spring · DE · mobile",
        "blocks": [
            mrkdwn(":moneybag: *Purchase* · JPY 123456 · campaign spring · DE · mobile"),
            footer("convtrack · 2025-10-01 12:00:00 UTC"),
        ],
    }


def test_long_batches_are_capped_and_nothing_personal_is_shown() -> None:
    events = [forwarded(f"o{i}", value=100 + i, seconds=i) for i in range(23)]
    body = make_destination(max_lines=12).build(events, EVENT_US).body
    text = body.decode()
    result = json.loads(body)
    lines = [line for b in result["blocks"][1:-1] for line in b["text"]["text"].split("\n")]
    assert len(lines) == 13 and lines[-1] == "_…and 11 more_"
    assert len(result["blocks"]) == 3  # title, the lines, footer
    assert result["text"] == "23 conversions: " + f"EUR {sum(100 + i for i in range(23)) / 100:.2f}"
    user = events[0].payload.user
    for private in ("user-8842", "203.0.113.7", "jane", "555", "fb.1.", "o1", *user.values()):
        assert private not in text, private


def test_what_we_did_not_write_is_escaped() -> None:
    event = forwarded("o1", event_name="Buy <b>&now", campaign_id="<!channel> " + "x" * 80)
    line = message(make_destination(), [event])["blocks"][0]["text"]["text"]
    assert "<" not in line and ">" not in line
    assert "*Buy &lt;b&gt;&amp;now*" in line
    assert "campaign &lt;!channel&gt; " + "x" * 48 + "…" in line


def test_escaped_lines_stay_within_slacks_limits(clock: ManualClock) -> None:
    """Escaping makes "<" four characters: sections are split by size, and Slack takes them."""
    events = [forwarded(f"o{i}", event_name="<" * 80, campaign_id="&" * 80) for i in range(40)]
    request = make_destination(max_lines=40).build(events, EVENT_US)
    blocks = json.loads(request.body)["blocks"]
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    assert sum(b["text"]["text"].count("• ") for b in blocks if b["type"] == "section") == 40
    standin = SlackStandIn(now=clock.monotonic)
    try:
        answer = httpx.post(standin.url, content=request.body, headers=request.headers)
    finally:
        standin.close()
    assert (answer.status_code, answer.text) == (200, "ok")


def test_an_alert_is_a_clear_warning() -> None:
    destination = make_destination()
    request = destination.alert_request("destination meta paused: HTTP 401 <token expired>",
                                        EVENT_US)  # fmt: skip
    assert request.url == SECRET_URL and request.method == "POST"
    assert json.loads(request.body) == {
        "text": ":warning: convtrack alert: "
        "destination meta paused: HTTP 401 &lt;token expired&gt;",
        "blocks": [
            mrkdwn(
                ":warning: *convtrack alert*\n"
                "destination meta paused: HTTP 401 &lt;token expired&gt;"
            ),
            footer("convtrack · sales · 2025-10-01 12:00:00 UTC"),
        ],
    }
    resolved = json.loads(destination.alert_request(":white_check_mark: li: resolved", 0).body)
    assert resolved["blocks"][0] == mrkdwn(":white_check_mark: *convtrack alert*\nli: resolved")
    long = json.loads(destination.alert_request("y" * 5000, EVENT_US).body)
    assert len(long["blocks"][0]["text"]["text"]) <= 3000
    assert destination.alerts


# -- settings and the secret URL -----------------------------------------------------


def test_the_url_is_a_secret_and_endpoint_wins() -> None:
    destination = make_destination()
    assert not destination.ad_platform and not destination.dedupes_on_event_id
    assert destination.min_interval_secs == 1.0 and destination.max_batch_events == 100
    assert make_destination(min_interval_secs=2.5).min_interval_secs == 2.5
    standin_url = "http://127.0.0.1:9/services/T/B/X"
    chosen = make_destination(environ={}, endpoint=standin_url)  # the variable is not read
    assert chosen.build([forwarded("o1")], EVENT_US).url == standin_url
    assert SECRET_URL not in repr(chosen.__dict__)  # the config's repr hides the URL
    with pytest.raises(ConfigError, match=URL_ENV):
        make_destination(environ={})
    with pytest.raises(ConfigError, match=URL_ENV) as refused:
        make_destination(environ={URL_ENV: "http://hooks.slack.com/services/T/B/sEcReT"})
    assert "sEcReT" not in str(refused.value)
    for bad in ({"message_per": "day"}, {"max_lines": 0}, {"webhook_url_env": "1X"},
                {"secret_env": "X"}):  # fmt: skip
        with pytest.raises(ConfigError):
            load_settings(environ={}, overrides=only(table(**bad)))


# -- answers ------------------------------------------------------------------------


def test_answers_become_outcomes() -> None:
    read = make_destination().read
    events = [forwarded("o1")]
    assert read(events, 200, {}, b"ok") == Delivered()
    throttled = read(events, 429, {"retry-after": "30"}, b"rate_limited")
    assert throttled == Throttled(after_secs=30.0, reason="HTTP 429: rate_limited")
    rollup = read(events, 500, {}, b"rollup_error")
    assert isinstance(rollup, Retry)
    assert isinstance(read(events, 503, {}, b""), Retry)
    for status, answer in ((403, "invalid_token"), (403, "action_prohibited"),
                           (404, "channel_not_found"), (404, "no_service"),
                           (410, "channel_is_archived"), (400, "team_disabled"),
                           (404, "no_active_hooks"), (400, "no_service_id"), (404, "no_team"),
                           (403, "posting_to_general_channel_denied"),
                           (200, "invalid_token")):  # fmt: skip
        outcome = read(events, status, {}, answer.encode())
        assert outcome == SetupFault(f"HTTP {status}: {answer}"), answer
    for answer in ("invalid_payload", "no_text"):
        assert read(events, 400, {}, answer.encode()) == Reject(f"HTTP 400: {answer}")
    assert read(events, 400, {}, b"invalid_blocks") == Reject("HTTP 400: invalid_blocks")


# -- the stand-in enforces the contract ---------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def standin(clock: ManualClock) -> Iterator[SlackStandIn]:
    server = SlackStandIn(now=clock.monotonic)
    yield server
    server.close()


def test_the_standin_checks_messages_and_its_rate(
    standin: SlackStandIn, clock: ManualClock
) -> None:
    json_type = {"content-type": "application/json"}
    good = json.loads(make_destination(environ={}, endpoint=standin.url).build(
        [forwarded("o1")], EVENT_US).body)  # fmt: skip
    answers = [
        httpx.post(standin.url, content=b"{not json", headers=json_type),
        httpx.post(standin.url, json={"blocks": []}),
        httpx.post(standin.url, json={"text": "hi", "blocks": [{"type": "section"}]}),
    ]
    assert [(a.status_code, a.text) for a in answers] == [
        (400, "invalid_payload"), (400, "no_text"), (400, "invalid_blocks")]  # fmt: skip
    clock.advance(10)  # the bucket refills: a burst of three, then one a second
    sent = [httpx.post(standin.url, json=good) for _ in range(4)]
    assert [(a.status_code, a.text) for a in sent[:3]] == [(200, "ok")] * 3
    assert sent[3].status_code == 429 and sent[3].headers["retry-after"] == "1"
    clock.advance(1)
    assert httpx.post(standin.url, json=good).text == "ok"
    assert httpx.post(standin.base_url + "/services/T/B/wrong", json=good).status_code == 404
    assert len(standin.messages) == 4 and standin.rate_limited == 1


# -- the real pipeline against the stand-in -------------------------------------------


def open_pipeline(data_dir: Path, clock: ManualClock, url: str, **kw: Any) -> Pipeline:
    return destination_pipeline(data_dir, clock, table(endpoint=url, batch_max_wait_secs=0, **kw))


def track(pipeline: Pipeline, clock: ManualClock, i: int, **kw: Any) -> None:
    body = {"event_id": f"order-{i}", "event_name": "Purchase", "user_id": f"user-{i}",
            "value": 1000 + i, "currency": "EUR", "campaign_id": "spring",
            "user": {"email": f"buyer{i}@example.com"},
            "timestamp": clock.now_us() // 1000}  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def amounts(messages: list[dict[str, Any]]) -> list[str]:
    """Each conversion's value as shown, one per conversion line of every message."""
    lines = [
        line
        for m in messages
        for block in m["blocks"]
        if block["type"] == "section"
        for line in block["text"]["text"].split("\n")
        if "*Purchase*" in line
    ]
    return [re.search(r"EUR (\d+\.\d\d)", line).group(1) for line in lines]  # type: ignore[union-attr]


def test_every_conversion_is_posted_once_through_faults(tmp_path: Path, clock: ManualClock) -> None:
    # A hook with no burst: the runner must pace itself and honour Retry-After.
    standin = SlackStandIn(now=clock.monotonic, burst=1)
    standin.plan = [Answer(500, {}, b"rollup_error")]
    pipeline = open_pipeline(tmp_path, clock, standin.url, message_per="conversion",
                             min_interval_secs=0)  # fmt: skip
    try:
        for i in range(1, 6):
            track(pipeline, clock, i)
        track(pipeline, clock, 6, consent={"ad_user_data": False})  # Slack is no ad platform
        track(pipeline, clock, 7, event_name="page_view")  # not a conversion
        deliver_all(pipeline)
        assert call(pipeline, "GET", "/v1/dead-letters?destination=sales",
                    key=ADMIN_KEY).json()["total"] == 0  # fmt: skip
    finally:
        pipeline.close()
        standin.close()
    assert sorted(amounts(standin.messages)) == [f"10.0{i}" for i in range(1, 7)]
    assert standin.rate_limited >= 1  # it was throttled, waited, and got through
    for request in standin.requests:
        assert b"example.com" not in request.body and b"user-" not in request.body


def test_a_batch_message_paced_at_one_per_second(tmp_path: Path, clock: ManualClock) -> None:
    standin = SlackStandIn(now=clock.monotonic, burst=1)
    pipeline = open_pipeline(tmp_path, clock, standin.url, batch_max_events=4, max_lines=2)
    try:
        for i in range(1, 10):
            track(pipeline, clock, i)
        deliver_all(pipeline)
    finally:
        pipeline.close()
        standin.close()
    assert standin.rate_limited == 0  # min_interval_secs (1 s) kept the runner within the rate
    texts = [m["text"] for m in standin.messages]
    assert texts[:2] == ["4 conversions: EUR 40.10", "4 conversions: EUR 40.26"]
    assert texts[2].startswith("New conversion: *Purchase* · EUR 10.09 · campaign spring")
    assert "ZZ" not in texts[2]  # an unknown country is not shown
    assert len(texts) == 3


def test_a_revoked_hook_pauses_instead_of_dead_lettering(
    tmp_path: Path, clock: ManualClock
) -> None:
    standin = SlackStandIn(now=clock.monotonic)
    standin.plan = [Answer(404, {}, b"no_active_hooks")]
    pipeline = open_pipeline(tmp_path, clock, standin.url, setup_pause_secs=60)
    try:
        track(pipeline, clock, 1)
        deliver_all(pipeline)
        clock.advance(61)
        deliver_all(pipeline)
        total = call(pipeline, "GET", "/v1/dead-letters?destination=sales", key=ADMIN_KEY)
    finally:
        pipeline.close()
        standin.close()
    assert total.json()["total"] == 0
    assert amounts(standin.messages) == ["10.01"]


def test_a_paused_destination_is_announced_in_slack(tmp_path: Path, clock: ManualClock) -> None:
    """LinkedIn refuses our token: the destination pauses and the Slack hook hears of it."""
    from convtrack.testing.standins.linkedin import LinkedInStandIn

    slack = SlackStandIn(now=clock.monotonic)
    linkedin = LinkedInStandIn(token="the-right-token", now_ms=lambda: clock.now_us() // 1000)
    env = {**ENV, "LI_TOKEN": "an-expired-token"}
    tables = [
        {"kind": "linkedin", "name": "li", "conversion_rule_id": "104012",
         "access_token_env": "LI_TOKEN", "endpoint": linkedin.base_url,
         "batch_max_wait_secs": 0},
        table(endpoint=slack.url, batch_max_wait_secs=0, event_names=["Lead"]),
    ]  # fmt: skip
    overrides: dict[str, Any] = {"server": {"data_dir": str(tmp_path)}, "destinations": tables}
    settings = load_settings(environ=env, overrides=overrides)
    pipeline = Pipeline(settings, clock=clock, environ=env, delivery_sleep=clock.advance)
    try:
        track(pipeline, clock, 1)
        deliver_all(pipeline)
        deliver_all(pipeline)  # the Slack runner posts what the LinkedIn runner raised
    finally:
        pipeline.close()
        slack.close()
        linkedin.close()
    assert linkedin.accepted == [] and linkedin.answers == [401]
    (alert,) = slack.messages
    shown = alert["blocks"][0]["text"]["text"]
    title, detail = shown.split("\n", 1)
    assert re.fullmatch(r":[a-z_]+: \*convtrack alert\*", title)  # one sign, a bold title
    assert "li" in detail and "HTTP 401" in detail
    assert "an-expired-token" not in json.dumps(alert)


# -- a real server process: a crash mid-post, and the secret URL --------------------


def slack_config(path: Path, **fields: Any) -> Path:
    lines = ["[[destinations]]", 'kind = "slack"', f'webhook_url_env = "{URL_ENV}"',
             "batch_max_wait_secs = 0"]  # fmt: skip
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def server_dead_letters(server: ServerProcess) -> dict[str, Any]:
    answer = httpx.get(server.url + "/v1/dead-letters?destination=sales", headers=auth(ADMIN_KEY))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def post_purchase(server: ServerProcess, event_id: str) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", "value": 4999,
            "currency": "EUR", "campaign_id": "spring"}  # fmt: skip
    answer = httpx.post(server.url + "/v1/track", json=body, headers=auth(WRITE_KEY))
    assert answer.status_code == 202, answer.text


def test_a_crash_mid_post_is_not_posted_twice(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Slack cannot deduplicate: after a SIGKILL during a post, the batch waits for review."""
    standin = SlackStandIn()
    standin.plan = [Slow(30)]  # the first post hangs until the server is killed
    config = slack_config(tmp_path / "convtrack.toml", name="sales", endpoint=standin.url)
    server = server_factory(args=["--config", str(config)])
    try:
        server.start(timeout_secs=30)  # the machine is shared: allow a slow start
        post_purchase(server, "order-1")
        wait_for("the post to reach Slack", lambda: len(standin.requests) == 1)
        server.kill()
        server.start(timeout_secs=30)  # the machine is shared: allow a slow start
        wait_for("the interrupted post to be dead-lettered",
                 lambda: server_dead_letters(server)["total"] == 1)  # fmt: skip
        (letter,) = server_dead_letters(server)["items"]
        assert letter["event_id"] == "order-1" and "not resent" in letter["last_answer"]
        assert len(standin.requests) == 1  # not posted again on its own
        post_purchase(server, "order-2")  # the runner went past it
        wait_for("the next post", lambda: len(standin.messages) == 1)
        replay = httpx.post(server.url + "/v1/dead-letters/replay", json={"destination": "sales"},
                            headers=auth(ADMIN_KEY))  # fmt: skip
        assert replay.json() == {"replayed": 1}  # the operator checked Slack and chose to
        wait_for("the replayed post", lambda: len(standin.messages) == 2)
        assert server_dead_letters(server)["total"] == 0
    finally:
        server.stop()
        standin.close()
    assert len(standin.requests) == 3


def test_the_hook_url_stays_secret(server_factory: ServerFactory, tmp_path: Path) -> None:
    """The URL from the environment is nowhere in logs, answers or dead letters."""
    secret = "T0SECRET/B0SECRET/sEcReTtOkEn42"
    with socket.socket() as sock:  # a port nothing listens on: every post fails
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = slack_config(tmp_path / "convtrack.toml", name="sales", max_attempts=2,
                          retry_base_secs=0.01, retry_cap_secs=0.02)  # fmt: skip
    env = {URL_ENV: f"https://127.0.0.1:{port}/services/{secret}"}
    server = server_factory(env, args=["--config", str(config)])
    try:
        server.start(timeout_secs=30)  # the machine is shared: allow a slow start
        post_purchase(server, "order-1")
        wait_for("the failed post to be dead-lettered",
                 lambda: server_dead_letters(server)["total"] == 1)  # fmt: skip
        answers = [
            httpx.get(server.url + path, headers=auth(ADMIN_KEY)).text
            for path in ("/v1/dead-letters?destination=sales", "/metrics", "/healthz")
        ]
        assert server.terminate() == 0
    finally:
        server.stop()
    assert "ConnectError" in answers[0]  # the failure is told, the URL's path is not
    for part in ("sEcReTtOkEn42", "B0SECRET"):
        for text in answers:
            assert part not in text
        assert part.encode() not in server.log_path.read_bytes()
        for path in server.data_dir.rglob("*"):
            if path.is_file():
                assert part.encode() not in path.read_bytes(), path
