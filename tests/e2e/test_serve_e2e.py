"""End to end against a real ``convtrack serve`` process over HTTP."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_KEY,
    SERVER_KEY,
    WRITE_KEY,
    ServerFactory,
    ServerProcess,
    auth,
    logged_event_ids,
    logged_payloads,
)

pytestmark = pytest.mark.slow


def purchase(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_name": "Purchase",
        "user_id": "u_123",
        "value": 4999,
        "currency": "USD",
        "campaign_id": "spring_sale",
    }
    body.update(kw)
    return body


def post(
    server: ServerProcess, path: str, body: Any, key: str = WRITE_KEY, **kw: Any
) -> httpx.Response:
    headers = {**auth(key), **kw.pop("headers", {})}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=10, **kw)


def test_track_is_durable_and_in_the_log(server: ServerProcess) -> None:
    event = purchase()
    response = post(server, "/v1/track", event)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "event_id": event["event_id"]}
    alias = post(server, "/track/conversion", purchase(event_id="alias-1"))
    assert alias.status_code == 202
    assert logged_event_ids(server.data_dir) == [event["event_id"], "alias-1"]


def test_text_plain_body_like_send_beacon(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/v1/track?writeKey={WRITE_KEY}",
        content=json.dumps(purchase(event_id="beacon-1")),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 202


def test_event_id_from_query_string_and_mismatch(server: ServerProcess) -> None:
    body = purchase()
    del body["event_id"]
    assert post(server, "/v1/track?event_id=q-1", body).json()["event_id"] == "q-1"
    mismatch = post(server, "/v1/track?event_id=q-2", purchase(event_id="other"))
    assert mismatch.status_code == 400
    assert mismatch.json()["errors"][0]["code"] == "event_id_mismatch"


def test_fingerprint_when_no_event_id(server: ServerProcess) -> None:
    body = purchase()
    del body["event_id"]
    first = post(server, "/v1/track", body).json()["event_id"]
    again = post(server, "/v1/track", body).json()["event_id"]
    other = post(server, "/v1/track", {**body, "value": 1}).json()["event_id"]
    assert first == again != other


def test_keys_by_bearer_basic_and_query(server: ServerProcess) -> None:
    basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    event = purchase()
    assert (
        httpx.post(
            f"{server.url}/v1/track", json=event, headers={"Authorization": f"Basic {basic}"}
        ).status_code
        == 202
    )
    assert httpx.post(f"{server.url}/v1/track?writeKey={WRITE_KEY}", json=event).status_code == 202
    assert post(server, "/v1/track", event, key=SERVER_KEY).status_code == 202
    assert post(server, "/v1/track", event, key=ADMIN_KEY).status_code == 202


def test_auth_errors(server: ServerProcess) -> None:
    missing = httpx.post(f"{server.url}/v1/track", json=purchase())
    assert (missing.status_code, missing.json()["error"]) == (401, "key_missing")
    unknown = post(server, "/v1/track", purchase(), key="not-a-key-0123456789")
    assert (unknown.status_code, unknown.json()["error"]) == (401, "key_unknown")
    forbidden = httpx.get(f"{server.url}/v1/rejects", headers=auth(WRITE_KEY))
    assert forbidden.status_code == 403
    assert httpx.get(f"{server.url}/v1/rejects", headers=auth(SERVER_KEY)).status_code == 403
    secret_in_url = httpx.post(f"{server.url}/v1/track?writeKey={SERVER_KEY}", json=purchase())
    assert secret_in_url.status_code == 403
    assert logged_event_ids(server.data_dir) == []


def test_validation_error_shape_and_reject_kept_with_hashed_contact(server: ServerProcess) -> None:
    body = {
        "event_name": "Purchase",
        "value": 49.99,
        "currency": "usd",
        "user": {"email": "Jane.Doe@Example.com"},
    }
    response = post(server, "/v1/track", body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "validation_failed"
    found = {e["code"] for e in payload["errors"]}
    assert found == {"user_id_missing", "value_not_integer_minor_units", "currency_not_uppercase"}
    assert all({"field", "code", "message"} <= e.keys() for e in payload["errors"])
    rejects = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    assert rejects["total"] == 1
    item = rejects["items"][0]
    assert set(item["codes"]) == found and item["key_role"] == "write" and item["status"] == 400
    assert "Jane" not in item["body"] and "example.com" not in item["body"].lower()
    assert "49.99" in item["body"]


def test_malformed_bodies_get_stable_codes(server: ServerProcess) -> None:
    cases = [
        (b"{not json", "json_invalid"),
        (b"", "body_empty"),
        (b"[1,2]", "body_not_object"),
        (b"\xff\xfe", "json_invalid"),
        (b"[" * 5000 + b"]" * 5000, "json_too_deep"),
        (b'{"a": NaN}', "json_invalid"),
    ]
    for raw, code in cases:
        response = httpx.post(
            f"{server.url}/v1/track",
            content=raw,
            headers={**auth(WRITE_KEY), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, raw[:20]
        assert response.json()["errors"][0]["code"] == code


def test_413_and_415(server: ServerProcess) -> None:
    big = purchase(properties={"blob": "x" * 70_000})
    assert post(server, "/v1/track", big).status_code == 413
    form = httpx.post(
        f"{server.url}/v1/track",
        content=b"a=b",
        headers={**auth(WRITE_KEY), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (form.status_code, form.json()["error"]) == (415, "unsupported_media_type")

    def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 10_000

    chunked = httpx.post(
        f"{server.url}/v1/track",
        content=chunks(),
        headers={**auth(WRITE_KEY), "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    bomb = gzip.compress(b'{"a":"' + b"0" * 10_000_000 + b'"}')
    gz = httpx.post(
        f"{server.url}/v1/track",
        content=bomb,
        headers={**auth(WRITE_KEY), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert gz.status_code == 413
    small = gzip.compress(json.dumps(purchase(event_id="gz-1")).encode())
    ok = httpx.post(
        f"{server.url}/v1/track",
        content=small,
        headers={**auth(WRITE_KEY), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert ok.status_code == 202


def test_batch_outcomes(server: ServerProcess) -> None:
    batch = [purchase(event_id="b-0"), {"event_name": "x"}, 7, purchase(event_id="b-3")]
    response = post(server, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert body["rejected"][0]["errors"][0]["code"] == "user_id_missing"
    assert body["rejected"][1]["errors"][0]["code"] == "event_not_object"
    assert logged_event_ids(server.data_dir) == ["b-0", "b-3"]
    too_many = post(server, "/v1/batch", {"batch": [purchase() for _ in range(501)]})
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["code"] == "batch_too_large"
    not_a_batch = post(server, "/v1/batch", {"events": []})
    assert not_a_batch.json()["errors"][0]["code"] == "batch_invalid"
    huge = {"batch": [purchase(properties={"p": "x" * 5000}) for _ in range(110)]}
    assert post(server, "/v1/batch", huge).status_code == 413


def test_rejects_filter_and_paging(server: ServerProcess) -> None:
    for i in range(5):
        post(server, "/v1/track", {"event_name": "x", "event_id": f"r{i}"})
    post(server, "/v1/track", purchase(currency="usd"))
    url = f"{server.url}/v1/rejects"
    page1 = httpx.get(
        url, params={"code": "user_id_missing", "limit": 3}, headers=auth(ADMIN_KEY)
    ).json()
    assert page1["total"] == 5 and len(page1["items"]) == 3
    page2 = httpx.get(
        url,
        params={"code": "user_id_missing", "limit": 3, "cursor": page1["next_cursor"]},
        headers=auth(ADMIN_KEY),
    ).json()
    ids = [i["event_id"] for i in page1["items"] + page2["items"]]
    assert sorted(ids) == [f"r{i}" for i in range(5)] and page2["next_cursor"] is None
    other = httpx.get(
        url, params={"code": "currency_not_uppercase"}, headers=auth(ADMIN_KEY)
    ).json()
    assert other["total"] == 1
    bad = httpx.get(url, params={"limit": "abc"}, headers=auth(ADMIN_KEY))
    assert bad.status_code == 400


def test_rate_limit_per_user(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "5"})
    server.start()
    # Faster than 5/s until refused: a loaded machine slows the requests down, so how
    # many it takes is not fixed, only that a burst past the bucket is refused.
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 500:
        statuses.append(post(server, "/v1/track", purchase(user_id="hot")).status_code)
    assert statuses.count(202) >= 5 and 429 in statuses
    limited = post(server, "/v1/track", purchase(user_id="hot"))
    if limited.status_code == 429:
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json() == {"error": "rate_limited"}
    assert post(server, "/v1/track", purchase(user_id="calm")).status_code == 202
    batch = post(
        server, "/v1/batch", {"batch": [purchase(user_id="hot2") for _ in range(10)]}
    ).json()
    assert batch["accepted"] == 5
    assert {r["errors"][0]["code"] for r in batch["rejected"]} == {"rate_limited"}
    kept = httpx.get(
        f"{server.url}/v1/rejects", params={"code": "rate_limited"}, headers=auth(ADMIN_KEY)
    ).json()
    assert kept["total"] == statuses.count(429) + (limited.status_code == 429) + 5
    # A batch of several users: each user's first events within the bucket are
    # accepted in order, whatever other users and invalid events come between.
    mixed = [
        purchase(user_id="hot3" if i % 2 == 0 else f"calm-{i}", event_id=f"mixed-{i}")
        for i in range(14)
    ]
    mixed[5] = {"event_name": "Purchase"}  # no user: invalid
    answer = post(server, "/v1/batch", {"batch": mixed}).json()
    hot_indices = [i for i in range(14) if i % 2 == 0]
    assert [(r["index"], r["errors"][0]["code"]) for r in answer["rejected"]] == [
        (5, "user_id_missing"),
        *((i, "rate_limited") for i in hot_indices[5:]),
    ]
    assert answer["accepted"] == 14 - 1 - len(hot_indices[5:])


def test_503_when_the_log_cannot_take_the_events(server_factory: ServerFactory) -> None:
    server = server_factory(
        {"CONVTRACK_LOG_MAX_PENDING_EVENTS": "3", "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"}
    )
    server.start()
    response = post(server, "/v1/batch", {"batch": [purchase() for _ in range(4)]})
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable"} and "Retry-After" in response.headers
    assert post(server, "/v1/batch", {"batch": [purchase() for _ in range(3)]}).status_code == 200
    assert len(logged_event_ids(server.data_dir)) == 3


def test_cors_allow_list_per_write_key(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_COLLECT_ALLOWED_ORIGINS": "https://shop.example"})
    server.start()
    pre = {"Access-Control-Request-Method": "POST"}
    good = httpx.options(
        f"{server.url}/v1/track", headers={**pre, "Origin": "https://shop.example"}
    )
    assert good.status_code == 204
    assert good.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in good.headers["access-control-allow-headers"]
    for origin in ("https://evil.example", "null"):
        bad = httpx.options(f"{server.url}/v1/track", headers={**pre, "Origin": origin})
        assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
    ok = post(server, "/v1/track", purchase(), headers={"Origin": "https://shop.example"})
    assert ok.status_code == 202
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    foreign = post(server, "/v1/track", purchase(), headers={"Origin": "https://evil.example"})
    assert (foreign.status_code, foreign.json()["error"]) == (403, "origin_not_allowed")


def test_default_cors_allows_any_origin_but_not_null(server: ServerProcess) -> None:
    pre = {"Access-Control-Request-Method": "POST"}
    any_origin = httpx.options(
        f"{server.url}/v1/batch", headers={**pre, "Origin": "https://a.example"}
    )
    assert any_origin.headers["access-control-allow-origin"] == "https://a.example"
    assert (
        httpx.options(f"{server.url}/v1/batch", headers={**pre, "Origin": "null"}).status_code
        == 403
    )


def test_operations_endpoints(server: ServerProcess) -> None:
    post(server, "/v1/track", purchase())
    post(server, "/v1/track", {"event_name": "x"})
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["log"]["writable"] is True
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'convtrack_http_requests_total{route="/v1/track",status="202"} 1.0' in metrics
    assert 'convtrack_events_accepted_total{route="/v1/track"} 1.0' in metrics
    assert 'convtrack_events_rejected_total{code="user_id_missing"} 1.0' in metrics
    assert "convtrack_log_append_seconds_bucket" in metrics
    assert httpx.get(f"{server.url}/nope").status_code == 404
    assert httpx.get(f"{server.url}/v1/track").status_code == 405
    spec = httpx.get(f"{server.url}/openapi.json")
    assert spec.status_code == 200 and spec.headers["content-type"] == "application/json"


def test_sigterm_drains_and_exits_zero(server: ServerProcess) -> None:
    ids = [post(server, "/v1/track", purchase()).json()["event_id"] for _ in range(20)]
    assert server.terminate() == 0
    assert logged_event_ids(server.data_dir) == ids


def test_first_start_creates_and_prints_keys_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    for name in ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY"):
        server.env.pop(name)
    assert server.start() < 10
    keys = json.loads((server.data_dir / "keys.json").read_text())
    assert (server.data_dir / "keys.json").stat().st_mode & 0o077 == 0
    assert server.terminate() == 0
    first_output = server.log_path.read_text()
    assert keys["write"] in first_output and keys["admin"] in first_output
    server.start()
    response = post(server, "/v1/track", purchase(), key=keys["write"])
    assert response.status_code == 202
    assert server.terminate() == 0
    assert server.log_path.read_text().count(keys["write"]) == 1


def test_unknown_setting_is_an_error_naming_it(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SECOND": "5"})
    with pytest.raises(RuntimeError, match=r"limits\.user_events_per_second"):
        server.start()


def test_rejects_are_capped_oldest_dropped_and_counted(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_REJECTS_MAX_ROWS": "5"})
    server.start()
    for i in range(8):
        post(server, "/v1/track", {"event_name": "x", "event_id": f"c{i}"})
    page = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    assert page["total"] == 5
    assert [i["event_id"] for i in page["items"]] == [f"c{i}" for i in range(7, 2, -1)]
    assert "convtrack_rejects_dropped_total 3.0" in httpx.get(f"{server.url}/metrics").text


def test_refused_bodies_are_kept_without_their_content(server: ServerProcess) -> None:
    big = purchase(properties={"blob": "x" * 70_000})
    assert post(server, "/v1/track", big).status_code == 413
    form = httpx.post(
        f"{server.url}/v1/track",
        content=b"a=b",
        headers={**auth(WRITE_KEY), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    page = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    assert [(i["status"], i["codes"], i["body"]) for i in page["items"]] == [
        (415, ["unsupported_media_type"], ""),
        (413, ["body_too_large"], ""),
    ]


def test_cors_headers_on_error_answers_and_unknown_preflight_key(server: ServerProcess) -> None:
    origin = {"Origin": "https://shop.example"}
    bad = post(server, "/v1/track", {"event_name": "x"}, headers=origin)
    assert bad.status_code == 400
    assert bad.headers["access-control-allow-origin"] == "https://shop.example"
    unauth = httpx.post(f"{server.url}/v1/track", json=purchase(), headers=origin)
    assert unauth.status_code == 401
    assert unauth.headers["access-control-allow-origin"] == "https://shop.example"
    preflight = httpx.options(
        f"{server.url}/v1/track?writeKey=unknown-key-0123456789",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 401


def test_forwarded_for_is_ignored_unless_from_a_trusted_proxy(server: ServerProcess) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    assert post(server, "/v1/track", purchase(event_id="xff-1"), headers=spoofed).status_code == 202
    (payload,) = logged_payloads(server.data_dir)
    assert json.loads(payload)["context"]["ip"] == "127.0.0.1"
