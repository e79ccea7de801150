"""GA4 Measurement Protocol: golden requests, client ids, names and skips, answers, the
stand-in's validation, and the real pipeline against the stand-in with faults."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import Delivered, Forwarded, Reject, Retry
from convtrack.deliver.destinations import ga4
from convtrack.deliver.destinations.ga4.request import debug_request
from convtrack.deliver.destinations.ga4.response import read_response, validation_messages
from convtrack.deliver.destinations.ga4.settings import Ga4Settings
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing import wait_for
from convtrack.testing.standins.base import Answer, Slow
from convtrack.testing.standins.ga4 import Ga4StandIn
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import call

SECRET = "s3cr3t"
MEASUREMENT_ID = "G-ABC123XYZ"
EVENT_US = 1_759_320_000_250_000  # 2025-10-01T12:00:00.250Z
HOUR_US = 3600 * 1_000_000


def forwarded(
    event_id: str,
    offset: int = 0,
    *,
    name: str = "Purchase",
    value: int | None = 14252,
    currency: str | None = "USD",
    user_id: str | None = "user-8842",
    session_id: str | None = "1759319000",
    properties: dict[str, Any] | None = None,
    consent: dict[str, bool] | None = None,
    time_us: int = EVENT_US,
    event_map: dict[str, str] | None = None,
) -> Forwarded:
    """One event through the real model into the canonical payload."""
    envelope = Envelope(event_id=event_id, source="default", event_name=name,
                        event_time_us=time_us, received_at_us=time_us, user_id=user_id,
                        session_id=session_id, value=value, currency=currency,
                        properties=properties or {}, consent=consent or {})  # fmt: skip
    processed = ProcessedEvent(event=envelope, source_partition=0, source_offset=offset,
                               campaign_id="c", event_date="2025-10-01", is_conversion=True,
                               logged_at_us=time_us, processed_at_us=time_us,
                               counted_at_us=time_us)  # fmt: skip
    payload = forward_payload(processed, event_map={"Purchase": "purchase", **(event_map or {})})
    return Forwarded(event_id, 0, offset, payload)


def settings_of(**kw: Any) -> Ga4Settings:
    table = {"kind": "ga4", "name": "ga", "measurement_id": MEASUREMENT_ID,
             "api_secret_env": "GA4_SECRET"}  # fmt: skip
    table.update(kw)
    settings = load_settings(environ={}, overrides={"destinations": [table]}).destinations[0]
    assert isinstance(settings, Ga4Settings)
    return settings


def make(**kw: Any) -> ga4.Ga4Destination:
    return ga4.create(settings_of(**kw), {"GA4_SECRET": SECRET})


def pseudo_client_id(source: str, who: str) -> str:
    digest = hashlib.sha256(f"convtrack:{source}:{who}".encode()).hexdigest()
    return f"{int(digest[:8], 16)}.{int(digest[8:16], 16)}"


# -- golden requests ---------------------------------------------------------------------


def test_golden_request() -> None:
    event = forwarded("ord_1001", properties={"ga_client_id": "1843072516.1759000000"})
    request = make().build([event], EVENT_US)
    assert request.method == "POST"
    assert request.url == (
        f"https://www.google-analytics.com/mp/collect?measurement_id={MEASUREMENT_ID}"
        f"&api_secret={SECRET}"
    )
    assert request.headers == {"content-type": "application/json"}
    assert json.loads(request.body) == {
        "client_id": "1843072516.1759000000",
        "user_id": "user-8842",
        "timestamp_micros": 1_759_320_000_250_000,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
        "events": [{"name": "purchase", "params": {
            "transaction_id": "ord_1001", "value": 142.52, "currency": "USD",
            "session_id": "1759319000", "engagement_time_msec": 100}}],
    }  # fmt: skip


def test_client_ids_and_app_streams() -> None:
    destination = make(engagement_time_msec=250)
    body = json.loads(destination.build([forwarded("o1", properties={"client_id": "C.1"})], 0).body)
    assert body["client_id"] == "C.1" and body["events"][0]["params"]["engagement_time_msec"] == 250
    # No gtag id: a stable pseudo id from the source and the user (or session) id.
    first = json.loads(destination.build([forwarded("o1")], 0).body)
    second = json.loads(destination.build([forwarded("o2", value=None, currency=None)], 0).body)
    assert first["client_id"] == second["client_id"] == pseudo_client_id("default", "user-8842")
    assert "value" not in second["events"][0]["params"]
    anonymous = forwarded("o3", user_id=None, session_id="sess-9")
    body = json.loads(destination.build([anonymous], 0).body)
    assert body["client_id"] == pseudo_client_id("default", "sess-9") and "user_id" not in body
    assert body["events"][0]["params"]["session_id"] == "sess-9"
    app = ga4.create(settings_of(measurement_id="", firebase_app_id="1:123:android:abc"),
                     {"GA4_SECRET": SECRET})  # fmt: skip
    event = forwarded("o4", properties={"app_instance_id": "a1b2c3"})
    request = app.build([event], 0)
    assert request.url.endswith("/mp/collect?firebase_app_id=1%3A123%3Aandroid%3Aabc"
                                "&api_secret=s3cr3t")  # fmt: skip
    body = json.loads(request.body)
    assert body["app_instance_id"] == "a1b2c3" and "client_id" not in body
    assert app.skip_reason(forwarded("o5"), EVENT_US) == "no_app_instance_id"


def test_one_client_per_request() -> None:
    destination = make()
    assert destination.max_batch_events == 1 and not destination.dedupes_on_event_id
    same = [forwarded("o1", 1), forwarded("o2", 2, time_us=EVENT_US + 5)]
    body = json.loads(destination.build(same, 0).body)
    assert [e["timestamp_micros"] for e in body["events"]] == [EVENT_US, EVENT_US + 5]
    with pytest.raises(ValueError, match="one client"):
        destination.build([forwarded("o1"), forwarded("o2", user_id="someone-else")], 0)
    with pytest.raises(ValueError, match="1 to 25"):
        destination.build([forwarded(f"o{i}") for i in range(26)], 0)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="exactly one of measurement_id"):
        make(firebase_app_id="1:123:android:abc")
    with pytest.raises(ConfigError, match="exactly one of measurement_id"):
        make(measurement_id="")
    with pytest.raises(ConfigError, match="GA4_SECRET"):
        ga4.create(settings_of(), {})
    with pytest.raises(ConfigError, match="window_hours"):
        settings_of(window_hours=73)


# -- names, windows and skips ------------------------------------------------------------


def test_names_follow_ga4_rules() -> None:
    destination = make()

    def name_of(name: str) -> str:
        event = forwarded("o1", name=name)
        assert destination.skip_reason(event, EVENT_US) is None, name
        return str(json.loads(destination.build([event], 0).body)["events"][0]["name"])

    assert name_of("Purchase") == "purchase"  # the user's event_map, not hard-coded
    assert name_of("Add To Cart!") == "Add_To_Cart_"
    assert name_of("1st-order") == "st_order"
    assert name_of("x" * 50) == "x" * 40
    for reserved in ("session_start", "page_view", "ad_click", "firebase_thing", "_x"):
        event = forwarded("o1", name="Buy", event_map={"Buy": reserved})
        assert destination.skip_reason(event, EVENT_US) in ("reserved_name", "invalid_name")
    assert (
        destination.skip_reason(forwarded("o1", name="Buy", event_map={"Buy": "_x"}), EVENT_US)
        == "reserved_name"
    )  # "_x" sanitizes to "x"? no: kept
    assert destination.skip_reason(forwarded("o1", name="123"), EVENT_US) == "invalid_name"


def test_windows_and_consent() -> None:
    destination = make()
    event = forwarded("o1")
    assert destination.skip_reason(event, EVENT_US + 72 * HOUR_US) is None
    assert destination.skip_reason(event, EVENT_US + 72 * HOUR_US + 1) == "too_old"
    assert make(window_hours=24).skip_reason(event, EVENT_US + 25 * HOUR_US) == "too_old"
    no_analytics = forwarded("o2", consent={"analytics": False})
    assert destination.skip_reason(no_analytics, EVENT_US) == "no_analytics_consent"
    denied = forwarded("o3", consent={"ad_personalization": False})
    body = json.loads(destination.build([denied], 0).body)
    assert body["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}


# -- answers -----------------------------------------------------------------------------


def test_answers_become_outcomes() -> None:
    assert read_response(204, {}, b"") == Delivered()
    assert read_response(200, {}, b"") == Delivered()
    for status in (500, 502, 503):
        outcome = read_response(status, {"retry-after": "4"}, b"busy")
        assert isinstance(outcome, Retry) and outcome.after_secs == 4.0
    for status in (400, 403, 404, 429):  # GA4 itself never answers 4xx: a proxy or wrong host
        outcome = read_response(status, {}, b"<html>nope</html>")
        assert outcome == Reject(reason=f"HTTP {status}: <html>nope</html>")
    assert validation_messages(b'{"validationMessages":[]}') == []
    assert validation_messages(b"<html>") is None


# -- the stand-in's validation -------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[Ga4StandIn]:
    server = Ga4StandIn(SECRET)
    yield server
    server.close()


def debug(standin: Ga4StandIn, body: Any) -> list[dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(f"{standin.base_url}/debug/mp/collect?measurement_id=G-1", content=data)
    assert answer.status_code == 200
    messages: list[dict[str, str]] = answer.json()["validationMessages"]
    return messages


def test_our_requests_pass_validation(standin: Ga4StandIn) -> None:
    destination = make(endpoint=standin.base_url)
    for event in (forwarded("o1", properties={"ga_client_id": "1.2"}),
                  forwarded("o2", name="Add To Cart!", value=None, currency=None),
                  forwarded("o3", user_id=None, session_id="s" * 150)):  # fmt: skip
        request = debug_request(destination.config, destination.build([event], EVENT_US))
        assert "/debug/mp/collect?" in request.url
        answer = httpx.post(request.url, content=request.body, headers=request.headers)
        assert answer.json() == {"validationMessages": []}, event.payload.event_name
    assert standin.accepted == [] and standin.debug_requests == 3  # debug records nothing


def test_the_stand_in_refuses_malformed_requests(standin: Ga4StandIn) -> None:
    good = json.loads(make().build([forwarded("o1")], EVENT_US).body)
    assert debug(standin, good) == []
    event = good["events"][0]

    def codes(body: Any) -> list[str]:
        return [m["validationCode"] for m in debug(standin, body)]

    assert codes({**good, "events": [event] * 26}) == ["EXCEEDED_MAX_ENTITIES"]
    assert codes({**good, "events": [{**event, "name": "add to cart"}]}) == ["NAME_INVALID"]
    assert codes({**good, "events": [{**event, "name": "session_start"}]}) == ["NAME_RESERVED"]
    many = {f"p{i}": i for i in range(26)}
    assert codes({**good, "events": [{**event, "params": many}]}) == ["EXCEEDED_MAX_ENTITIES"]
    long = {**event["params"], "note": "x" * 101}
    assert codes({**good, "events": [{**event, "params": long}]}) == ["VALUE_OUT_OF_BOUNDS"]
    assert codes({**good, "events": [{**event, "params": {**event["params"], "ga_x": 1}}]}) == [
        "NAME_RESERVED"
    ]
    assert codes({**good, "timestamp_micros": EVENT_US // 1000}) == ["VALUE_INVALID"]  # millis
    assert codes({k: v for k, v in good.items() if k != "client_id"}) == ["VALUE_REQUIRED"]
    assert codes(json.dumps({**good, "pad": "x" * 130_000}).encode()) == ["VALUE_OUT_OF_BOUNDS"]
    # /mp/collect answers 204 whatever it gets, and keeps only the valid.
    url = f"{standin.base_url}/mp/collect?measurement_id=G-1&api_secret={SECRET}"
    bad = json.dumps({**good, "events": [{**event, "name": "bad name"}]}).encode()
    assert httpx.post(url, content=bad).status_code == 204
    wrong_secret = url.replace(SECRET, "nope")
    assert httpx.post(wrong_secret, content=json.dumps(good).encode()).status_code == 204
    assert standin.accepted == [] and len(standin.invalid) == 2
    assert httpx.post(url, content=json.dumps(good).encode()).status_code == 204
    assert standin.accepted == ["o1"]


# -- the pipeline against the stand-in -------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


def open_pipeline(data_dir: Path, clock: ManualClock, table: dict[str, Any]) -> Pipeline:
    return destination_pipeline(data_dir, clock, table, env={"GA4_SECRET": SECRET})


def send(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
            "value": 1250, "currency": "EUR", "timestamp": clock.now_us() // 1000}  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def test_end_to_end_with_faults(tmp_path: Path, clock: ManualClock, standin: Ga4StandIn) -> None:
    standin.plan = [
        Answer(500, {}, b"internal"),
        Answer(502, {}, b"bad gateway"),  # a proxy's error: GA4 never saw it
        Answer(503, {"Retry-After": "2"}, b""),
        Slow(0.2),  # slow, within timeout_secs
        Answer(403, {}, b"<html>proxy says no</html>"),  # not GA4: refused for good
    ]  # met in this order: one request at a time (max_in_flight 1)
    table = {"kind": "ga4", "name": "ga", "endpoint": standin.base_url,
             "measurement_id": MEASUREMENT_ID, "api_secret_env": "GA4_SECRET",
             "event_map": {"Purchase": "purchase", "Signup": "session_start"},
             "batch_max_wait_secs": 0, "timeout_secs": 1.0, "breaker_threshold": 100,
             "max_in_flight": 1}  # fmt: skip
    pipeline = open_pipeline(tmp_path, clock, table)
    try:
        for i in range(1, 6):
            send(pipeline, clock, f"g{i}", properties={"ga_client_id": f"{i}.1"})
        send(pipeline, clock, "reserved", event_name="Signup")  # skipped: reserved_name
        send(pipeline, clock, "no-analytics", consent={"analytics": False})
        send(pipeline, clock, "no-ads", consent={"ad_user_data": False})  # consent gate
        send(pipeline, clock, "old", timestamp=clock.now_us() // 1000 - 73 * 3600 * 1000)
        send(pipeline, clock, "view", event_name="page_view", value=None, currency=None)
        deliver_all(pipeline)
        response = call(pipeline, "GET", "/v1/dead-letters?destination=ga", key=ADMIN_KEY)
        letters = response.json()
    finally:
        pipeline.close()
    # One request per event: g1 met the 500, the hang-up, the 503 and the slow answer,
    # g2 the refusal (dead-lettered); every other eligible event arrives exactly once.
    assert [item["event_id"] for item in letters["items"]] == ["g2"]
    assert "proxy says no" in letters["items"][0]["last_answer"]
    assert sorted(standin.accepted) == ["g1", "g3", "g4", "g5"]
    assert standin.invalid == []
    assert all(len(json.loads(r.body)["events"]) == 1 for r in standin.requests)
    first = next(e for e in standin.events if e["params"]["transaction_id"] == "g1")
    assert first["name"] == "purchase" and first["client_id"] == "1.1"
    assert first["user_id"] == "u-g1" and first["params"]["value"] == 12.5
    assert first["timestamp_micros"] == 1_796_000_000_000_000


# -- a crash while a request is out ----------------------------------------------------------


def dead_letters_of(server: ServerProcess) -> dict[str, Any]:
    answer = httpx.get(server.url + "/v1/dead-letters?destination=ga", headers=auth(ADMIN_KEY))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_crash_mid_send_is_not_sent_twice(server_factory: ServerFactory, tmp_path: Path) -> None:
    """GA4 cannot deduplicate: after a SIGKILL while a request was out, the event waits
    in the dead letters for review instead of being counted twice."""
    standin = Ga4StandIn(SECRET)
    standin.stall_next = True  # recorded, then no answer until the server is killed
    config = tmp_path / "convtrack.toml"
    config.write_text("\n".join([
        "[[destinations]]", 'kind = "ga4"', 'name = "ga"', f'endpoint = "{standin.base_url}"',
        f'measurement_id = "{MEASUREMENT_ID}"', 'api_secret_env = "GA4_SECRET"',
        "batch_max_wait_secs = 0", 'event_map = { Purchase = "purchase" }']) + "\n")  # fmt: skip
    server = server_factory({"GA4_SECRET": SECRET}, args=["--config", str(config)])

    def post(event_id: str) -> None:
        body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", "value": 4999,
                "currency": "EUR"}  # fmt: skip
        answer = httpx.post(server.url + "/v1/track", json=body, headers=auth(WRITE_KEY))
        assert answer.status_code == 202, answer.text

    try:
        server.start()
        post("order-1")
        wait_for("the event to reach GA4", lambda: standin.accepted == ["order-1"])
        server.kill()
        server.start()
        wait_for("the interrupted send to be dead-lettered",
                 lambda: dead_letters_of(server)["total"] == 1)  # fmt: skip
        (letter,) = dead_letters_of(server)["items"]
        post("order-2")  # the runner went past it
        wait_for("the next event", lambda: "order-2" in standin.accepted)
    finally:
        server.stop()
        standin.close()
    assert letter["event_id"] == "order-1"
    assert standin.accepted == ["order-1", "order-2"]  # order-1 counted once, not resent
