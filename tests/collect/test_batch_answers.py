"""The status of a batch answer: a client library must never read "success" when nothing
was accepted. Through the ASGI app; the events and rejects are real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, make_pipeline


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path, clock, limits={"user_events_per_sec": 2})
    yield built
    built.close()


def purchase(event_id: str, user_id: str = "u1") -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "Purchase", "user_id": user_id}


def send(pipeline: Pipeline, events: list[Any]) -> Any:
    return call(pipeline, "POST", "/v1/batch", {"batch": events}, key=WRITE_KEY)


def codes(answer: dict[str, Any]) -> list[tuple[int, str]]:
    return [(r["index"], r["errors"][0]["code"]) for r in answer["rejected"]]


def kept_ids(pipeline: Pipeline) -> list[str | None]:
    items = pipeline.rejects.page(code=None, limit=100, before_id=None).items
    return sorted(r.event_id or "" for r in items)


def test_a_batch_with_no_event_accepted_answers_400_with_each_events_errors(
    pipeline: Pipeline,
) -> None:
    cents_as_text = {"event_name": "Purchase", "user_id": "u1", "value": "49.99", "currency": "USD"}
    response = send(pipeline, [{"event_name": "Purchase", "event_id": "no-user"}, cents_as_text, 7])
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["accepted"] == 0
    assert [r["index"] for r in answer["rejected"]] == [0, 1, 2]
    assert codes(answer)[0] == (0, "user_id_missing")
    assert codes(answer)[1] == (1, "value_not_number")
    assert codes(answer)[2] == (2, "event_not_object")
    assert answer["rejected"][0]["event_id"] == "no-user"
    assert "error" not in answer  # the batch shape, not a whole-body failure
    # What Segment's and RudderStack's libraries read from a refusal and log.
    assert answer["code"] == "validation_failed"
    assert answer["message"] == "none of the 3 events was accepted (first: user_id_missing)"
    assert kept_ids(pipeline) == ["", "", "no-user"]


def test_a_batch_with_one_event_accepted_answers_200(pipeline: Pipeline) -> None:
    response = send(pipeline, [{"event_name": "x"}, purchase("ok")])
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert codes(response.json()) == [(0, "user_id_missing")]


def test_an_empty_batch_answers_200(pipeline: Pipeline) -> None:
    response = send(pipeline, [])
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 0, "rejected": []}


def test_a_batch_refused_only_by_the_rate_limit_answers_429_to_be_sent_again(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    # The bucket holds 2 tokens: the first batch takes them, the second gets none.
    first = send(pipeline, [purchase("a"), purchase("b"), purchase("c")])
    assert first.status_code == 200 and first.json()["accepted"] == 2
    limited = send(pipeline, [purchase("c"), {"event_name": "x"}, purchase("d")])
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["retry-after"]) >= 1
    answer = limited.json()
    assert answer["accepted"] == 0
    assert codes(answer) == [(0, "rate_limited"), (1, "user_id_missing"), (2, "rate_limited")]
    assert answer["code"] == "rate_limited"
    clock.advance(1.0)  # a token back per half second: the retry goes through
    again = send(pipeline, [purchase("c"), purchase("d")])
    assert again.status_code == 200 and again.json()["accepted"] == 2
