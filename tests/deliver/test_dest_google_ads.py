"""Google Ads: golden requests for both APIs, answers to outcomes, the stand-in's contract
checks, windows and skips, and the real pipeline against the stand-in with faults."""

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
from convtrack.deliver.base import (
    Delivered,
    Forwarded,
    Reject,
    Retry,
    RetryPartial,
    SetupFault,
    Throttled,
)
from convtrack.deliver.destinations import google_ads
from convtrack.deliver.destinations.google_ads.response import read_click_upload, read_data_manager
from convtrack.deliver.destinations.google_ads.settings import GoogleAdsSettings
from convtrack.deliver.payload import forward_payload
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.testing import wait_for
from convtrack.testing.standins.base import After, Answer, Hangup, Slow
from convtrack.testing.standins.google_ads import GoogleAdsStandIn, ads_request_error, dm_error
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.support.deliverkit import deliver_all, destination_pipeline
from tests.support.inprocess import call

TOKEN = "ya29.test-token"
CUSTOMER = "1234567890"
MANAGER = "9876543210"
ACTION = "555000111"
EVENT_US = 1_759_320_000_250_000  # 2025-10-01T12:00:00.250Z
DAY_US = 86_400 * 1_000_000

# destinations.md section 7 vectors, checked against hashlib below.
EMAIL_HASH = "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
PHONE_E164_HASH = "8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"
GMAIL_GOOGLE_HASH = "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_vectors_are_sha256_of_the_documented_inputs() -> None:
    assert sha("jane.doe@example.com") == EMAIL_HASH
    assert sha("+15551234567") == PHONE_E164_HASH
    assert sha("janedoe@gmail.com") == GMAIL_GOOGLE_HASH


def forwarded(
    event_id: str,
    offset: int = 0,
    *,
    name: str = "Purchase",
    value: int | None = 14252,
    currency: str | None = "USD",
    user: dict[str, str] | None = None,
    click_ids: dict[str, str] | None = None,
    consent: dict[str, bool] | None = None,
    time_us: int = EVENT_US,
) -> Forwarded:
    """One event through the real model: hashed on arrival, then the canonical payload."""
    envelope = Envelope(event_id=event_id, source="default", event_name=name,
                        event_time_us=time_us, received_at_us=time_us, user_id="user-8842",
                        session_id="s1", value=value, currency=currency,
                        user=hash_user(user or {}), click_ids=click_ids or {},
                        consent=consent or {})  # fmt: skip
    processed = ProcessedEvent(event=envelope, source_partition=0, source_offset=offset,
                               campaign_id="c", event_date="2025-10-01", is_conversion=True,
                               logged_at_us=time_us, processed_at_us=time_us,
                               counted_at_us=time_us)  # fmt: skip
    return Forwarded(event_id, 0, offset, forward_payload(processed))


def settings_of(**kw: Any) -> GoogleAdsSettings:
    table = {"kind": "google_ads", "name": "gads", "customer_id": CUSTOMER,
             "conversion_action_id": ACTION, "access_token_env": "GADS_TOKEN"}  # fmt: skip
    table.update(kw)
    settings = load_settings(environ={}, overrides={"destinations": [table]}).destinations[0]
    assert isinstance(settings, GoogleAdsSettings)
    return settings


def make(env: dict[str, str] | None = None, **kw: Any) -> google_ads.GoogleAdsDestination:
    return google_ads.create(settings_of(**kw), {"GADS_TOKEN": TOKEN, **(env or {})})


def golden_events() -> list[Forwarded]:
    return [
        forwarded("ord_1001", 1, click_ids={"gclid": "Cj0KCQjw-EXAMPLE"},
                  user={"email": " Jane.Doe@example.com", "phone": "+1 (555) 123-4567"}),
        forwarded("ord_1002", 2, user={"email": "Jane.Doe@Gmail.com", "phone": "+15551234567"},
                  consent={"ad_personalization": False}),
        forwarded("ord_1003", 3, name="Lead", value=None, currency=None,
                  click_ids={"gbraid": "GB-1", "wbraid": "WB-1"}),
    ]  # fmt: skip


# -- golden requests ---------------------------------------------------------------------


def test_click_upload_golden_request() -> None:
    destination = make(api="click_upload", login_customer_id=MANAGER,
                       conversion_actions={"Lead": "777"})  # fmt: skip
    request = destination.build(golden_events(), EVENT_US)
    assert request.method == "POST"
    assert request.url == (
        f"https://googleads.googleapis.com/v26/customers/{CUSTOMER}:uploadClickConversions"
    )
    assert request.headers == {"authorization": f"Bearer {TOKEN}",
                               "content-type": "application/json",
                               "login-customer-id": MANAGER}  # fmt: skip
    action = f"customers/{CUSTOMER}/conversionActions/"
    granted = {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}
    assert json.loads(request.body) == {
        "partialFailure": True,
        "conversions": [
            {"gclid": "Cj0KCQjw-EXAMPLE", "conversionAction": action + ACTION,
             "conversionDateTime": "2025-10-01 12:00:00+00:00", "conversionValue": 142.52,
             "currencyCode": "USD", "orderId": "ord_1001", "consent": granted},
            # No click id: enhanced conversions for leads, Gmail dots removed (documented rule).
            {"userIdentifiers": [
                {"hashedEmail": GMAIL_GOOGLE_HASH, "userIdentifierSource": "FIRST_PARTY"},
                {"hashedPhoneNumber": PHONE_E164_HASH, "userIdentifierSource": "FIRST_PARTY"}],
             "conversionAction": action + ACTION,
             "conversionDateTime": "2025-10-01 12:00:00+00:00", "conversionValue": 142.52,
             "currencyCode": "USD", "orderId": "ord_1002",
             "consent": {"adUserData": "GRANTED", "adPersonalization": "DENIED"}},
            # gbraid wins over wbraid (never both); Lead goes to its own action; no value.
            {"gbraid": "GB-1", "conversionAction": action + "777",
             "conversionDateTime": "2025-10-01 12:00:00+00:00", "orderId": "ord_1003",
             "consent": granted},
        ],
    }  # fmt: skip


def test_data_manager_golden_request() -> None:
    destination = make(login_customer_id=MANAGER, conversion_actions={"Lead": "777"},
                       endpoint="https://dm.example/")  # fmt: skip
    request = destination.build(golden_events(), EVENT_US)
    assert request.url == "https://dm.example/v1/events:ingest"
    assert request.headers == {"authorization": f"Bearer {TOKEN}",
                               "content-type": "application/json"}  # fmt: skip
    consent = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}
    account = {"accountType": "GOOGLE_ADS", "accountId": CUSTOMER}
    login = {"accountType": "GOOGLE_ADS", "accountId": MANAGER}
    assert json.loads(request.body) == {
        "destinations": [
            {"reference": ACTION, "operatingAccount": account, "loginAccount": login,
             "productDestinationId": ACTION},
            {"reference": "777", "operatingAccount": account, "loginAccount": login,
             "productDestinationId": "777"},
        ],
        "encoding": "HEX",
        "events": [
            {"destinationReferences": [ACTION], "transactionId": "ord_1001",
             "eventTimestamp": "2025-10-01T12:00:00.250Z", "eventSource": "WEB",
             "adIdentifiers": {"gclid": "Cj0KCQjw-EXAMPLE"},
             "userData": {"userIdentifiers": [{"emailAddress": EMAIL_HASH},
                                              {"phoneNumber": PHONE_E164_HASH}]},
             "conversionValue": 142.52, "currency": "USD", "consent": consent},
            {"destinationReferences": [ACTION], "transactionId": "ord_1002",
             "eventTimestamp": "2025-10-01T12:00:00.250Z", "eventSource": "WEB",
             "userData": {"userIdentifiers": [{"emailAddress": GMAIL_GOOGLE_HASH},
                                              {"phoneNumber": PHONE_E164_HASH}]},
             "conversionValue": 142.52, "currency": "USD",
             "consent": {"adUserData": "CONSENT_GRANTED",
                         "adPersonalization": "CONSENT_DENIED"}},
            {"destinationReferences": ["777"], "transactionId": "ord_1003",
             "eventTimestamp": "2025-10-01T12:00:00.250Z", "eventSource": "WEB",
             "adIdentifiers": {"gbraid": "GB-1"}, "consent": consent},
        ],
    }  # fmt: skip


def test_the_developer_token_is_sent_only_when_set_and_the_sdk_gmail_rule_is_a_choice() -> None:
    destination = make({"GADS_DEV": "dev-token-22-characters"}, api="click_upload",
                       developer_token_env="GADS_DEV", gmail_rule="sdk")  # fmt: skip
    event = forwarded("o1", user={"email": "Jane.Doe+ads@Example.com"})
    request = destination.build([event], EVENT_US)
    assert request.headers["developer-token"] == "dev-token-22-characters"
    assert "login-customer-id" not in request.headers
    (row,) = json.loads(request.body)["conversions"]
    # google-ads-python's variant: every '.' and '+' of the local part goes, any domain.
    assert row["userIdentifiers"][0]["hashedEmail"] == sha("janedoeads@example.com")
    documented = make(api="click_upload").build([event], EVENT_US)
    (row,) = json.loads(documented.body)["conversions"]
    assert row["userIdentifiers"][0]["hashedEmail"] == sha("jane.doe+ads@example.com")
    assert "developer-token" not in documented.headers


def test_batch_limits_keep_answers_readable(standin: GoogleAdsStandIn) -> None:
    assert make().max_batch_events == 2000  # events:ingest answers only a request id
    destination = make(api="click_upload", endpoint=standin.base_url)
    assert destination.max_batch_events == 100
    events = [forwarded(f"order-{i:036d}", i, click_ids={"gclid": "Cj0KCQjw" + "x" * 90})
              for i in range(destination.max_batch_events)]  # fmt: skip
    request = destination.build(events, EVENT_US)
    for _ in range(2):  # all recorded, then all already in use: both answers are per row
        answer = post(request.url, request.body, request.headers)
        assert len(answer.content) < 32 * 1024  # half the cap: Google's messages are longer
        outcome = destination.read(events, answer.status_code, dict(answer.headers),
                                   answer.content)  # fmt: skip
        assert outcome == Delivered()


def test_the_dedup_id_is_our_event_id_on_every_attempt() -> None:
    destination = make(api="click_upload")
    events = [forwarded("o1", click_ids={"gclid": "G1"})]
    assert destination.build(events, EVENT_US) == destination.build(events, EVENT_US + DAY_US)


def test_settings_and_credentials_are_checked() -> None:
    with pytest.raises(ConfigError, match="GADS_TOKEN"):
        google_ads.create(settings_of(), {})
    with pytest.raises(ConfigError, match="GADS_DEV"):
        make(developer_token_env="GADS_DEV")
    with pytest.raises(ConfigError, match="conversion_actions"):
        make(conversion_actions={"Lead": "not-a-number"})
    with pytest.raises(ConfigError, match="at most 10"):
        make(conversion_actions={f"E{i}": str(i) for i in range(10)})
    with pytest.raises(ConfigError, match="customer_id"):
        make(customer_id="123-456-7890")
    make(api="click_upload", conversion_actions={f"E{i}": str(i) for i in range(10)})


# -- windows and skips -------------------------------------------------------------------


def test_skip_reasons() -> None:
    destination = make(click_window_days=30)
    event = forwarded("o1", click_ids={"gclid": "G1"})
    assert destination.skip_reason(event, EVENT_US + 30 * DAY_US) is None
    assert destination.skip_reason(event, EVENT_US + 30 * DAY_US + 1) == "too_old"
    assert make(click_window_days=90).skip_reason(event, EVENT_US + 60 * DAY_US) is None
    no_click = forwarded("o2", click_ids={"fbclid": "F1", "ttclid": "T1"})
    assert destination.skip_reason(no_click, EVENT_US) == "no_click_id"
    with_email = forwarded("o3", user={"email": "a@b.example"})
    assert destination.skip_reason(with_email, EVENT_US) is None
    # Without ad_user_data consent no identifier is sent, so nothing can be matched.
    denied = forwarded("o4", user={"email": "a@b.example"}, consent={"ad_user_data": False})
    assert destination.skip_reason(denied, EVENT_US) == "no_click_id"
    assert (
        "userIdentifiers"
        not in json.loads(make(api="click_upload").build([denied], EVENT_US).body)["conversions"][0]
    )


# -- answers to outcomes -----------------------------------------------------------------


def partial(*errors: tuple[str, str, int | None]) -> bytes:
    failures = []
    for error_type, code, index in errors:
        error: dict[str, Any] = {"errorCode": {error_type: code}, "message": f"{code} happened"}
        if index is not None:
            error["location"] = {"fieldPathElements": [{"fieldName": "conversions",
                                                        "index": index}]}  # fmt: skip
        failures.append(error)
    return json.dumps({"partialFailureError": {"code": 3, "message": "x", "details": [
        {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
         "errors": failures, "requestId": "r1"}]},
        "results": [{}], "jobId": "2147483650"}).encode()  # fmt: skip


def test_click_upload_row_answers() -> None:
    events = [forwarded(f"o{i}", i) for i in range(5)]
    assert read_click_upload(events, 200, {}, b'{"results":[{}],"jobId":"1"}') == Delivered()
    duplicates = partial(("conversionUploadError", "ORDER_ID_ALREADY_IN_USE", 0),
                         ("conversionUploadError", "CLICK_CONVERSION_ALREADY_EXISTS", 1),
                         ("conversionUploadError", "DUPLICATE_ORDER_ID", 2))  # fmt: skip
    assert read_click_upload(events, 200, {}, duplicates) == Delivered()
    mixed = partial(("conversionUploadError", "ORDER_ID_ALREADY_IN_USE", 0),
                    ("conversionUploadError", "TOO_RECENT_EVENT", 1),
                    ("internalError", "TRANSIENT_ERROR", 2),
                    ("conversionUploadError", "EXPIRED_EVENT", 3))  # fmt: skip
    outcome = read_click_upload(events, 200, {"request-id": "abc"}, mixed)
    assert isinstance(outcome, RetryPartial)
    assert outcome.event_ids == ["o1", "o2"] and outcome.after_secs == 6 * 3600
    assert list(outcome.rejected) == ["o3"]
    assert outcome.rejected["o3"].startswith("EXPIRED_EVENT: EXPIRED_EVENT happened")
    assert "abc" in outcome.reason  # the request-id, for Google support
    transient = read_click_upload(events, 200, {}, partial(("internalError", "INTERNAL_ERROR", 4)))
    assert isinstance(transient, RetryPartial) and transient.event_ids == ["o4"]
    assert transient.after_secs is None and transient.rejected == {}
    setup = partial(("conversionUploadError", "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", 0))
    outcome = read_click_upload(events, 200, {}, setup)
    assert isinstance(outcome, SetupFault)
    unplaced = partial(("conversionUploadError", "UNPARSEABLE_GCLID", None))
    outcome = read_click_upload(events, 200, {}, unplaced)
    assert isinstance(outcome, RetryPartial) and len(outcome.rejected) == 5
    # An answer cut at the size cap cannot be read: send again, order ids dedupe.
    assert isinstance(read_click_upload(events, 200, {}, b'{"results":[{},'), Retry)


def request_error(status: int, code: str, **extra: Any) -> bytes:
    body = ads_request_error(status, code, f"{code} text").body
    if extra:
        data = json.loads(body)
        data["error"]["details"][0]["errors"][0].update(extra)
        body = json.dumps(data).encode()
    return body


def test_click_upload_request_answers() -> None:
    events = [forwarded("o1")]
    for status, code in ((401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"),
                         (403, "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"),
                         (400, "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE")):  # fmt: skip
        outcome = read_click_upload(events, status, {}, request_error(status, code))
        assert isinstance(outcome, SetupFault), (status, code)
        assert code in outcome.reason
    daily = read_click_upload(events, 429, {}, request_error(429, "RESOURCE_EXHAUSTED"))
    assert daily == Throttled(after_secs=3600.0, reason=daily.reason)  # type: ignore[union-attr]
    short = request_error(429, "RESOURCE_TEMPORARILY_EXHAUSTED",
                          details={"quotaErrorDetails": {"retryDelay": "30s"}})  # fmt: skip
    outcome = read_click_upload(events, 429, {}, short)
    assert isinstance(outcome, Throttled) and outcome.after_secs == 30.0
    outcome = read_click_upload(events, 429, {"retry-after": "7"}, b"")
    assert isinstance(outcome, Throttled) and outcome.after_secs == 7.0
    for status in (500, 503, 504):
        outcome = read_click_upload(events, status, {}, b"<html>oops</html>")
        assert isinstance(outcome, Retry)
    outcome = read_click_upload(
        events, 400, {}, request_error(400, "PARTIAL_FAILURE_MODE_REQUIRED")
    )
    assert isinstance(outcome, Reject)
    assert "PARTIAL_FAILURE_MODE_REQUIRED" in outcome.reason


def test_data_manager_answers() -> None:
    events = [forwarded(f"o{i}", i) for i in range(3)]
    assert read_data_manager(events, 200, {}, b'{"requestId":"r"}') == Delivered()
    bad = dm_error(
        400,
        "INVALID_FORMAT",
        "bad",
        [{"field": "events[1].event_timestamp", "reason": "INVALID_FORMAT", "description": "d"}],
    )
    outcome = read_data_manager(events, 400, {}, bad.body)
    assert isinstance(outcome, RetryPartial)
    assert outcome.event_ids == ["o0", "o2"] and list(outcome.rejected) == ["o1"]
    assert "INVALID_FORMAT" in outcome.rejected["o1"]
    whole = read_data_manager(events, 400, {}, dm_error(400, "INVALID_ARGUMENT", "bad").body)
    assert isinstance(whole, Reject)
    for status, reason in ((403, "PERMISSION_DENIED"), (400, "TERMS_AND_CONDITIONS_NOT_SIGNED"),
                           (401, "UNAUTHENTICATED")):  # fmt: skip
        outcome = read_data_manager(events, status, {}, dm_error(status, reason, "no").body)
        assert isinstance(outcome, SetupFault), reason
    outcome = read_data_manager(events, 429, {}, dm_error(429, "RESOURCE_EXHAUSTED", "q").body)
    assert isinstance(outcome, Throttled)
    outcome = read_data_manager(events, 503, {"retry-after": "3"}, b"")
    assert outcome == Retry(after_secs=3.0, reason=outcome.reason)  # type: ignore[union-attr]


# -- the stand-in's contract checks ----------------------------------------------------


@pytest.fixture
def standin() -> Iterator[GoogleAdsStandIn]:
    server = GoogleAdsStandIn(TOKEN)
    yield server
    server.close()


def post(url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=data, headers=headers)


def test_the_stand_in_accepts_our_requests(standin: GoogleAdsStandIn) -> None:
    for api in ("click_upload", "data_manager"):
        destination = make(api=api, endpoint=standin.base_url, login_customer_id=MANAGER,
                           conversion_actions={"Lead": "777"})  # fmt: skip
        request = destination.build(golden_events(), EVENT_US)
        answer = post(request.url, request.body, request.headers)
        outcome = destination.read(golden_events(), answer.status_code,
                                   dict(answer.headers), answer.content)  # fmt: skip
        assert outcome == Delivered(), (api, answer.text)
    assert standin.accepted == ["ord_1001", "ord_1002", "ord_1003"] * 2


def test_the_stand_in_refuses_malformed_uploads(standin: GoogleAdsStandIn) -> None:
    destination = make(api="click_upload", endpoint=standin.base_url)
    request = destination.build([forwarded("o1", click_ids={"gclid": "G1"})], EVENT_US)
    good = json.loads(request.body)

    def send(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return post(request.url, body, request.headers if headers is None else headers)

    assert send(good, {"content-type": "application/json"}).status_code == 401
    refused = send({**good, "partialFailure": False})
    assert refused.status_code == 400 and "PARTIAL_FAILURE_MODE_REQUIRED" in refused.text
    outcome = destination.read([], refused.status_code, dict(refused.headers), refused.content)
    assert isinstance(outcome, Reject)
    too_many = send({**good, "conversions": good["conversions"] * 2001})
    assert "TOO_MANY_CONVERSIONS_IN_REQUEST" in too_many.text
    row = good["conversions"][0]
    for broken, code in (
        ({**row, "conversionDateTime": "2025-10-01T12:00:00Z"}, "INVALID_VALUE"),
        ({**row, "gbraid": "B", "wbraid": "W", "gclid": ""}, "GBRAID_WBRAID_BOTH_SET"),
        ({**row, "gbraid": "B"}, "INVALID_VALUE"),
        ({k: v for k, v in row.items() if k != "gclid"}, "REQUIRED"),
        ({**row, "gclid": "", "userIdentifiers": [{"hashedEmail": "jane@example.com"}]},
         "INVALID_USER_IDENTIFIER"),
        ({**row, "gclid": "", "userIdentifiers": [{"hashedEmail": EMAIL_HASH}] * 6},
         "INVALID_USER_IDENTIFIER"),
    ):  # fmt: skip
        answer = send({**good, "conversions": [broken]})
        assert answer.status_code == 200
        data = answer.json()
        assert data["results"] == [{}] and isinstance(data["jobId"], str)
        error = data["partialFailureError"]["details"][0]["errors"][0]
        assert list(error["errorCode"].values()) == [code], broken
        assert error["location"]["fieldPathElements"][0]["index"] == 0
    assert send(good).json()["results"][0]["gclid"] == "G1"
    again = send(good).json()  # the order id table, per conversion action
    assert "ORDER_ID_ALREADY_IN_USE" in json.dumps(again["partialFailureError"])
    assert standin.accepted == ["o1"]


def test_the_stand_in_refuses_malformed_ingests(standin: GoogleAdsStandIn) -> None:
    destination = make(endpoint=standin.base_url)
    event = forwarded("o1", click_ids={"gclid": "G1"}, user={"email": "a@b.example"})
    request = destination.build([event], EVENT_US)
    good = json.loads(request.body)
    row = good["events"][0]
    for body, reason in (
        ({**good, "encoding": None}, "INVALID_ARGUMENT"),
        ({**good, "events": [{**row, "eventTimestamp": "1759320000250"}]}, "INVALID_FORMAT"),
        ({**good, "events": [{**row, "userData": {"userIdentifiers": [
            {"emailAddress": "a@b.example"}]}}]}, "INVALID_SHA256_FORMAT"),
        ({**good, "events": [{k: v for k, v in row.items()
                              if k not in ("adIdentifiers", "userData")}]},
         "NO_IDENTIFIERS_PROVIDED"),
        ({**good, "events": [row] * 2001}, "TOO_MANY_EVENTS"),
        ({**good, "destinations": [{**good["destinations"][0], "operatingAccount": {
            "accountId": CUSTOMER}}]}, "INVALID_DESTINATION"),
    ):  # fmt: skip
        answer = post(request.url, body, request.headers)
        assert answer.status_code == 400 and reason in answer.text, (reason, answer.text)
    assert post(request.url, good, {}).status_code == 401
    assert post(request.url, good, request.headers).json()["requestId"]
    assert standin.accepted == ["o1"]


# -- the pipeline against the stand-in -----------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


def open_pipeline(data_dir: Path, clock: ManualClock, table: dict[str, Any]) -> Pipeline:
    return destination_pipeline(data_dir, clock, table, env={"GADS_TOKEN": TOKEN})


def send(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u-" + event_id,
            "value": 1250, "currency": "EUR", "timestamp": clock.now_us() // 1000,
            "context": {"click_ids": {"gclid": "G-" + event_id}}}  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def dead_letters(pipeline: Pipeline) -> dict[str, Any]:
    response = call(pipeline, "GET", "/v1/dead-letters?destination=gads", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def table(standin: GoogleAdsStandIn, **kw: Any) -> dict[str, Any]:
    base = {"kind": "google_ads", "name": "gads", "endpoint": standin.base_url,
            "customer_id": CUSTOMER, "conversion_action_id": ACTION,
            "access_token_env": "GADS_TOKEN", "batch_max_events": 10,
            "batch_max_wait_secs": 0, "timeout_secs": 0.5,
            "breaker_threshold": 100}  # fmt: skip
    base.update(kw)
    return base


def test_click_upload_end_to_end_with_faults(
    tmp_path: Path, clock: ManualClock, standin: GoogleAdsStandIn
) -> None:
    standin.plan = [
        Answer(429, {"Retry-After": "7"}, ads_request_error(429, "RESOURCE_EXHAUSTED", "q").body),
        Answer(503, {}, b"unavailable"),
        Slow(1.5),  # beyond timeout_secs: the client gives up, the stand-in still records
        After(Hangup()),  # recorded, then the answer is lost: the resend is a duplicate
    ]
    pipeline = open_pipeline(tmp_path, clock, table(standin, api="click_upload"))
    try:
        for i in range(1, 4):
            send(pipeline, clock, f"e{i}")
        deliver_all(pipeline)
        assert sorted(standin.accepted) == ["e1", "e2", "e3"]
        # Then rows fail on their own: too recent (6 h), transient, and for good.
        standin.row_faults = {"e4": ["TOO_RECENT_EVENT"], "e5": ["TRANSIENT_ERROR"],
                              "e6": ["UNPARSEABLE_GCLID"]}  # fmt: skip
        started = clock.monotonic()
        for i in range(4, 8):
            send(pipeline, clock, f"e{i}")
        send(pipeline, clock, "no-click", context={})  # skipped: no_click_id
        send(pipeline, clock, "lead", event_name="Lead",
             user={"email": "lead@example.com"}, context={})  # fmt: skip
        deliver_all(pipeline)
        letters = dead_letters(pipeline)
    finally:
        pipeline.close()
    eligible = {"e1", "e2", "e3", "e4", "e5", "e7", "lead"}
    assert sorted(standin.accepted) == sorted(eligible)  # each recorded exactly once
    assert "no-click" not in standin.received_rows
    assert [item["event_id"] for item in letters["items"]] == ["e6"]
    assert "UNPARSEABLE_GCLID" in letters["items"][0]["last_answer"]
    # Partial failures resend only the failed rows (the too-recent one sets the wait, 6 h).
    rows = [[c["orderId"] for c in json.loads(r.body)["conversions"]] for r in standin.requests]
    assert rows[-2:] == [["e4", "e5", "e6", "e7", "lead"], ["e4", "e5"]], rows
    assert clock.monotonic() - started >= 6 * 3600


def test_data_manager_end_to_end_with_faults(
    tmp_path: Path, clock: ManualClock, standin: GoogleAdsStandIn
) -> None:
    standin.plan = [Answer(500, {}, b"internal"), Slow(1.5),
                    Answer(429, {"Retry-After": "3"}, b"")]  # fmt: skip
    pipeline = open_pipeline(tmp_path, clock, table(standin))
    try:
        for i in range(1, 5):
            send(pipeline, clock, f"d{i}")
        deliver_all(pipeline)
        assert dead_letters(pipeline)["total"] == 0
    finally:
        pipeline.close()
    assert sorted(standin.accepted) == ["d1", "d2", "d3", "d4"]


# -- a crash while a request is out ----------------------------------------------------------


def server_config(path: Path, standin: GoogleAdsStandIn) -> Path:
    lines = ["[[destinations]]", 'kind = "google_ads"', 'name = "gads"', 'api = "click_upload"',
             f'endpoint = "{standin.base_url}"', f'customer_id = "{CUSTOMER}"',
             f'conversion_action_id = "{ACTION}"', 'access_token_env = "GADS_TOKEN"',
             "batch_max_wait_secs = 0"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def post_purchase(server: ServerProcess, event_id: str) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", "value": 4999,
            "currency": "EUR", "context": {"click_ids": {"gclid": "G-" + event_id}}}  # fmt: skip
    answer = httpx.post(server.url + "/v1/track", json=body, headers=auth(WRITE_KEY))
    assert answer.status_code == 202, answer.text


def test_a_crash_mid_upload_is_resent_and_deduplicated_by_order_id(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Google deduplicates on orderId: after a SIGKILL the upload is sent again, and the
    copy is answered ORDER_ID_ALREADY_IN_USE, which counts as delivered."""
    standin = GoogleAdsStandIn(TOKEN)
    standin.stall_next = True  # recorded, then no answer until the server is killed
    config = server_config(tmp_path / "convtrack.toml", standin)
    server = server_factory({"GADS_TOKEN": TOKEN}, args=["--config", str(config)])
    try:
        server.start()
        post_purchase(server, "order-1")
        wait_for("the upload to be recorded", lambda: standin.accepted == ["order-1"])
        server.kill()
        server.start()
        wait_for("the upload to be sent again", lambda: standin.received_rows.count("order-1") == 2)
        post_purchase(server, "order-2")
        wait_for("the next upload", lambda: "order-2" in standin.accepted)
        letters = httpx.get(server.url + "/v1/dead-letters?destination=gads",
                            headers=auth(ADMIN_KEY)).json()  # fmt: skip
    finally:
        server.stop()
        standin.close()
    assert letters["total"] == 0
    assert standin.accepted == ["order-1", "order-2"]  # each recorded once
