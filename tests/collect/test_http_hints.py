"""Refusals that say how to do it right: a key sent the wrong way, a body of the wrong type."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from tests.conftest import ADMIN_KEY, BROWSER_UA, SERVER_KEY, WRITE_KEY, auth
from tests.support.inprocess import make_pipeline

NOW_US = 1_800_000_000_000_000
EVENT = {"event_name": "Purchase", "user_id": "u1", "value": 100, "currency": "USD"}
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    made = make_pipeline(tmp_path, ManualClock(NOW_US))
    try:
        yield made
    finally:
        made.close()


def send(pipeline: Pipeline, method: str, url: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def track(pipeline: Pipeline, headers: dict[str, str], url: str = "/v1/track") -> httpx.Response:
    body = json.dumps(EVENT).encode()
    all_headers = {"User-Agent": BROWSER_UA, "Content-Type": "application/json", **headers}
    return send(pipeline, "POST", url, content=body, headers=all_headers)


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rejects(pipeline: Pipeline) -> list[dict[str, Any]]:
    page = send(pipeline, "GET", "/v1/rejects", headers=auth(ADMIN_KEY))
    items: list[dict[str, Any]] = page.json()["items"]
    return items


# -- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "no key"),
        (WRITE_KEY, "no scheme"),  # the bare key, without "Bearer "
        ("Bearer ", "Bearer credentials are empty"),
        (f"Token {WRITE_KEY}", "neither Bearer nor Basic"),
        ("Basic not-base64!", 'Basic credentials are not base64 of "<key>:"'),
        (basic("", WRITE_KEY), "the key as user name"),  # the key as password
    ],
)
def test_a_key_sent_the_wrong_way_is_told_how_to_send_it(
    pipeline: Pipeline, authorization: str | None, says: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    refused = track(pipeline, headers)
    assert refused.status_code == 401
    body = refused.json()
    assert body["error"] == "key_missing"  # the stable code does not change
    assert says in body["message"]
    assert 'send "Authorization: Bearer <key>"' in body["message"]
    assert WRITE_KEY not in body["message"]  # a key sent the wrong way is not echoed


def test_an_ignored_query_key_is_said_to_be_ignored(pipeline: Pipeline) -> None:
    refused = track(pipeline, {"Authorization": "Token x"}, f"/v1/track?writeKey={WRITE_KEY}")
    assert refused.status_code == 401
    message = refused.json()["message"]
    assert "?writeKey= is not read when an Authorization header is sent" in message


def test_the_ways_that_work_still_work(pipeline: Pipeline) -> None:
    # Segment's and RudderStack's libraries: HTTP Basic with the key as user name.
    assert track(pipeline, {"Authorization": basic(WRITE_KEY)}).status_code == 202
    assert track(pipeline, {"Authorization": basic(WRITE_KEY, "ignored")}).status_code == 202
    assert track(pipeline, {"Authorization": f"Bearer {WRITE_KEY}"}).status_code == 202
    assert track(pipeline, {"Authorization": f"bearer {SERVER_KEY}"}).status_code == 202
    assert track(pipeline, {}, f"/v1/track?writeKey={WRITE_KEY}").status_code == 202
    unknown = track(pipeline, {"Authorization": "Bearer not-a-key-0123456789"})
    assert (unknown.status_code, unknown.json()["error"]) == (401, "key_unknown")


# -- content types ---------------------------------------------------------------------


def test_a_415_lists_the_accepted_content_types(pipeline: Pipeline) -> None:
    for path, key in [("/v1/track", WRITE_KEY), ("/v1/batch", WRITE_KEY),
                      ("/v1/conversion-tokens", SERVER_KEY)]:  # fmt: skip
        refused = send(pipeline, "POST", path, content=b"<event/>",
                       headers={**auth(key), "Content-Type": "application/xml"})  # fmt: skip
        assert refused.status_code == 415, path
        body = refused.json()
        assert body["error"] == "unsupported_media_type"
        assert "'application/xml'" in body["message"]
        assert "application/json" in body["message"] and "text/plain" in body["message"]
        accepted = {t.strip() for t in refused.headers["accept-post"].split(",")}
        assert accepted == {"application/json", "text/plain"}, path


def test_a_415_for_the_encoding_lists_the_accepted_codings(pipeline: Pipeline) -> None:
    refused = send(pipeline, "POST", "/v1/track", content=json.dumps(EVENT).encode(),
                   headers={**auth(WRITE_KEY), "Content-Encoding": "br"})  # fmt: skip
    assert refused.status_code == 415
    assert refused.json()["error"] == "unsupported_content_encoding"
    assert "gzip" in refused.json()["message"]
    assert {c.strip() for c in refused.headers["accept-encoding"].split(",")} >= {"gzip"}


def test_json_sent_as_a_form_is_read_on_the_ingest_routes(pipeline: Pipeline) -> None:
    # What `curl -d '{…}'` sends without -H, and what some old browsers' beacons send.
    headers = {**auth(WRITE_KEY), "Content-Type": FORM}
    one = send(pipeline, "POST", "/v1/track", content=json.dumps({**EVENT, "event_id": "f1"}),
               headers=headers)  # fmt: skip
    assert (one.status_code, one.json()["event_id"]) == (202, "f1")
    batch = json.dumps({"batch": [{**EVENT, "event_id": "f2"}]})
    many = send(pipeline, "POST", "/v1/batch", content=batch, headers=headers)
    assert (many.status_code, many.json()["accepted"]) == (200, 1)
    invalid = send(pipeline, "POST", "/v1/track", content=json.dumps({**EVENT, "value": 1.5}),
                   headers=headers)  # fmt: skip
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["code"] == "value_not_integer_minor_units"


def test_a_real_form_is_refused_with_what_to_send(pipeline: Pipeline) -> None:
    headers = {**auth(WRITE_KEY), "Content-Type": f"{FORM}; charset=utf-8"}
    refused = send(pipeline, "POST", "/v1/track", content=b"event_name=Purchase&user_id=u1",
                   headers=headers)  # fmt: skip
    assert refused.status_code == 415
    body = refused.json()
    assert body["error"] == "unsupported_media_type"
    assert FORM in body["message"] and "is not JSON" in body["message"]
    assert "Content-Type: application/json" in body["message"]
    assert "application/json" in refused.headers["accept-post"]
    # Kept with the rejects, without the form's content (it may hold contact data).
    (kept,) = rejects(pipeline)
    assert (kept["status"], kept["codes"], kept["body"]) == (415, ["unsupported_media_type"], "")


def test_other_routes_do_not_read_forms(pipeline: Pipeline) -> None:
    refused = send(pipeline, "POST", "/v1/conversion-tokens", content=b'{"order_id":"o1"}',
                   headers={**auth(SERVER_KEY), "Content-Type": FORM})  # fmt: skip
    assert (refused.status_code, refused.json()["error"]) == (415, "unsupported_media_type")
