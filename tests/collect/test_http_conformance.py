"""What schemathesis found the API and its OpenAPI document disagreeing on, one test each."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convtrack.api.app import INGEST_ROUTES
from convtrack.clock import ManualClock
from convtrack.collect.http import content_coding
from convtrack.model.currency import iso4217_codes
from convtrack.runtime.embedded import Pipeline
from tests.api.test_openapi import HTTP_METHODS, load_spec, operations
from tests.conftest import ADMIN_KEY, WRITE_KEY, auth
from tests.support.inprocess import call, make_pipeline

NOW_US = 1_800_000_000_000_000
EVENT = {"event_name": "Purchase", "user_id": "u1", "value": 100, "currency": "USD"}


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    made = make_pipeline(tmp_path, ManualClock(NOW_US))
    try:
        yield made
    finally:
        made.close()


def send(pipeline: Pipeline, method: str, url: str, **kw: Any) -> httpx.Response:
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def test_405_names_the_methods_of_the_path(pipeline: Pipeline) -> None:
    documented: dict[str, set[str]] = {}
    for method, path, _ in operations(load_spec()):
        documented.setdefault(path, set()).add(method)
    for path, methods in documented.items():
        for method in {m.upper() for m in HTTP_METHODS} - methods - {"HEAD"}:
            response = send(pipeline, method, path, headers=auth(ADMIN_KEY))
            assert response.status_code == 405, (method, path)
            assert response.json() == {"error": "method_not_allowed"}
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            # HEAD goes with GET (RFC 9110, 9.3.2): a path that serves it may name it too.
            assert allowed - {"HEAD"} == methods, (method, path)
            assert "HEAD" not in allowed or "GET" in methods, (method, path)


def test_a_preflight_with_an_unknown_write_key_is_a_documented_401(pipeline: Pipeline) -> None:
    spec = load_spec()
    for path in INGEST_ROUTES:
        response = send(
            pipeline,
            "OPTIONS",
            f"{path}?writeKey=not-a-key-0123456789",
            headers={"Origin": "https://shop.example"},
        )
        assert (response.status_code, response.json()) == (401, {"error": "key_unknown"})
        assert "401" in spec["paths"][path]["options"]["responses"], path


def test_every_operation_that_reads_a_body_documents_content_encoding_and_415() -> None:
    spec = load_spec()
    ref = {"$ref": "#/components/parameters/ContentEncoding"}
    for method, path, operation in operations(spec):
        if "requestBody" in operation:
            assert ref in operation["parameters"], (method, path)
            assert "415" in operation["responses"], (method, path)


def test_the_range_limit_is_in_the_document() -> None:
    spec = load_spec()
    for path in ("/v1/reports/conversions", "/v1/reports/attribution"):
        operation = spec["paths"][path]["get"]
        assert operation["x-convtrack-max-days"] == 366
        (to,) = [p for p in operation["parameters"] if p["name"] == "to"]
        assert "366 days" in to["description"]
        examples = operation["responses"]["400"]["content"]["application/json"]["examples"]
        assert "366" in examples["range_too_long"]["value"]["message"]


def test_the_documented_range_limit_is_the_served_one(pipeline: Pipeline) -> None:
    inside = call(
        pipeline, "GET", "/v1/reports/conversions?from=2025-01-01&to=2026-01-01&group_by=day"
    )
    assert inside.status_code == 200, inside.text  # 366 days
    past = call(
        pipeline, "GET", "/v1/reports/conversions?from=2025-01-01&to=2026-01-02&group_by=day"
    )
    assert (past.status_code, past.json()["parameter"]) == (400, "to")


def test_the_documented_currencies_are_the_accepted_ones() -> None:
    currency = load_spec()["components"]["schemas"]["Event"]["properties"]["currency"]
    assert set(currency["enum"]) == set(iso4217_codes())
    assert "currency_unknown" in currency["description"]


ENCODING_PIECES = [" ", "\t", ",", "gzip", "GZip", "x-gzip", "deflate", "identity", "br", "zstd"]
ENCODING_ALPHABET = st.sampled_from(ENCODING_PIECES)


@given(st.lists(ENCODING_ALPHABET, max_size=6).map("".join))
def test_the_documented_content_encoding_pattern_is_what_is_accepted(header: str) -> None:
    schema = load_spec()["components"]["parameters"]["ContentEncoding"]["schema"]
    assert (re.fullmatch(schema["pattern"], header) is not None) == (
        content_coding(header) is not None
    ), header


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        ("", "identity"),  # RFC 9110: an empty list names no coding
        (" , ", "identity"),
        ("identity", "identity"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        (" gzip ,", "gzip"),
        ("Deflate", "deflate"),
        ("gzip, gzip", None),
        ("gzip, identity", None),
        ("br", None),
        ("gzip;q=1", None),
    ],
)
def test_content_encoding_is_read_as_an_rfc_9110_list(header: str, coding: str | None) -> None:
    assert content_coding(header) == coding


def post_encoded(pipeline: Pipeline, body: bytes, encoding: str) -> httpx.Response:
    headers = {**auth(WRITE_KEY), "Content-Type": "application/json", "Content-Encoding": encoding}
    return send(pipeline, "POST", "/v1/track", content=body, headers=headers)


def test_content_encoding_over_http(pipeline: Pipeline) -> None:
    plain = json.dumps({**EVENT, "event_id": "enc-1"}).encode()
    assert post_encoded(pipeline, plain, "").status_code == 202
    assert post_encoded(pipeline, gzip.compress(plain), "X-GZIP").status_code == 202
    assert post_encoded(pipeline, zlib.compress(plain), "deflate, ").status_code == 202
    for encoding, body in [("gzip", plain), ("gzip, gzip", gzip.compress(gzip.compress(plain))),
                           ("br", plain)]:  # fmt: skip
        refused = post_encoded(pipeline, body, encoding)
        assert refused.status_code == 415, encoding
        assert refused.json()["error"] == "unsupported_content_encoding"
    for path, payload in [("/v1/conversion-tokens", {"order_id": "o1"}),
                          ("/v1/dead-letters/replay", {"destination": "crm"})]:  # fmt: skip
        headers = {**auth(ADMIN_KEY), "Content-Type": "application/json"}
        raw = json.dumps(payload).encode()
        declared = send(pipeline, "POST", path, content=raw,
                        headers={**headers, "Content-Encoding": "gzip"})  # fmt: skip
        assert declared.status_code == 415, path


def test_object_style_and_repeated_parameters_are_refused(pipeline: Pipeline) -> None:
    for url, parameter in [
        ("/v1/rejects?limit[a]=1", "limit"),
        ("/v1/rejects?cursor[a]=1", "cursor"),
        ("/v1/rejects?limit=1&limit=2", "limit"),
        ("/v1/dead-letters?limit[a]=1", "limit"),
        ("/v1/dead-letters?destination=", "destination"),
        ("/v1/dead-letters?destination=NOT%20A%20NAME", "destination"),
        ("/v1/stats/live?minutes[x]=5", "minutes"),
        ("/v1/stats/conversions?date=2026-01-01&date=2026-01-02", "date"),
    ]:
        response = call(pipeline, "GET", url, key=ADMIN_KEY)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["parameter"] == parameter, url
    # A parameter the route does not read is no reason to refuse (a cache buster, say).
    assert call(pipeline, "GET", "/v1/rejects?_=123", key=ADMIN_KEY).status_code == 200
