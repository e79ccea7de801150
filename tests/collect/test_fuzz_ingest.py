"""Hypothesis fuzzing of the ingest endpoints: any input gets a 4xx with a stable code or a
202/200, never a 500, and every accepted event is in the log."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convtrack.config import load_settings
from convtrack.model import codes
from convtrack.runtime.embedded import Pipeline
from tests.conftest import SERVER_KEY, WRITE_KEY, auth

KNOWN_CODES = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["USD", "usd", "Usd", "JPY", "XYZ", "", "Purchase", "2026-11-28T17:00:00Z"]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
event_fields = st.sampled_from(
    [
        "event_id",
        "event_name",
        "user_id",
        "session_id",
        "timestamp",
        "value",
        "currency",
        "campaign_id",
        "conversion_token",
        "properties",
        "context",
        "user",
        "click_ids",
        "consent",
        "unknown_field",
    ]
)
events = st.dictionaries(event_fields, field_values, max_size=10)
plausible_events = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["Purchase", "Lead"]),
        "user_id": st.text(min_size=1, max_size=20),
    },
    optional={
        "value": st.integers(min_value=-5, max_value=2**64),
        "currency": st.sampled_from(["USD", "EUR", "usd"]),
        "properties": st.dictionaries(st.text(max_size=5), json_values, max_size=4),
        "timestamp": st.integers(min_value=0, max_value=2**45) | st.text(max_size=30),
    },
)


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "CONVTRACK_WRITE_KEY": WRITE_KEY,
            "CONVTRACK_SERVER_KEY": SERVER_KEY,
            "CONVTRACK_ADMIN_KEY": "fuzz_admin_key_0123456789",
        }
        built = Pipeline(
            load_settings(environ=env, overrides={"server": {"data_dir": tmp}}), environ=env
        )
        yield built
        built.close()


def send(pipeline: Pipeline, path: str, content: bytes, content_type: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("203.0.113.5", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(
                path, content=content, headers={**auth(SERVER_KEY), "Content-Type": content_type}
            )

    return asyncio.run(go())


def check(response: httpx.Response) -> Any:
    assert response.status_code in {200, 202, 400, 413, 415, 429}, response.text
    body = response.json()
    if response.status_code in (400, 429) and "accepted" in body:
        # A batch none of whose events was accepted: the per-event answer, with a 4xx.
        assert body["accepted"] == 0 and body["rejected"]
        assert {e["code"] for r in body["rejected"] for e in r["errors"]} <= KNOWN_CODES
    elif response.status_code == 400:
        assert body["error"] == "validation_failed"
        assert {e["code"] for e in body["errors"]} <= KNOWN_CODES
    return body


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(body=st.one_of(events, plausible_events))
def test_track_any_event_object(pipeline: Pipeline, body: dict[str, Any]) -> None:
    check(send(pipeline, "/v1/track", msgspec.json.encode(body), "application/json"))


@FUZZ
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_track_any_bytes(pipeline: Pipeline, raw: bytes, content_type: str) -> None:
    check(send(pipeline, "/v1/track", raw, content_type))


@FUZZ
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"batch": st.lists(st.one_of(events, plausible_events, json_values), max_size=8)}
        ),
    )
)
def test_batch_any_body(pipeline: Pipeline, body: Any) -> None:
    response = send(pipeline, "/v1/batch", msgspec.json.encode(body), "text/plain")
    result = check(response)
    if "accepted" in result:
        assert result["accepted"] + len(result["rejected"]) == len(body["batch"])
        assert (response.status_code == 200) == (result["accepted"] > 0 or not body["batch"])


def test_accepted_events_are_all_in_the_log(pipeline: Pipeline, tmp_path: Path) -> None:
    accepted = []
    for i in range(20):
        body = {
            "event_name": "Purchase",
            "user_id": f"z{i}",
            "properties": {"big": 2**70, "s": "😀\u0000"},
        }
        response = send(pipeline, "/v1/track", msgspec.json.encode(body), "application/json")
        assert response.status_code == 202
        accepted.append(response.json()["event_id"])
    consumer = pipeline.log.consumer("fuzz-check")
    seen = []
    while batch := consumer.poll(10_000, 0.1):
        seen.extend(msgspec.json.decode(e.payload)["event_id"] for e in batch)
    consumer.close()
    assert set(accepted) <= set(seen)
