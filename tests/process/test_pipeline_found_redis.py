"""A stream the pipeline property test found on Redis.

With no poison event: the processor counts a stretch, crashes before publishing it, and
stays behind for about ten days of Redis's clock (backlogs and waits, the processor
mostly down); on restart it replays the stretch. With the default margin
(``BACKLOG_MARGIN_SECS``, 7 days: Kafka's default retention, the documented bound on
how far the processor may fall behind), the replay's first verdicts have expired by
then, so a copy first dropped as a duplicate (``e0`` at offset 4) is judged again. With
a margin longer than the stream, Redis agrees exactly, as the SQLite store (which keeps
them by the data's watermark) always does: the TTLs follow the data's time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.process.test_pipeline_properties import STREAM_MARGIN_SECS, run_stream
from tests.support.redis_fixtures import let_redis_time_pass

OPS: list[dict[str, Any]] = json.loads(  # the stream as hypothesis drew it
    '[{"retry_of": null, "value": 4611686018427387904, "gap_s": 1, "token": null, "user": 1, "op": "event", "late_s": 0, "name": "page_view", "campaign": "A", "bot": false}, {"gap_s": 1, "value": 9223372036854775807, "op": "event", "token": null, "retry_of": 27, "late_s": 0, "campaign": null, "user": 1, "name": "Purchase", "bot": false}, {"late_s": 1200, "user": 0, "bot": true, "value": 4611686018427387904, "token": null, "name": "Purchase", "op": "event", "campaign": "A", "gap_s": 21600, "retry_of": 3}, {"op": "retry", "batch": 2}, {"op": "restart", "batch": 1}, {"crash": "cold.after_commit", "op": "flush"}, {"op": "wait", "hours": 20}, {"user": 2, "value": 4611686018427387904, "op": "event", "campaign": null, "gap_s": 1, "late_s": 0, "token": 2, "retry_of": null, "bot": false, "name": "Purchase"}, {"gap_s": 3600, "campaign": "B", "op": "event", "bot": false, "token": 0, "late_s": 0, "retry_of": 22, "value": 9223372036854775807, "user": 2, "name": "Purchase"}, {"late_s": 0, "name": "Purchase", "gap_s": 3600, "user": 1, "token": 0, "bot": false, "campaign": null, "op": "event", "retry_of": 26, "value": 2500}, {"user": 2, "op": "event", "retry_of": 27, "token": null, "value": 4611686018427387904, "late_s": 0, "gap_s": 3600, "campaign": null, "bot": false, "name": "Signup"}, {"batch": 3, "op": "crash"}, {"op": "flush", "crash": null}, {"stage_now": true, "op": "compact_start"}, {"op": "backlog", "days": 3}, {"op": "wait", "hours": 8}, {"user": 2, "token": null, "retry_of": 14, "name": "Purchase", "gap_s": 0, "late_s": 0, "op": "event", "value": null, "bot": true, "campaign": "B"}, {"batch": 1, "op": "crash"}, {"batch": 3, "op": "crash"}, {"op": "flush", "crash": "cold.after_commit"}, {"op": "wait", "hours": 1}, {"retry_of": 29, "late_s": 0, "op": "event", "bot": false, "token": 0, "name": "page_view", "campaign": "A", "value": 100, "gap_s": 3600, "user": 0}, {"late_s": 1200, "campaign": null, "op": "event", "value": 4611686018427387904, "bot": false, "user": 2, "gap_s": 600, "token": null, "retry_of": 32, "name": "Purchase"}, {"op": "event", "name": "Purchase", "user": 0, "retry_of": null, "campaign": "A", "late_s": 0, "gap_s": 30, "token": null, "bot": true, "value": null}, {"op": "crash", "batch": 2}, {"op": "flush", "crash": "cold.before_commit"}, {"days": 2, "op": "expire"}, {"op": "wait", "hours": 1}, {"late_s": 0, "value": null, "bot": false, "name": "Signup", "op": "event", "campaign": "A", "token": null, "retry_of": 29, "gap_s": 90000, "user": 1}, {"op": "event", "retry_of": null, "campaign": null, "late_s": 0, "user": 1, "token": 0, "name": "page_view", "value": 4611686018427387904, "bot": true, "gap_s": 30}, {"campaign": null, "retry_of": null, "token": null, "late_s": 0, "op": "event", "value": 9223372036854775807, "user": 0, "bot": false, "gap_s": 1, "name": "page_view"}, {"op": "restart", "batch": 1}, {"crash": null, "op": "flush"}, {"crash": null, "op": "flush"}, {"days": 3, "op": "backlog"}, {"op": "wait", "hours": 20}, {"retry_of": 21, "op": "event", "bot": false, "token": null, "value": 2500, "gap_s": 1, "name": "Purchase", "user": 1, "campaign": null, "late_s": 5}, {"token": 1, "bot": true, "campaign": null, "value": 4611686018427387904, "op": "event", "gap_s": 21600, "late_s": 0, "user": 0, "name": "page_view", "retry_of": null}, {"late_s": 0, "token": null, "gap_s": 0, "bot": false, "user": 0, "campaign": null, "value": 100, "retry_of": null, "op": "event", "name": "Purchase"}, {"user": 1, "campaign": null, "bot": false, "value": 100, "late_s": 1200, "retry_of": null, "token": null, "gap_s": 600, "op": "event", "name": "Purchase"}, {"batch": 4, "op": "crash"}, {"op": "retry", "batch": 6}, {"crash": "cold.before_commit", "op": "flush"}]'  # noqa: E501
)


def test_the_stream_agrees_on_sqlite() -> None:
    run_stream(OPS, {}, None)


def test_the_stream_agrees_on_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("convtrack.store.hot.redis_batch.BACKLOG_MARGIN_SECS", STREAM_MARGIN_SECS)
    prefix = "found-replay-ttl"
    run_stream(
        OPS,
        {"hot": {"kind": "redis", "redis_prefix": prefix, "redis_url": redis_url}},
        None,
        lambda secs: let_redis_time_pass(redis_url, prefix, secs, skip=("s:",)),
    )
