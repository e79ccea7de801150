"""LinkedIn Conversions API: golden payloads, answers, the stand-in's contract, windows, and
the real pipeline against the stand-in with faults (destinations.md §4, §7, §8)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import (
    Delivered,
    Forwarded,
    Reject,
    Retry,
    RetryPartial,
    SetupFault,
    Throttled,
)
from convtrack.deliver.destinations import create_destination
from convtrack.deliver.destinations.linkedin import LinkedInDestination
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing.standins.base import Answer, Slow
from convtrack.testing.standins.linkedin import LinkedInStandIn
from tests.conftest import ADMIN_KEY, WRITE_KEY
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import call

TOKEN = "li-test-token"
TOKEN_ENV = "LI_TOKEN"
DAY_US = 86_400_000_000
# destinations.md §4 example: 2025-10-01T12:00:00Z, rule 104012, version 202603.
EXAMPLE_US = 1_759_320_000_000_000
JANE_SHA256 = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"  # §7 vector


def table(**kw: Any) -> dict[str, Any]:
    settings = {"kind": "linkedin", "name": "li", "conversion_rule_id": "104012",
                "access_token_env": TOKEN_ENV}  # fmt: skip
    settings.update(kw)
    return settings


def only(destination: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides with this one destination table."""
    return {"destinations": [destination]}


def make_destination(**kw: Any) -> LinkedInDestination:
    settings = load_settings(environ={}, overrides=only(table(**kw)))
    destination = create_destination(settings.destinations[0], {TOKEN_ENV: TOKEN})
    assert isinstance(destination, LinkedInDestination)
    return destination


def forwarded(
    event_id: str = "ord_1001",
    *,
    event_time_us: int = EXAMPLE_US,
    event_name: str = "Purchase",
    value: int | None = 14252,
    currency: str | None = "USD",
    user: dict[str, str] | None = None,
    click_ids: dict[str, str] | None = None,
    touch_click_ids: dict[str, str] | None = None,
    offset: int = 0,
) -> Forwarded:
    """An event as the runner forwards it: the real hashing and the real canonical payload."""
    envelope = Envelope(event_id=event_id, source="default", event_name=event_name,
                        event_time_us=event_time_us, received_at_us=event_time_us, value=value,
                        currency=currency, user=hash_user(user or {}),
                        click_ids=click_ids or {})  # fmt: skip
    processed = ProcessedEvent(event=envelope, source_partition=0, source_offset=offset,
                               campaign_id="spring", event_date="2025-10-01", is_conversion=True,
                               touch_click_ids=touch_click_ids or {}, logged_at_us=event_time_us,
                               processed_at_us=event_time_us,
                               counted_at_us=event_time_us)  # fmt: skip
    return Forwarded(event_id, 0, offset, forward_payload(processed))


def jane(**kw: Any) -> Forwarded:
    kw.setdefault("user", {"email": "  Jane.Doe@Example.COM ", "first_name": "Jane",
                           "last_name": "Doe", "country": "us"})  # fmt: skip
    kw.setdefault("click_ids", {"li_fat_id": "AQEXAMPLE-1234"})
    return forwarded(**kw)


# -- golden payloads --------------------------------------------------------------


def test_the_request_matches_the_documented_example() -> None:
    request = make_destination().build([jane()], EXAMPLE_US + 60_000_000)
    assert (request.method, request.url) == (
        "POST",
        "https://api.linkedin.com/rest/conversionEvents",
    )
    assert request.headers == {
        "Authorization": "Bearer li-test-token",
        "LinkedIn-Version": "202603",
        "X-Restli-Protocol-Version": "2.0.0",
        "X-RestLi-Method": "BATCH_CREATE",
        "Content-Type": "application/json",
    }
    email_hash = hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert email_hash == JANE_SHA256
    # The §4 example, less userInfo: we hold names only as hashes, and LinkedIn wants them
    # plain there; a userInfo without them is refused (see the stand-in test below).
    assert json.loads(request.body) == {"elements": [{
        "conversion": "urn:lla:llaPartnerConversion:104012",
        "conversionHappenedAt": 1759320000000,
        "conversionValue": {"currencyCode": "USD", "amount": "142.52"},
        "eventId": "ord_1001",
        "user": {"userIds": [
            {"idType": "SHA256_EMAIL", "idValue": email_hash},
            {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "AQEXAMPLE-1234"},
        ]},
    }]}  # fmt: skip
    assert b"Jane" not in request.body and b"jane" not in request.body


def test_rules_per_event_ids_and_values() -> None:
    destination = make_destination(conversion_rules={"Lead": "777"}, api_version="202601",
                                   endpoint="http://proxy.example/")  # fmt: skip
    long_id = "x" * 100
    events = [
        forwarded(
            "lead-1", event_name="Lead", value=None, currency=None, user={"email": "a@example.com"}
        ),
        # The click id of the attributed touch counts when the event carries none.
        forwarded(long_id, value=500, currency="JPY", touch_click_ids={"li_fat_id": "T-1"}),
        forwarded("kwd", value=1234, currency="KWD", click_ids={"li_fat_id": "K-1"}),
    ]
    request = destination.build(events, EXAMPLE_US)
    assert request.url == "http://proxy.example/rest/conversionEvents"
    assert request.headers["LinkedIn-Version"] == "202601"
    lead, long, kwd = json.loads(request.body)["elements"]
    assert lead["conversion"] == "urn:lla:llaPartnerConversion:777"
    assert "conversionValue" not in lead
    assert lead["user"]["userIds"] == [
        {"idType": "SHA256_EMAIL", "idValue": hashlib.sha256(b"a@example.com").hexdigest()}
    ]
    assert long["conversion"] == "urn:lla:llaPartnerConversion:104012"
    assert long["eventId"] == hashlib.sha256(long_id.encode()).hexdigest()  # LinkedIn: <= 64
    assert long["conversionValue"] == {"currencyCode": "JPY", "amount": "500"}
    assert long["user"]["userIds"] == [
        {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "T-1"}
    ]
    assert kwd["conversionValue"] == {"currencyCode": "KWD", "amount": "1.234"}
    assert destination.build(events, EXAMPLE_US + DAY_US).body == request.body  # stable


def test_settings_are_checked() -> None:
    for bad in ({"api_version": "2026-03"}, {"conversion_rules": {"Lead": "abc"}},
                {"conversion_rule_id": "urn:1"}, {"window_days": 91}):  # fmt: skip
        with pytest.raises(ConfigError):
            load_settings(environ={}, overrides=only(table(**bad)))
    settings = load_settings(environ={}, overrides=only(table()))
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        create_destination(settings.destinations[0], {})
    destination = make_destination()
    assert destination.max_batch_events == 5000
    assert destination.ad_platform and destination.dedupes_on_event_id


# -- answers ------------------------------------------------------------------------


def batch_answer(*statuses: int) -> bytes:
    elements = [
        {"status": s} if s < 300 else {"status": s, "error": {"status": s, "message": f"m{s}"}}
        for s in statuses
    ]
    return json.dumps({"elements": elements}).encode()


def test_answers_become_outcomes() -> None:
    destination = make_destination()
    events = [forwarded(f"e{i}", offset=i) for i in range(4)]
    read = destination.read
    assert read(events, 200, {}, batch_answer(201, 201, 201, 201)) == Delivered()
    assert read(events[:1], 201, {}, b"") == Delivered()  # a single create
    partial = read(events, 200, {}, batch_answer(201, 500, 422, 429))
    assert isinstance(partial, RetryPartial)
    assert partial.event_ids == ["e1", "e3"]
    assert partial.rejected == {"e2": "element status 422: m422"}
    assert "3 of 4" in partial.reason
    # An answer that does not give one status per event: LinkedIn dedupes, send again.
    assert isinstance(read(events, 200, {}, batch_answer(201)), Retry)
    assert isinstance(read(events, 200, {}, b"<html>"), Retry)
    for status in (401, 403, 426):
        body = json.dumps({"status": status, "code": "X", "message": "token"}).encode()
        assert read(events, status, {}, body) == SetupFault(f"HTTP {status}: X: token")
    throttled = read(events, 429, {}, b"")
    assert throttled == Throttled(after_secs=None, reason="HTTP 429: ")
    assert read(events, 429, {"retry-after": "9"}, b"").after_secs == 9.0  # type: ignore[union-attr]
    down = read(events, 503, {}, b"busy")
    assert isinstance(down, Retry)
    body = json.dumps({"status": 422, "message": "ERROR :: /user/userIds :: missing"}).encode()
    assert read(events, 422, {}, body) == Reject("HTTP 422: ERROR :: /user/userIds :: missing")
    assert read(events, 400, {}, b"bad") == Reject("HTTP 400: bad")


# -- the stand-in enforces the contract ---------------------------------------------


@pytest.fixture
def standin() -> Iterator[LinkedInStandIn]:
    server = LinkedInStandIn(token=TOKEN, now_ms=lambda: EXAMPLE_US // 1000 + 60_000)
    yield server
    server.close()


def post(standin: LinkedInStandIn, body: Any, **headers: str) -> httpx.Response:
    sent = {"Authorization": f"Bearer {TOKEN}", "LinkedIn-Version": "202603",
            "X-Restli-Protocol-Version": "2.0.0", "X-RestLi-Method": "BATCH_CREATE",
            "Content-Type": "application/json", **headers}  # fmt: skip
    sent = {k: v for k, v in sent.items() if v}
    return httpx.post(standin.base_url + "/rest/conversionEvents", json=body, headers=sent)


def test_the_standin_accepts_what_we_build_and_dedupes(standin: LinkedInStandIn) -> None:
    request = make_destination(endpoint=standin.base_url).build([jane()], EXAMPLE_US)
    for _ in range(2):
        answer = httpx.post(request.url, content=request.body, headers=request.headers)
        assert answer.status_code == 200 and answer.json() == {"elements": [{"status": 201}]}
    assert standin.accepted == ["ord_1001"] and standin.duplicates == ["ord_1001"]


def test_the_standin_refuses_what_breaks_the_contract(standin: LinkedInStandIn) -> None:
    good = json.loads(make_destination().build([jane()], EXAMPLE_US).body)["elements"][0]

    def element(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    for header, value, status in (("Authorization", "Bearer wrong", 401),
                                  ("LinkedIn-Version", "", 400),
                                  ("LinkedIn-Version", "2026-03", 400),
                                  ("LinkedIn-Version", "202511", 426),
                                  ("X-Restli-Protocol-Version", "", 400)):  # fmt: skip
        answer = post(standin, {"elements": [good]}, **{header: value})
        assert answer.status_code == status, (header, value, answer.text)
        assert "message" in answer.json()
    assert post(standin, {"elements": [good] * 5001}).status_code == 422
    assert post(standin, {"elements": []}).status_code == 422
    unhashed = {"userIds": [{"idType": "SHA256_EMAIL", "idValue": "jane.doe@example.com"}]}
    bad_elements = [
        element(conversionHappenedAt=1759320000),  # seconds, not milliseconds
        element(conversionHappenedAt=EXAMPLE_US // 1000 - 91 * 86_400_000),  # too old
        element(conversionValue={"currencyCode": "USD", "amount": 142.52}),  # not a string
        element(user={}),  # userIds missing
        element(user=unhashed),
        element(user={**good["user"], "userInfo": {"countryCode": "US"}}),  # no names
        element(conversion="104012"),
        element(eventId="x" * 65),
        element(userInfo={"firstName": "Jane"}),  # not a field of the element
    ]
    answer = post(standin, {"elements": [good, *bad_elements]})
    assert answer.status_code == 200
    statuses = [e["status"] for e in answer.json()["elements"]]
    assert statuses == [201] + [422] * len(bad_elements)
    assert standin.accepted == ["ord_1001"]
    standin.fail_rows = {"ord_1001": [500]}
    assert post(standin, {"elements": [good]}).json()["elements"][0]["status"] == 500
    assert post(standin, {"elements": [good]}).json()["elements"][0]["status"] == 201


# -- windows and skip reasons ------------------------------------------------------------


def test_skip_reasons() -> None:
    destination = make_destination()
    now = EXAMPLE_US + 90 * DAY_US
    assert destination.skip_reason(jane(), now) is None  # exactly 90 days: still in
    assert destination.skip_reason(jane(), now + 1) == "too_old"
    assert make_destination(window_days=30).skip_reason(jane(), EXAMPLE_US + 31 * DAY_US) == (
        "too_old"
    )
    nobody = forwarded(user={"first_name": "Jane", "country": "US", "phone": "+15551234567"},
                       click_ids={"gclid": "G-1"})  # fmt: skip
    assert destination.skip_reason(nobody, EXAMPLE_US) == "no_user_identifier"
    assert destination.skip_reason(forwarded(click_ids={"li_fat_id": "L"}), EXAMPLE_US) is None
    assert destination.skip_reason(forwarded(user={"email": "a@b.co"}), EXAMPLE_US) is None


# -- the real pipeline against the stand-in -------------------------------------------


START_US = 1_796_000_000_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=START_US)


def open_pipeline(data_dir: Path, clock: ManualClock, standin: LinkedInStandIn,
                  **kw: Any) -> Pipeline:  # fmt: skip
    destination = table(endpoint=standin.base_url, batch_max_wait_secs=0, **kw)
    return destination_pipeline(data_dir, clock, destination, env={TOKEN_ENV: TOKEN},
                                limits={"max_event_age_secs": 100 * 86_400})  # fmt: skip


def track(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
            "value": 4999, "currency": "EUR", "campaign_id": "spring",
            "user": {"email": f"{event_id}@example.com"},
            "timestamp": clock.now_us() // 1000}  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def dead_letters(pipeline: Pipeline) -> list[dict[str, Any]]:
    response = call(pipeline, "GET", "/v1/dead-letters?destination=li", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_answered(standin: LinkedInStandIn, deadline_secs: float = 10.0) -> None:
    """Until every request that reached the stand-in got its answer (a slow one included)."""
    end = time.monotonic() + deadline_secs
    while len(standin.answers) < len(standin.requests):
        assert time.monotonic() < end, "the stand-in never answered"
        threading.Event().wait(0.01)


def test_every_eligible_event_reaches_linkedin_once_through_faults(
    tmp_path: Path, clock: ManualClock
) -> None:
    standin = LinkedInStandIn(token=TOKEN, now_ms=lambda: clock.now_us() // 1000)
    pipeline = open_pipeline(tmp_path, clock, standin, timeout_secs=0.5, max_attempts=6)
    try:
        # Round 1: throttled, then down, then two rows fail (one for a passing reason).
        throttled = json.dumps({"status": 429, "message": "Resource level throttle limit"})
        standin.plan = [Answer(429, {}, throttled.encode()), Answer(503, {}, b"unavailable")]
        standin.fail_rows = {"e3": [500], "e4": [400]}
        for i in range(1, 6):
            track(pipeline, clock, f"e{i}")
        track(pipeline, clock, "clicked", user={}, click_ids={"li_fat_id": "AQ-CLICK"})
        track(pipeline, clock, "stale", timestamp=(clock.now_us() - 91 * DAY_US) // 1000)
        track(pipeline, clock, "anon", user={"first_name": "Jane"})  # nothing to match on
        track(pipeline, clock, "refused", consent={"ad_user_data": False})
        track(pipeline, clock, "pv", event_name="page_view")  # not a conversion
        deliver_all(pipeline)
        wait_answered(standin)
        round_one = {"e1", "e2", "e3", "e5", "clicked"}
        assert set(standin.accepted) == round_one
        assert len(standin.accepted) == len(round_one) and standin.duplicates == []
        # The row that failed for a passing reason was sent again alone.
        last = json.loads(standin.requests[-1].body)["elements"]
        assert [e["eventId"] for e in last] == ["e3"]
        (letter,) = dead_letters(pipeline)
        assert letter["event_id"] == "e4" and "element status 400" in letter["last_answer"]
        metrics = call(pipeline, "GET", "/metrics", key=ADMIN_KEY).text
        for reason in ("too_old", "no_user_identifier", "consent"):
            line = f'convtrack_deliver_skipped_total{{destination="li",reason="{reason}"}} 1.0'
            assert line in metrics, reason

        # Round 2: a request outlives timeout_secs; LinkedIn got it anyway and drops the copy.
        sent_before = len(standin.requests)
        standin.plan = [Slow(1.5)]
        track(pipeline, clock, "e6")
        track(pipeline, clock, "e7")
        deliver_all(pipeline)
        wait_answered(standin)
    finally:
        pipeline.close()
        standin.close()
    assert len(standin.requests) == sent_before + 2
    assert set(standin.accepted) == round_one | {"e6", "e7"}
    assert len(standin.accepted) == len(set(standin.accepted))
    assert sorted(standin.duplicates) == ["e6", "e7"]  # the timed-out copy, deduplicated
    for request in standin.requests:
        assert b"@example.com" not in request.body  # raw emails never leave
