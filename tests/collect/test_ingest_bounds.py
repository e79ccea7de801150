"""Bounds the collector enforces on one event's members, end to end through the ASGI app:
the answer's code, and the reject kept for review (single events and batch items)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from convtrack.store.rejects.base import StoredReject
from tests.support.inprocess import call, make_pipeline


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path, ManualClock(), limits={"user_events_per_sec": 0})
    yield built
    built.close()


def purchase(event_id: str, **members: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", **members}


def kept(pipeline: Pipeline) -> list[StoredReject]:
    return pipeline.rejects.page(code=None, limit=1000, before_id=None).items


def field_codes(answer_errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["field"], e["code"]) for e in answer_errors]


@pytest.mark.parametrize("value", [9223372036854775807, 10**12 + 1])
def test_a_value_too_large_for_a_total_is_refused_and_kept(pipeline: Pipeline, value: int) -> None:
    single = call(pipeline, "POST", "/v1/track", purchase("big-1", value=value, currency="USD"))
    assert single.status_code == 400, single.text
    assert field_codes(single.json()["errors"]) == [("value", "value_too_large")]
    batch = call(
        pipeline,
        "POST",
        "/v1/batch",
        {"batch": [purchase("ok-1", value=10**12, currency="USD"),
                   purchase("big-2", value=value, currency="USD")]},
    )  # fmt: skip
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 1
    (rejected,) = batch.json()["rejected"]
    assert rejected["index"] == 1 and rejected["event_id"] == "big-2"
    assert field_codes(rejected["errors"]) == [("value", "value_too_large")]
    stored = {r.event_id: r for r in kept(pipeline)}
    assert set(stored) == {"big-1", "big-2"}
    assert all(r.codes == ["value_too_large"] for r in stored.values())
    assert stored["big-2"].index == 1 and str(value) in stored["big-2"].body


def test_the_largest_value_is_accepted(pipeline: Pipeline) -> None:
    answer = call(pipeline, "POST", "/v1/track", purchase("max-1", value=10**12, currency="USD"))
    assert answer.status_code == 202, answer.text
    assert kept(pipeline) == []


WRONG_TOKENS = [5, 0, -1, 1.5, True, False, {"token": "ct1.x.y"}, [], ["ct1.a.b"], ""]


@pytest.mark.parametrize("token", WRONG_TOKENS, ids=repr)
def test_a_conversion_token_of_the_wrong_type_is_refused_and_kept(
    pipeline: Pipeline, token: object
) -> None:
    single = call(pipeline, "POST", "/v1/track", purchase("tok-1", conversion_token=token))
    assert single.status_code == 400, single.text
    assert field_codes(single.json()["errors"]) == [
        ("conversion_token", "conversion_token_invalid")
    ]
    batch = call(
        pipeline, "POST", "/v1/batch", {"batch": [purchase("tok-2", conversion_token=token)]}
    )
    assert batch.status_code == 400, batch.text  # no event accepted
    assert batch.json()["accepted"] == 0
    (rejected,) = batch.json()["rejected"]
    assert field_codes(rejected["errors"]) == [("conversion_token", "conversion_token_invalid")]
    assert sorted(r.event_id or "" for r in kept(pipeline)) == ["tok-1", "tok-2"]


def test_a_null_conversion_token_is_absent(pipeline: Pipeline) -> None:
    answer = call(pipeline, "POST", "/v1/track", purchase("tok-null", conversion_token=None))
    assert answer.status_code == 202, answer.text


def test_identifiers_are_answered_in_nfc_and_refused_with_bidi_controls(
    pipeline: Pipeline,
) -> None:
    decomposed = "caf" + "e\u0301"  # NFD, as macOS writes it
    answer = call(pipeline, "POST", "/v1/track", purchase(decomposed, event_name="Purchase"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["event_id"] == "caf\u00e9"
    spoofed = call(pipeline, "POST", "/v1/track", purchase("rlo-1", event_name="Pur\u202echase"))
    assert spoofed.status_code == 400
    assert field_codes(spoofed.json()["errors"]) == [("event_name", "event_name_invalid")]
    batch = call(
        pipeline,
        "POST",
        "/v1/batch",
        {"batch": [purchase("nul-1", user_id="u\x001"), purchase("ok-2", campaign_id="fall")]},
    )
    assert batch.json()["accepted"] == 1
    assert field_codes(batch.json()["rejected"][0]["errors"]) == [("user_id", "user_id_invalid")]
    assert {r.event_id: r.codes for r in kept(pipeline)} == {
        "rlo-1": ["event_name_invalid"],
        "nul-1": ["user_id_invalid"],
    }
