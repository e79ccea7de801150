"""convtrack.testing, as a user extending convtrack meets it: the event factory makes
a body the server accepts and counts, ``wait_for`` names what it waited for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convtrack.runtime.embedded import Pipeline
from convtrack.testing import ManualClock, conversion, wait_for
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, process_all


def test_a_conversion_is_accepted_and_counted_and_fields_replace_members(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    body = conversion("order-1", value=4999, currency="USD", timestamp=clock.now_us() // 1000)
    assert body["event_id"] == "order-1" and body["value"] == 4999
    assert conversion()["event_id"] != conversion()["event_id"]
    answer = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert answer.status_code == 202, answer.text
    again = call(pipeline, "POST", "/v1/track", conversion(timestamp=clock.now_us() // 1000),
                 key=WRITE_KEY)  # fmt: skip
    assert again.status_code == 202, again.text
    process_all(pipeline)
    day = datetime.fromtimestamp(clock.now_us() / 1e6, UTC).strftime("%Y-%m-%d")
    assert sum(c.conversions for c in pipeline.hot.campaign_totals(day)) == 2


def test_wait_for_returns_once_true_and_fails_naming_what() -> None:
    answers = iter([False, False, True])
    wait_for("the third answer", lambda: next(answers), timeout_secs=5, poll_secs=0)
    with pytest.raises(AssertionError, match="waiting for never"):
        wait_for("never", lambda: False, timeout_secs=0.05, poll_secs=0.01)
