"""meta_capi: golden payloads, answers, the stand-in's contract, windows, and real runs.

Expected payloads are written from destinations.md §1's example, with hashes
computed here with hashlib from the §7 inputs (and checked against §7's
published vectors), never copied from a run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import Delivered, Forwarded, Reject, Retry, SetupFault, Throttled
from convtrack.deliver.destinations.meta_capi import MetaCapiDestination, create
from convtrack.deliver.destinations.meta_capi.settings import MetaCapiSettings
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing.standins.base import After, Answer, Hangup, Request, Slow
from convtrack.testing.standins.meta import MetaStandIn, graph_error
from tests.conftest import ADMIN_KEY
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import call, process_all

PIXEL = "123456789012345"
TOKEN = "EAABsecretTokenForTests0123456789"
TOKEN_ENV = "META_TOKEN"
EXAMPLE_TIME = 1759320000  # destinations.md §1 example
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15"
FBC = "fb.1.1759310000123.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB"
FBP = "fb.1.1759000000000.1098115397"
PAGE = "https://shop.example.com/checkout/thanks"
RAW_USER = {"email": " Jane.Doe@Example.com ", "phone": "+1 (555) 123-4567",
            "first_name": "Jane", "last_name": "Doe", "country": "US",
            "external_id": "user-8842", "fbc": FBC, "fbp": FBP}  # fmt: skip
PROPERTIES = {"order_id": "1001", "contents": [{"id": "SKU-1", "quantity": 2, "item_price": 71.26}]}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def settings(**kw: Any) -> MetaCapiSettings:
    table = {"kind": "meta_capi", "name": "meta", "pixel_id": PIXEL,
             "access_token_env": TOKEN_ENV, **kw}  # fmt: skip
    loaded = load_settings(environ={}, overrides={"destinations": [table]}).destinations[0]
    assert isinstance(loaded, MetaCapiSettings)
    return loaded


def destination(**kw: Any) -> MetaCapiDestination:
    return create(settings(**kw), {TOKEN_ENV: TOKEN})


def forwarded(
    event_id: str = "ord_1001",
    *,
    event_name: str = "Purchase",
    time_s: int = EXAMPLE_TIME,
    value: int | None = 14252,
    currency: str | None = "USD",
    user: dict[str, str] | None = None,
    context: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    click_ids: dict[str, str] | None = None,
    consent: dict[str, bool] | None = None,
    offset: int = 0,
) -> Forwarded:
    """An event as the runner hands it over: hashed on arrival, then the canonical payload."""
    ctx = {"page_url": PAGE, "user_agent": UA, "ip": "203.0.113.7"} if context is None else context
    envelope = Envelope(
        event_id=event_id, source="default", event_name=event_name,
        event_time_us=time_s * 1_000_000, received_at_us=time_s * 1_000_000, value=value,
        currency=currency, properties=PROPERTIES if properties is None else properties,
        context=ctx, user=hash_user(RAW_USER if user is None else user),
        click_ids=click_ids or {}, consent=consent or {},
    )  # fmt: skip
    processed = ProcessedEvent(
        event=envelope, source_partition=0, source_offset=offset, campaign_id="c",
        event_date="2025-10-01", is_conversion=True, logged_at_us=1, processed_at_us=1,
        counted_at_us=1,
    )  # fmt: skip
    return Forwarded(event_id, 0, offset, forward_payload(processed))


# -- golden payloads ----------------------------------------------------------------


def test_the_section_7_vectors_hold() -> None:
    assert sha("jane.doe@example.com") == (
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    )
    assert sha("15551234567") == "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"


def test_the_request_matches_the_documented_example() -> None:
    request = destination(test_event_code="TEST12345").build([forwarded()], now_us=0)
    assert request.method == "POST"
    assert request.url == f"https://graph.facebook.com/v26.0/{PIXEL}/events"
    assert TOKEN not in request.url  # URLs reach logs and error texts; the body does not
    assert request.headers["content-type"] == "application/json"
    expected = {
        "data": [{
            "event_name": "Purchase",
            "event_time": EXAMPLE_TIME,
            "event_id": "ord_1001",
            "action_source": "website",
            "event_source_url": PAGE,
            "user_data": {
                "em": [sha("jane.doe@example.com")],
                "ph": [sha("15551234567")],
                "fn": sha("jane"),
                "ln": sha("doe"),
                "country": sha("us"),
                "external_id": sha("user-8842"),
                "client_ip_address": "203.0.113.7",
                "client_user_agent": UA,
                "fbc": FBC,
                "fbp": FBP,
            },
            "custom_data": {"value": 142.52, "currency": "USD", "order_id": "1001",
                            "contents": [{"id": "SKU-1", "quantity": 2, "item_price": 71.26}]},
        }],
        "test_event_code": "TEST12345",
        "access_token": TOKEN,
    }  # fmt: skip
    assert json.loads(request.body) == expected


def test_variants_cookies_endpoint_and_version() -> None:
    user = {
        "email": "a@b.co",
        "city": "New York",
        "state": "NY",
        "zip": "10001-1234",
        "country": "United States",
    }  # a name, not an ISO code: left out
    event = forwarded("e1", event_name="Lead", value=None, currency=None, user=user,
                      properties={}, click_ids={"fbclid": "IwAR_case_Sensitive"},
                      consent={"ad_personalization": False},
                      context={"page_url": PAGE, "user_agent": UA,
                               "referrer": "https://ref.example/"})  # fmt: skip
    request = destination(endpoint="http://proxy.example/meta/", api_version="v27.0").build(
        [event], now_us=0
    )
    assert request.url == f"http://proxy.example/meta/v27.0/{PIXEL}/events"
    (sent,) = json.loads(request.body)["data"]
    assert sent["user_data"] == {
        "em": [sha("a@b.co")], "ct": sha("newyork"), "st": sha("ny"), "zp": sha("10001"),
        "client_user_agent": UA,
        # Built from the fbclid as Meta describes: fb.1.<ms it was seen>.<fbclid, unchanged>.
        "fbc": f"fb.1.{EXAMPLE_TIME * 1000}.IwAR_case_Sensitive",
    }  # fmt: skip
    assert "custom_data" not in sent and sent["referrer_url"] == "https://ref.example/"
    assert sent["opt_out"] is True  # no ad personalisation: attribution only
    assert "test_event_code" not in json.loads(request.body)


def test_the_same_batch_gives_the_same_request() -> None:
    meta = destination()
    events = [forwarded("a", offset=1), forwarded("b", offset=2)]
    assert meta.build(events, now_us=1).body == meta.build(events, now_us=999_000_000).body


def test_a_missing_token_stops_the_start() -> None:
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        create(settings(), {})
    with pytest.raises(ConfigError, match="api_version"):
        settings(api_version="26")
    assert TOKEN not in repr(destination()._config)


# -- answers ------------------------------------------------------------------------


def read(status: int, body: bytes, sent: int = 2, headers: dict[str, str] | None = None) -> Any:
    events = [forwarded(str(i), offset=i) for i in range(sent)]
    return destination().read(events, status, headers or {}, body)


def test_success_needs_every_event_received() -> None:
    ok = b'{"events_received": 2, "messages": [], "fbtrace_id": "x"}'
    assert read(200, ok) == Delivered()
    fewer = read(200, b'{"events_received": 1, "messages": [], "fbtrace_id": "x"}')
    assert isinstance(fewer, Retry)  # Meta dedupes the resent ones
    assert isinstance(read(200, b"<html>proxy</html>"), Retry)


@pytest.mark.parametrize("code", [1, 2])
def test_transient_codes_are_retried(code: int) -> None:
    outcome = read(500, graph_error("Service temporarily unavailable", code))
    assert isinstance(outcome, Retry)


@pytest.mark.parametrize("code", [4, 17, 32, 341, 613, 368])
def test_throttling_codes_back_off(code: int) -> None:
    outcome = read(400, graph_error("User request limit reached", code, subcode=2446079),
                   headers={"retry-after": "30"})  # fmt: skip
    assert isinstance(outcome, Throttled) and outcome.after_secs == 30.0


@pytest.mark.parametrize("code", [190, 102, 104, 10, 200, 250, 299])
def test_token_and_permission_codes_are_setup_errors(code: int) -> None:
    outcome = read(400, graph_error("Error validating access token", code, subcode=463))
    assert isinstance(outcome, SetupFault)


def test_invalid_parameters_are_refused_for_good_with_the_answer() -> None:
    body = graph_error("Invalid parameter", 100, subcode=2804003, user_msg="too old")
    outcome = read(400, body)
    assert isinstance(outcome, Reject)
    assert "Invalid parameter" in outcome.reason and "AbCdEfStandIn" in outcome.reason
    assert outcome.reason.startswith("HTTP 400")
    flagged = read(400, graph_error("Something odd", 9999, is_transient=True))
    assert isinstance(flagged, Retry)


def test_answers_without_an_envelope_go_by_status() -> None:
    throttled = read(429, b"", headers={"retry-after": "7"})
    assert isinstance(throttled, Throttled) and throttled.after_secs == 7.0
    busy = read(503, b"<html>bad gateway</html>")
    assert isinstance(busy, Retry)
    assert read(401, b"denied") == SetupFault(reason="HTTP 401: denied")
    assert read(404, b"nope") == Reject(reason="HTTP 404: nope")


def test_the_token_never_reaches_an_outcome() -> None:
    echoed = graph_error(f"Malformed access token {TOKEN}", 190)
    outcome = read(400, echoed)
    assert isinstance(outcome, SetupFault) and TOKEN not in outcome.reason
    assert "[redacted]" in outcome.reason


# -- windows and skip reasons -------------------------------------------------------


def test_skip_reasons() -> None:
    meta = destination()
    now_us = (EXAMPLE_TIME + 7 * 86_400 - 600) * 1_000_000
    assert meta.skip_reason(forwarded(), now_us) is None
    assert meta.skip_reason(forwarded(), now_us + 1_000_000_000) == "too_old"
    # A 5 minute margin: an event on the edge could age past it on its way.
    assert meta.skip_reason(forwarded(), now_us + 299_000_000) is None
    assert meta.skip_reason(forwarded(), now_us + 301_000_000) == "too_old"
    short = destination(window_days=1)
    assert short.skip_reason(forwarded(), (EXAMPLE_TIME + 86_400) * 1_000_000) == "too_old"
    no_page = forwarded(context={"user_agent": UA})
    assert meta.skip_reason(no_page, now_us) == "no_page_url"
    assert meta.skip_reason(forwarded(context={"page_url": PAGE}), now_us) == "no_user_agent"
    assert destination(action_source="system_generated").skip_reason(no_page, now_us) is None
    free = forwarded(value=None, currency=None)
    assert meta.skip_reason(free, now_us) == "no_value"
    assert meta.skip_reason(forwarded(event_name="Lead", value=None, currency=None), now_us) is None
    nobody = forwarded(user={}, context={})
    assert destination(action_source="other").skip_reason(nobody, now_us) == "no_user_data"


# -- the stand-in's contract ----------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def standin(clock: ManualClock) -> Iterator[MetaStandIn]:
    server = MetaStandIn(pixel_id=PIXEL, access_token=TOKEN, now=lambda: clock.now_us() / 1e6)
    yield server
    server.close()


def post(standin: MetaStandIn, body: dict[str, Any], query: str = "") -> httpx.Response:
    url = f"{standin.base_url}/v26.0/{PIXEL}/events{query}"
    return httpx.post(url, json=body, timeout=5)


def good_event(clock: ManualClock, **kw: Any) -> dict[str, Any]:
    sent = json.loads(destination().build([forwarded(time_s=clock.now_us() // 1_000_000)], 0).body)
    event: dict[str, Any] = sent["data"][0]
    event.update(kw)
    return event


def test_the_standin_accepts_our_request(standin: MetaStandIn, clock: ManualClock) -> None:
    meta = destination(endpoint=standin.base_url)
    request = meta.build([forwarded(time_s=clock.now_us() // 1_000_000)], clock.now_us())
    answer = httpx.post(request.url, content=request.body, headers=request.headers, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["events_received"] == 1
    assert meta.read([forwarded()], answer.status_code, {}, answer.content) == Delivered()
    assert standin.accepted == ["ord_1001"]


def refused(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code >= 400, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_the_standin_refuses_malformed_requests(standin: MetaStandIn, clock: ManualClock) -> None:
    def event(**kw: Any) -> dict[str, Any]:
        return good_event(clock, **kw)

    assert refused(post(standin, {"data": [event()]}))["code"] == 104  # no token
    assert refused(post(standin, {"data": [event()], "access_token": "nope"}))["code"] == 190
    as_query = post(standin, {"data": [event()]}, query=f"?access_token={TOKEN}")
    assert as_query.status_code == 200  # the token may come in the query too

    def bad(**kw: Any) -> None:
        answer = post(standin, {"data": [event(**kw)], "access_token": TOKEN})
        assert refused(answer)["code"] == 100, kw

    now_s = clock.now_us() // 1_000_000
    bad(event_time=now_s * 1000)  # 13 digits: milliseconds
    bad(event_time=now_s - 8 * 86_400)  # more than 7 days old
    bad(event_time=str(now_s))
    bad(action_source="web")
    bad(event_source_url=None)
    bad(user_data={**event()["user_data"], "em": ["jane.doe@example.com"]})  # unhashed
    bad(user_data={**event()["user_data"], "client_ip_address": sha("203.0.113.7")})  # hashed IP
    bad(user_data={**event()["user_data"], "fbc": "IwAR2F4"})
    bad(user_data={k: v for k, v in event()["user_data"].items() if k != "client_user_agent"})
    bad(custom_data={"order_id": "1"})  # a Purchase without value and currency
    bad(custom_data={"value": "142.52", "currency": "USD"})
    too_many = post(standin, {"data": [event()] * 1001, "access_token": TOKEN})
    assert refused(too_many)["code"] == 100
    assert refused(post(standin, {"data": [], "access_token": TOKEN}))["code"] == 100
    assert standin.accepted == ["ord_1001"]  # only the query-token request got in


def test_the_standin_flags_repeats_within_48_hours(
    standin: MetaStandIn, clock: ManualClock
) -> None:
    body = {"data": [good_event(clock)], "access_token": TOKEN}
    assert post(standin, body).status_code == 200
    assert post(standin, body).status_code == 200
    assert standin.repeats == ["ord_1001"]
    renamed = {"data": [good_event(clock, event_name="Lead")], "access_token": TOKEN}
    assert post(standin, renamed).status_code == 200  # the key includes the event name
    assert standin.repeats == ["ord_1001"]


# -- the real pipeline against the stand-in ---------------------------------------------


def open_pipeline(
    data_dir: Path,
    clock: ManualClock,
    standin: MetaStandIn,
    sleep: Callable[[float], None] | None = None,
    **kw: Any,
) -> Pipeline:
    table = {"kind": "meta_capi", "name": "meta", "pixel_id": PIXEL,
             "access_token_env": TOKEN_ENV, "endpoint": standin.base_url,
             "batch_max_wait_secs": 0, **kw}  # fmt: skip
    return destination_pipeline(data_dir, clock, table, env={TOKEN_ENV: TOKEN}, sleep=sleep)


def ingest(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body: dict[str, Any] = {
        "event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
        "value": 14252, "currency": "USD", "timestamp": clock.now_us() // 1000,
        "user": {"email": "Jane.Doe@example.com", "phone": "+1 555 123 4567"},
        "context": {"page_url": PAGE, "user_agent": UA, "ip": "203.0.113.7"},
    }  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body)
    assert response.status_code == 202, response.text


def dead_letters(pipeline: Pipeline) -> dict[str, Any]:
    response = call(pipeline, "GET", "/v1/dead-letters?destination=meta", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_no_secret_or_pii_on_disk(data_dir: Path) -> None:
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert TOKEN.encode() not in content, path
            assert b"Jane.Doe@example.com" not in content, path


def test_every_eligible_event_reaches_meta_once_through_faults(
    tmp_path: Path, clock: ManualClock, standin: MetaStandIn
) -> None:
    standin.plan = [
        Answer(429, {"Retry-After": "7"}, graph_error("User request limit reached", 17)),
        Answer(500, {}, graph_error("Service temporarily unavailable", 2, is_transient=True)),
        Slow(0.6),  # the client gives up at 0.3 s; Meta still takes the events
        After(Hangup()),  # accepted, but the answer is lost
    ]
    pipeline = open_pipeline(tmp_path, clock, standin, timeout_secs=0.3, max_attempts=10)
    started = clock.monotonic()
    try:
        eligible = [f"order-{i}" for i in range(5)]
        for event_id in eligible:
            ingest(pipeline, clock, event_id)
        ingest(pipeline, clock, "view-1", event_name="page_view", value=None, currency=None)
        ingest(pipeline, clock, "no-consent", consent={"ad_user_data": False})
        deliver_all(pipeline, clock)
        assert dead_letters(pipeline)["total"] == 0
    finally:
        pipeline.close()
    standin.wait_idle()
    assert clock.monotonic() - started >= 7  # Retry-After was honoured
    assert sorted(standin.dedup) == sorted((PIXEL, "Purchase", e) for e in eligible)
    counts = Counter(standin.accepted)
    # Sent again only after an answer was lost (the slow one, the hang-up): Meta drops those.
    assert set(counts) == set(eligible)
    assert Counter(standin.repeats) == counts - Counter(eligible)
    assert_no_secret_or_pii_on_disk(tmp_path)


def test_a_refused_batch_is_dead_lettered_with_metas_answer_then_replayed(
    tmp_path: Path, clock: ManualClock, standin: MetaStandIn
) -> None:
    standin.plan = [Answer(400, {}, graph_error(f"Invalid parameter {TOKEN}", 100, subcode=33))]
    pipeline = open_pipeline(tmp_path, clock, standin)
    try:
        ingest(pipeline, clock, "order-1")
        ingest(pipeline, clock, "order-2")
        deliver_all(pipeline, clock)
        listed = dead_letters(pipeline)
        assert listed["total"] == 2
        for item in listed["items"]:
            assert item["last_status"] == 400 and "Invalid parameter" in item["last_answer"]
            assert TOKEN not in item["last_answer"] and item["attempts"] == 1
        replay = call(pipeline, "POST", "/v1/dead-letters/replay", {"destination": "meta"},
                      key=ADMIN_KEY)  # fmt: skip
        assert replay.json() == {"replayed": 2}
        deliver_all(pipeline, clock)
        assert dead_letters(pipeline)["total"] == 0
    finally:
        pipeline.close()
    assert sorted(standin.accepted) == ["order-1", "order-2"] and standin.repeats == []
    assert_no_secret_or_pii_on_disk(tmp_path)


def test_a_stale_event_is_skipped_and_the_rest_delivered(
    tmp_path: Path, clock: ManualClock, standin: MetaStandIn
) -> None:
    pipeline = open_pipeline(tmp_path, clock, standin)
    try:
        stale_at = clock.now_us() // 1000 - (7 * 86_400 - 60) * 1000  # inside 7 d at ingest
        ingest(pipeline, clock, "stale", timestamp=stale_at)
        ingest(pipeline, clock, "fresh")
        ingest(pipeline, clock, "no-page", context={"user_agent": UA})
        clock.advance(600)  # by delivery time the first one is older than Meta takes
        deliver_all(pipeline, clock)
        assert dead_letters(pipeline)["total"] == 0
        metrics = call(pipeline, "GET", "/metrics", key=ADMIN_KEY).text
    finally:
        pipeline.close()
    assert standin.accepted == ["fresh"]
    assert standin.refusals == []
    for reason in ("too_old", "no_page_url"):
        line = f'convtrack_deliver_skipped_total{{destination="meta",reason="{reason}"}} 1.0'
        assert line in metrics


def test_an_expired_token_pauses_the_destination_and_keeps_the_events(
    tmp_path: Path, clock: ManualClock, standin: MetaStandIn
) -> None:
    expired = graph_error("Error validating access token: Session has expired", 190, subcode=463)
    standin.plan = [Answer(400, {}, expired)]
    pipeline = open_pipeline(tmp_path, clock, standin)
    runner = pipeline.deliveries[0]
    try:
        ingest(pipeline, clock, "order-1")
        process_all(pipeline)
        while runner.run_once():
            pass
        assert not runner.flush()  # held by the pause, not committed
        health = runner.health()
        assert health["paused"] and "Session has expired" in str(health["detail"])
        assert dead_letters(pipeline)["total"] == 0
        clock.advance(301)  # setup_pause_secs: the same batch is tried again
        deliver_all(pipeline, clock)
        assert not runner.health()["paused"]
    finally:
        pipeline.close()
    assert standin.accepted == ["order-1"] and len(standin.requests) == 2


# -- any event we would send passes Meta's contract ------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_users = st.dictionaries(
    st.sampled_from(["email", "phone", "first_name", "last_name", "city", "state", "zip",
                     "country", "external_id", "fbp"]),
    st.one_of(_text, st.emails(), st.sampled_from(["+44 20 7946 0958", "0049 30 1234", "US"])),
)  # fmt: skip
_items = st.lists(
    st.dictionaries(
        st.sampled_from(["id", "content_id", "quantity", "item_price", "price", "name"]),
        st.one_of(_text, st.integers(-5, 10**6), st.floats(0, 1e6), st.booleans(), st.none()),
    ),
    max_size=3,
)
_money = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(st.integers(0, 10**12), st.sampled_from(["USD", "JPY", "EUR", "KWD"])),
)


@pytest.fixture(scope="module")
def fuzz_standin() -> Iterator[MetaStandIn]:
    server = MetaStandIn(pixel_id=PIXEL, access_token=TOKEN, now=lambda: float(FUZZ_NOW))
    yield server
    server.close()


FUZZ_NOW = 1_796_000_000


@given(
    user=_users,
    money=_money,
    name=st.sampled_from(["Purchase", "Lead", "Subscribe"]),
    items=_items,
    order=st.one_of(st.none(), _text, st.integers(0, 10**9)),
    click_ids=st.dictionaries(st.sampled_from(["fbclid", "fbc", "fbp"]),
                              st.one_of(st.text("abcXYZ09_-.", min_size=1, max_size=20),
                                        st.just(FBC))),
    ip=st.one_of(st.just("203.0.113.7"), st.just("2001:db8::1"), _text),
    age_secs=st.integers(0, 8 * 86_400),
)  # fmt: skip
@hypothesis_settings(max_examples=80, deadline=None)
def test_every_event_we_would_send_passes_the_standin(
    fuzz_standin: MetaStandIn,
    user: dict[str, str],
    money: tuple[int | None, str | None],
    name: str,
    items: list[dict[str, Any]],
    order: str | int | None,
    click_ids: dict[str, str],
    ip: str,
    age_secs: int,
) -> None:
    value, currency = money
    properties = {"contents": items} | ({} if order is None else {"order_id": order})
    event = forwarded(
        event_name=name, time_s=FUZZ_NOW - age_secs, value=value, currency=currency, user=user,
        properties=properties, click_ids=click_ids,
        context={"page_url": PAGE, "user_agent": UA, "ip": ip},
    )  # fmt: skip
    meta = destination()
    if meta.skip_reason(event, FUZZ_NOW * 1_000_000) is not None:
        return
    request = meta.build([event], FUZZ_NOW * 1_000_000)
    with fuzz_standin.lock:
        answer = fuzz_standin.check(
            Request(method="POST", path=f"/v26.0/{PIXEL}/events", query={},
                    headers=request.headers, body=request.body)
        )  # fmt: skip
    assert answer.status == 200, answer.body  # contact fields included: all 64-hex
    sent = json.loads(request.body)["data"][0]["user_data"]
    assert "external_id" not in sent or re.fullmatch("[a-f0-9]{64}", sent["external_id"])


def test_a_crash_after_the_platform_took_the_batch_sends_it_again_once(
    tmp_path: Path, clock: ManualClock, standin: MetaStandIn
) -> None:
    standin.plan = [After(Hangup())]  # the platform takes the batch; its answer is lost
    crashed: list[Pipeline] = []

    def crash_before_the_retry(secs: float) -> None:
        clock.advance(secs)
        crashed[0].deliveries[0].request_stop()  # the process dies while backing off

    pipeline = open_pipeline(tmp_path, clock, standin, sleep=crash_before_the_retry)
    crashed.append(pipeline)
    try:
        ingest(pipeline, clock, "order-1")
        ingest(pipeline, clock, "order-2")
        process_all(pipeline)
        while pipeline.deliveries[0].run_once():
            pass
        assert not pipeline.deliveries[0].flush()  # stopped: nothing committed
    finally:
        pipeline.close()
    assert sorted(standin.accepted) == ["order-1", "order-2"]
    for _ in range(2):  # the restart sends the batch again, once; a second one sends nothing
        pipeline = open_pipeline(tmp_path, clock, standin)
        try:
            deliver_all(pipeline, clock)
            assert dead_letters(pipeline)["total"] == 0
        finally:
            pipeline.close()
    assert sorted(standin.accepted) == ["order-1", "order-1", "order-2", "order-2"]
    assert sorted(standin.repeats) == ["order-1", "order-2"]  # and the platform drops them
