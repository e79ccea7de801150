"""tiktok: golden payloads, answers, the stand-in's contract, windows, and real runs.

Expected payloads are written from destinations.md §5's example, with hashes
computed here with hashlib from the §7 inputs (TikTok's phone is E.164 with
its '+', checked against §7's published vector), never copied from a run.
"""

from __future__ import annotations

import hashlib
import json
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
from convtrack.deliver.destinations.tiktok import TikTokDestination, create
from convtrack.deliver.destinations.tiktok.settings import TikTokSettings
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing.standins.base import After, Answer, Hangup, Request, Slow
from convtrack.testing.standins.tiktok import TikTokStandIn, envelope
from tests.conftest import ADMIN_KEY
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import call, process_all

PIXEL = "C4ABCDEF1234567890"
TOKEN = "3f9eTikTokTokenForTests0123456789"
TOKEN_ENV = "TIKTOK_TOKEN"
EXAMPLE_TIME = 1759320000  # destinations.md §5 example
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)"
PAGE = "https://shop.example.com/checkout/thanks"
TTCLID = "E.C.P.v3Example"
TTP = "2F7h37YkS1j57AYSKTI7IHhJPYH"
RAW_USER = {"email": "Jane.Doe@example.com ", "phone": "+1 555-123-4567",
            "external_id": " User-8842"}  # fmt: skip
PROPERTIES = {"order_id": 1001, "content_type": "product", "_ttp": TTP,
              "contents": [{"content_id": "SKU-1", "content_name": "Widget", "quantity": 2,
                            "price": 71.26}]}  # fmt: skip
EVENT_MAP = {"Purchase": "CompletePayment"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def settings(**kw: Any) -> TikTokSettings:
    table = {"kind": "tiktok", "name": "tt", "event_source_id": PIXEL,
             "access_token_env": TOKEN_ENV, **kw}  # fmt: skip
    loaded = load_settings(environ={}, overrides={"destinations": [table]}).destinations[0]
    assert isinstance(loaded, TikTokSettings)
    return loaded


def destination(**kw: Any) -> TikTokDestination:
    return create(settings(**kw), {TOKEN_ENV: TOKEN})


def forwarded(
    event_id: str = "ord_1001",
    *,
    time_s: int = EXAMPLE_TIME,
    value: int | None = 14252,
    currency: str | None = "USD",
    user: dict[str, str] | None = None,
    context: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    click_ids: dict[str, str] | None = None,
    offset: int = 0,
) -> Forwarded:
    """An event as the runner hands it over: hashed on arrival, then the canonical payload."""
    ctx = {"page_url": PAGE, "user_agent": UA, "ip": "203.0.113.7"} if context is None else context
    envelope_ = Envelope(
        event_id=event_id, source="default", event_name="Purchase",
        event_time_us=time_s * 1_000_000, received_at_us=time_s * 1_000_000, value=value,
        currency=currency, properties=PROPERTIES if properties is None else properties,
        context=ctx, user=hash_user(RAW_USER if user is None else user),
        click_ids={"ttclid": TTCLID} if click_ids is None else click_ids,
    )  # fmt: skip
    processed = ProcessedEvent(
        event=envelope_, source_partition=0, source_offset=offset, campaign_id="c",
        event_date="2025-10-01", is_conversion=True, logged_at_us=1, processed_at_us=1,
        counted_at_us=1,
    )  # fmt: skip
    return Forwarded(event_id, 0, offset, forward_payload(processed, event_map=EVENT_MAP))


# -- golden payloads ----------------------------------------------------------------


def test_the_section_7_vectors_hold() -> None:
    assert sha("+15551234567") == (
        "8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"
    )
    assert sha("jane.doe@example.com") == (
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    )


def test_the_request_matches_the_documented_example() -> None:
    request = destination().build([forwarded()], now_us=0)
    assert request.method == "POST"
    assert request.url == "https://business-api.tiktok.com/open_api/v1.3/event/track/"
    assert request.headers == {"content-type": "application/json", "access-token": TOKEN}
    expected = {
        "event_source": "web",
        "event_source_id": PIXEL,
        "data": [{
            "event": "CompletePayment",
            "event_time": EXAMPLE_TIME,
            "event_id": "ord_1001",
            "user": {
                "email": [sha("jane.doe@example.com")],
                "phone": [sha("+15551234567")],
                "external_id": [sha("user-8842")],
                "ttclid": TTCLID,
                "ttp": TTP,
                "ip": "203.0.113.7",
                "user_agent": UA,
            },
            "page": {"url": PAGE},
            "properties": {
                "value": 142.52, "currency": "USD", "content_type": "product",
                "order_id": "1001",
                "contents": [{"content_id": "SKU-1", "content_name": "Widget", "quantity": 2,
                              "price": 71.26}],
            },
        }],
    }  # fmt: skip
    assert json.loads(request.body) == expected
    assert TOKEN.encode() not in request.body


def test_options_endpoint_and_sparse_events() -> None:
    tiktok = destination(endpoint="http://proxy.example/tt/", api_version="v1.4",
                         event_source="crm", test_event_code="TEST123")  # fmt: skip
    event = forwarded(value=None, currency=None, user={}, properties={}, click_ids={},
                      context={"referrer": "https://ref.example/"})  # fmt: skip
    request = tiktok.build([event], now_us=0)
    assert request.url == "http://proxy.example/tt/open_api/v1.4/event/track/"
    body = json.loads(request.body)
    assert body["event_source"] == "crm" and body["test_event_code"] == "TEST123"
    (sent,) = body["data"]
    assert sent == {"event": "CompletePayment", "event_time": EXAMPLE_TIME,
                    "event_id": "ord_1001", "user": {},
                    "page": {"referrer": "https://ref.example/"}}  # fmt: skip


def test_the_same_batch_gives_the_same_request() -> None:
    tiktok = destination()
    events = [forwarded("a", offset=1), forwarded("b", offset=2)]
    assert tiktok.build(events, now_us=1).body == tiktok.build(events, now_us=10**15).body


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        create(settings(), {})
    with pytest.raises(ConfigError, match="api_version"):
        settings(api_version="1.3")
    with pytest.raises(ConfigError, match="event_source"):
        settings(event_source="pixel")
    assert TOKEN not in repr(destination()._config)


# -- answers ------------------------------------------------------------------------


def read(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return destination().read([forwarded()], status, headers or {}, body)


def test_code_zero_is_success_and_nothing_else_is() -> None:
    assert read(200, envelope(0, "OK")) == Delivered()
    assert isinstance(read(200, b"<html>proxy</html>"), Retry)  # TikTok dedupes a resend
    assert isinstance(read(200, b'{"message": "OK"}'), Retry)


def test_rate_limit_code_throttles() -> None:
    outcome = read(200, envelope(40100, "Too many requests"), {"retry-after": "9"})
    assert isinstance(outcome, Throttled) and outcome.after_secs == 9.0


@pytest.mark.parametrize("code", [50000, 50002, 51000])
def test_system_error_codes_are_retried(code: int) -> None:
    outcome = read(200, envelope(code, "System error"))
    assert isinstance(outcome, Retry)


@pytest.mark.parametrize("code", [40001, 40104, 40105])
def test_token_and_permission_codes_are_setup_errors(code: int) -> None:
    outcome = read(200, envelope(code, "Access token is incorrect or has been revoked."))
    assert isinstance(outcome, SetupFault)


@pytest.mark.parametrize("code", [40002, 40006, 41000])
def test_other_codes_are_refused_for_good_with_the_answer(code: int) -> None:
    outcome = read(200, envelope(code, "Invalid value for event_time"))
    assert isinstance(outcome, Reject)
    assert str(code) in outcome.reason and "Invalid value for event_time" in outcome.reason


def test_answers_without_a_code_go_by_status() -> None:
    throttled = read(429, b"", {"retry-after": "3"})
    assert isinstance(throttled, Throttled) and throttled.after_secs == 3.0
    busy = read(502, b"<html>bad gateway</html>")
    assert isinstance(busy, Retry)
    assert read(401, b"denied") == SetupFault(reason="HTTP 401: denied")
    assert read(404, b"404 page not found") == Reject(reason="HTTP 404: 404 page not found")


def test_the_token_never_reaches_an_outcome() -> None:
    outcome = read(200, envelope(40105, f"Access token {TOKEN} is incorrect"))
    assert isinstance(outcome, SetupFault) and TOKEN not in outcome.reason
    assert "[redacted]" in outcome.reason


# -- windows and skip reasons -------------------------------------------------------


def test_the_window_is_a_setting() -> None:
    tiktok = destination()
    edge_us = (EXAMPLE_TIME + 7 * 86_400 - 300) * 1_000_000  # 7 days less the 5 min margin
    assert tiktok.skip_reason(forwarded(), edge_us) is None
    assert tiktok.skip_reason(forwarded(), edge_us + 1) == "too_old"
    assert destination(window_days=30).skip_reason(forwarded(), edge_us + 1) is None
    # TikTok has no required identifier we could check: a bare event is still sent.
    bare = forwarded(user={}, context={}, click_ids={}, properties={})
    assert tiktok.skip_reason(bare, EXAMPLE_TIME * 1_000_000) is None


# -- the stand-in's contract ----------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def standin(clock: ManualClock) -> Iterator[TikTokStandIn]:
    server = TikTokStandIn(event_source_id=PIXEL, access_token=TOKEN,
                           now=lambda: clock.now_us() / 1e6, window_days=7)  # fmt: skip
    yield server
    server.close()


def good_body(clock: ManualClock, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        destination().build([forwarded(time_s=clock.now_us() // 1_000_000)], 0).body
    )
    body["data"][0].update(kw)
    return body


def post(
    standin: TikTokStandIn, body: dict[str, Any], token: str | None = TOKEN, path: str = ""
) -> httpx.Response:
    headers = {"access-token": token} if token else {}
    url = standin.base_url + (path or "/open_api/v1.3/event/track/")
    return httpx.post(url, json=body, headers=headers, timeout=5)


def code_of(answer: httpx.Response) -> int:
    assert answer.status_code == 200, answer.text  # TikTok answers errors at HTTP 200
    code: int = answer.json()["code"]
    return code


def test_the_standin_accepts_our_request(standin: TikTokStandIn, clock: ManualClock) -> None:
    tiktok = destination(endpoint=standin.base_url)
    request = tiktok.build([forwarded(time_s=clock.now_us() // 1_000_000)], clock.now_us())
    answer = httpx.post(request.url, content=request.body, headers=request.headers, timeout=5)
    assert code_of(answer) == 0
    assert tiktok.read([forwarded()], answer.status_code, {}, answer.content) == Delivered()
    assert standin.accepted == ["ord_1001"]


def test_the_standin_refuses_malformed_requests(standin: TikTokStandIn, clock: ManualClock) -> None:
    good = good_body(clock)
    assert code_of(post(standin, good, token=None)) == 40104
    assert code_of(post(standin, good, token="wrong")) == 40105
    assert post(standin, good, path="/open_api/v1.3/event/track").status_code == 404

    def bad(body: dict[str, Any]) -> None:
        assert code_of(post(standin, body)) == 40002, body

    now_s = clock.now_us() // 1_000_000
    bad({**good, "event_source": "pixel"})
    bad({k: v for k, v in good.items() if k != "event_source_id"})
    bad({**good, "data": []})
    bad({**good, "data": good["data"] * 1001})
    bad(good_body(clock, event_time=now_s * 1000))  # 13 digits: milliseconds
    bad(good_body(clock, event_time=now_s - 8 * 86_400))
    bad(good_body(clock, event=""))
    user = good["data"][0]["user"]
    bad(good_body(clock, user={**user, "email": ["jane.doe@example.com"]}))  # unhashed
    bad(good_body(clock, user={**user, "phone": "+15551234567"}))
    bad(good_body(clock, user={**user, "ip": sha("203.0.113.7")}))  # hashed IP
    bad(good_body(clock, user={**user, "ttclid": sha(TTCLID)}))
    bad(good_body(clock, properties={"value": "142.52", "currency": "USD"}))
    bad(good_body(clock, properties={"value": 142.52}))
    assert standin.accepted == [] and len(standin.refusals) == 2 + 13


def test_the_standin_flags_repeats_within_48_hours(
    standin: TikTokStandIn, clock: ManualClock
) -> None:
    assert code_of(post(standin, good_body(clock))) == 0
    assert code_of(post(standin, good_body(clock))) == 0
    assert standin.repeats == ["ord_1001"]
    assert code_of(post(standin, good_body(clock, event="Purchase"))) == 0  # another event
    clock.advance(49 * 3600)
    assert code_of(post(standin, good_body(clock))) == 0  # the 48 h are over
    assert standin.repeats == ["ord_1001"]


# -- the real pipeline against the stand-in ---------------------------------------------


def open_pipeline(
    data_dir: Path,
    clock: ManualClock,
    standin: TikTokStandIn,
    sleep: Callable[[float], None] | None = None,
    **kw: Any,
) -> Pipeline:
    table = {"kind": "tiktok", "name": "tt", "event_source_id": PIXEL,
             "access_token_env": TOKEN_ENV, "endpoint": standin.base_url,
             "batch_max_wait_secs": 0, "event_map": EVENT_MAP, **kw}  # fmt: skip
    return destination_pipeline(data_dir, clock, table, env={TOKEN_ENV: TOKEN}, sleep=sleep)


def ingest(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body: dict[str, Any] = {
        "event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
        "value": 14252, "currency": "USD", "timestamp": clock.now_us() // 1000,
        "user": {"email": "Jane.Doe@example.com", "phone": "+1 555 123 4567"},
        "properties": {"_ttp": TTP},
        "context": {"page_url": PAGE, "user_agent": UA, "ip": "203.0.113.7",
                    "click_ids": {"ttclid": TTCLID}},
    }  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body)
    assert response.status_code == 202, response.text


def dead_letters(pipeline: Pipeline) -> dict[str, Any]:
    response = call(pipeline, "GET", "/v1/dead-letters?destination=tt", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_no_secret_or_pii_on_disk(data_dir: Path) -> None:
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert TOKEN.encode() not in content, path
            assert b"Jane.Doe@example.com" not in content, path


def test_every_eligible_event_reaches_tiktok_once_through_faults(
    tmp_path: Path, clock: ManualClock, standin: TikTokStandIn
) -> None:
    standin.plan = [
        Answer(429, {"Retry-After": "7"}, b""),
        Answer(200, {}, envelope(50002, "Internal service error")),
        Slow(0.6),  # the client gives up at 0.3 s; TikTok still takes the events
        After(Answer(503, {}, b"<html>gateway</html>")),  # accepted, but the answer is lost
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
    assert sorted(standin.dedup) == sorted(("CompletePayment", e) for e in eligible)
    counts = Counter(standin.accepted)
    # Sent again only after an answer was lost (the slow one, the 503): TikTok drops those.
    assert set(counts) == set(eligible) and max(counts.values()) > 1
    assert Counter(standin.repeats) == counts - Counter(eligible)
    first = standin.events[-1]
    assert first["user"]["ttclid"] == TTCLID and first["user"]["ttp"] == TTP
    assert first["user"]["phone"] == [sha("+15551234567")]
    assert_no_secret_or_pii_on_disk(tmp_path)


def test_a_refused_batch_is_dead_lettered_with_tiktoks_answer_then_replayed(
    tmp_path: Path, clock: ManualClock, standin: TikTokStandIn
) -> None:
    standin.plan = [Answer(200, {}, envelope(40002, "Invalid value for event_time"))]
    pipeline = open_pipeline(tmp_path, clock, standin)
    try:
        ingest(pipeline, clock, "order-1")
        ingest(pipeline, clock, "order-2")
        deliver_all(pipeline, clock)
        listed = dead_letters(pipeline)
        assert listed["total"] == 2
        for item in listed["items"]:
            assert item["last_status"] == 200 and "40002" in item["last_answer"]
            assert item["attempts"] == 1
        replay = call(pipeline, "POST", "/v1/dead-letters/replay", {"destination": "tt"},
                      key=ADMIN_KEY)  # fmt: skip
        assert replay.json() == {"replayed": 2}
        deliver_all(pipeline, clock)
        assert dead_letters(pipeline)["total"] == 0
    finally:
        pipeline.close()
    assert sorted(standin.accepted) == ["order-1", "order-2"] and standin.repeats == []
    assert_no_secret_or_pii_on_disk(tmp_path)


def test_a_stale_event_is_skipped_and_the_rest_delivered(
    tmp_path: Path, clock: ManualClock, standin: TikTokStandIn
) -> None:
    pipeline = open_pipeline(tmp_path, clock, standin)
    try:
        stale_at = clock.now_us() // 1000 - (7 * 86_400 - 60) * 1000  # inside 7 d at ingest
        ingest(pipeline, clock, "stale", timestamp=stale_at)
        ingest(pipeline, clock, "fresh")
        clock.advance(600)  # by delivery time the first one is out of the window
        deliver_all(pipeline, clock)
        assert dead_letters(pipeline)["total"] == 0
        metrics = call(pipeline, "GET", "/metrics", key=ADMIN_KEY).text
    finally:
        pipeline.close()
    assert standin.accepted == ["fresh"] and standin.refusals == []
    assert 'convtrack_deliver_skipped_total{destination="tt",reason="too_old"} 1.0' in metrics


def test_a_revoked_token_pauses_the_destination_and_keeps_the_events(
    tmp_path: Path, clock: ManualClock, standin: TikTokStandIn
) -> None:
    standin.plan = [Answer(200, {}, envelope(40105, "Access token has been revoked."))]
    pipeline = open_pipeline(tmp_path, clock, standin)
    runner = pipeline.deliveries[0]
    try:
        ingest(pipeline, clock, "order-1")
        process_all(pipeline)
        while runner.run_once():
            pass
        assert not runner.flush()  # held by the pause, not committed
        health = runner.health()
        assert health["paused"] and "revoked" in str(health["detail"])
        assert dead_letters(pipeline)["total"] == 0
        clock.advance(301)  # setup_pause_secs: the same batch is tried again
        deliver_all(pipeline, clock)
        assert not runner.health()["paused"]
    finally:
        pipeline.close()
    assert standin.accepted == ["order-1"] and len(standin.requests) == 2


# -- any event we would send passes TikTok's contract -----------------------------------

FUZZ_NOW = 1_796_000_000
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@pytest.fixture(scope="module")
def fuzz_standin() -> Iterator[TikTokStandIn]:
    server = TikTokStandIn(event_source_id=PIXEL, access_token=TOKEN,
                           now=lambda: float(FUZZ_NOW), window_days=7)  # fmt: skip
    yield server
    server.close()


@given(
    user=st.dictionaries(
        st.sampled_from(["email", "phone", "first_name", "external_id", "country", "fbp"]),
        st.one_of(_text, st.emails(), st.just("+44 20 7946 0958")),
    ),
    money=st.one_of(st.tuples(st.none(), st.none()),
                    st.tuples(st.integers(0, 10**12), st.sampled_from(["USD", "JPY", "KWD"]))),
    items=st.lists(st.dictionaries(
        st.sampled_from(["id", "content_id", "quantity", "price", "content_name", "name"]),
        st.one_of(_text, st.integers(-5, 10**6), st.floats(0, 1e6), st.booleans(), st.none()),
    ), max_size=3),
    properties=st.dictionaries(st.sampled_from(["order_id", "_ttp", "content_type"]),
                               st.one_of(_text, st.integers(0, 10**9), st.none())),
    ttclid=st.one_of(st.none(), st.text("abcXYZ09_-.", min_size=1, max_size=20)),
    ip=st.one_of(st.just("203.0.113.7"), st.just("2001:db8::1"), _text),
    age_secs=st.integers(0, 8 * 86_400),
)  # fmt: skip
@hypothesis_settings(max_examples=80, deadline=None)
def test_every_event_we_would_send_passes_the_standin(
    fuzz_standin: TikTokStandIn,
    user: dict[str, str],
    money: tuple[int | None, str | None],
    items: list[dict[str, Any]],
    properties: dict[str, Any],
    ttclid: str | None,
    ip: str,
    age_secs: int,
) -> None:
    value, currency = money
    event = forwarded(
        time_s=FUZZ_NOW - age_secs, value=value, currency=currency, user=user,
        properties={**properties, "contents": items},
        click_ids={"ttclid": ttclid} if ttclid else {},
        context={"page_url": PAGE, "user_agent": UA, "ip": ip},
    )  # fmt: skip
    tiktok = destination()
    if tiktok.skip_reason(event, FUZZ_NOW * 1_000_000) is not None:
        return
    request = tiktok.build([event], FUZZ_NOW * 1_000_000)
    with fuzz_standin.lock:
        answer = fuzz_standin.check(
            Request(method="POST", path="/open_api/v1.3/event/track/", query={},
                    headers=request.headers, body=request.body)
        )  # fmt: skip
    assert json.loads(answer.body)["code"] == 0, answer.body


def test_a_crash_after_the_platform_took_the_batch_sends_it_again_once(
    tmp_path: Path, clock: ManualClock, standin: TikTokStandIn
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
