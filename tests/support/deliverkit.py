"""A tiny platform for testing the shared delivery machinery: a stand-in and its Destination.

The platform takes ``POST /events`` with ``{"events":[{"id","name","time_us"}]}``
and a bearer token. It answers 200 with ``{"retry":[ids],"rejected":{id: reason}}``
for per-row faults queued in ``row_faults``; whole-request faults come from the
StandIn fault plan. ``TinyDestination`` is the port implemented for it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convtrack.clock import ManualClock
from convtrack.config import DeadLettersSettings, load_settings
from convtrack.deliver.alerts import Alerts, Outbox
from convtrack.deliver.answers import excerpt, json_object, retry_after_secs
from convtrack.deliver.base import (
    Delivered,
    Destination,
    Forwarded,
    OutboundRequest,
    Outcome,
    Reject,
    Retry,
    RetryPartial,
    SetupFault,
    Throttled,
)
from convtrack.deliver.destinations.slack.settings import SlackSettings
from convtrack.deliver.destinations.webhook.settings import WebhookSettings
from convtrack.deliver.outbound import EndpointGuard
from convtrack.deliver.runner import DeliveryRunner
from convtrack.runtime.embedded import Pipeline
from convtrack.store.quarantine.base import QuarantineStore
from convtrack.testing import conversion
from convtrack.testing.standins.base import Answer, Request, StandIn
from tests.conftest import WRITE_KEY
from tests.support.inprocess import ENV, call, process_all

TOKEN = "tiny-token"
START_US = 1_796_000_000_000_000


class TinyPlatform(StandIn):
    """Checks auth and shape; records accepted ids; answers per-row faults."""

    def __init__(self) -> None:
        super().__init__()
        self.row_faults: dict[str, list[str]] = {}  # event id -> "retry" | "reject:<why>"
        self.bodies: list[list[dict[str, Any]]] = []

    def check(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return Answer(401, body=b'{"error":"bad token"}')
        events = json.loads(request.body)["events"]
        self.bodies.append(events)
        retry: list[str] = []
        rejected: dict[str, str] = {}
        for event in events:
            fault = self.row_faults.get(event["id"], [])
            step = fault.pop(0) if fault else None
            if step == "retry":
                retry.append(event["id"])
            elif step is not None and step.startswith("reject:"):
                rejected[event["id"]] = step.removeprefix("reject:")
            else:
                self.accepted.append(event["id"])
        return Answer(200, body=json.dumps({"retry": retry, "rejected": rejected}).encode())

    def received(self) -> list[str]:
        """Every event id in every request that reached the platform's check."""
        return [e["id"] for body in self.bodies for e in body]


class TinyDestination(Destination):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        ad_platform: bool = True,
        dedupes: bool = True,
        max_batch_events: int = 100,
        min_interval_secs: float = 0.0,
        window_secs: float | None = None,
        token: str = TOKEN,
    ) -> None:
        self.name = name
        self.url = url
        self.ad_platform = ad_platform
        self.dedupes_on_event_id = dedupes
        self.max_batch_events = max_batch_events
        self.min_interval_secs = min_interval_secs
        self.window_secs = window_secs
        self.token = token
        self.built: list[list[str]] = []  # event ids per request built
        self.answer_sizes: list[int] = []

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        if self.window_secs is None:
            return None
        age = (now_us - event.payload.event_time_us) / 1e6
        return "too_old" if age > self.window_secs else None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        self.built.append([e.event_id for e in events])
        body = {"events": [{"id": e.event_id, "name": e.payload.event_name,
                            "time_us": e.payload.event_time_us} for e in events]}  # fmt: skip
        return OutboundRequest(
            method="POST",
            url=self.url,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
            body=json.dumps(body).encode(),
        )

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        self.answer_sizes.append(len(body))
        after = retry_after_secs(headers.get("retry-after"))
        if 200 <= status < 300:
            answer = json_object(body) or {}
            retry, rejected = answer.get("retry") or [], answer.get("rejected") or {}
            if retry or rejected:
                return RetryPartial(event_ids=retry, reason="some rows failed", rejected=rejected)
            return Delivered()
        reason = f"HTTP {status}: {excerpt(body)}"
        if status == 429:
            return Throttled(after_secs=after, reason=reason)
        if status >= 500:
            return Retry(after_secs=after, reason=reason)
        if status in (401, 403):
            return SetupFault(reason=reason)
        return Reject(reason=reason)


class AlertSink(TinyDestination):
    """A Slack-like destination that also posts alert messages."""

    def alert_request(self, text: str, now_us: int) -> OutboundRequest:
        return OutboundRequest(
            method="POST",
            url=self.url,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
            body=json.dumps(
                {"events": [{"id": "alert", "name": text, "time_us": now_us}]}
            ).encode(),
        )


def settings(name: str = "tiny", **kw: Any) -> WebhookSettings:
    """Common destination settings (any kind carries them; webhook is the simplest)."""
    values: dict[str, Any] = {"name": name, "endpoint": "http://127.0.0.1:9/",
                              "secret_env": "UNUSED", "batch_max_wait_secs": 0}  # fmt: skip
    values.update(kw)
    return WebhookSettings(**values)


def slack_settings(name: str = "ops", **kw: Any) -> SlackSettings:
    values: dict[str, Any] = {"name": name, "webhook_url_env": "UNUSED", "batch_max_wait_secs": 0}
    values.update(kw)
    return SlackSettings(**values)


def open_pipeline(data_dir: Path, clock: ManualClock, **sections: Any) -> Pipeline:
    overrides: dict[str, Any] = {"server": {"data_dir": str(data_dir)}, **sections}
    return Pipeline(load_settings(environ=ENV, overrides=overrides), clock=clock, environ=ENV)


def send(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body = conversion(event_id, **{"timestamp": clock.now_us() // 1000, **kw})
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def ingest(pipeline: Pipeline, clock: ManualClock, *event_ids: str, **kw: Any) -> None:
    for event_id in event_ids:
        send(pipeline, clock, event_id, **kw)
    process_all(pipeline)


def runner(
    pipeline: Pipeline,
    clock: ManualClock,
    destination: Destination,
    table: WebhookSettings | SlackSettings,
    *,
    alerts: Alerts | None = None,
    outbox: Outbox | None = None,
    limits: DeadLettersSettings | None = None,
    default_granted: bool = True,
    guard: EndpointGuard | None = None,
    seed: int = 7,
    sleep: Any = None,
    quarantine: QuarantineStore | None = None,
) -> DeliveryRunner:
    return DeliveryRunner(
        destination=destination,
        settings=table,
        consumer=pipeline.processed.consumer(f"deliver-{table.name}"),
        deadletters=pipeline.deadletters,
        clock=clock,
        metrics=pipeline.metrics,
        sleep=sleep or clock.advance,
        rng=random.Random(seed),
        default_granted=default_granted,
        deadletter_limits=limits,
        alerts=alerts,
        outbox=outbox,
        guard=guard,
        quarantine=quarantine,
    )


def drain(delivery: DeliveryRunner) -> None:
    """Run until there is nothing to do now (blocked, or caught up)."""
    while delivery.run_once():
        pass
    delivery.flush()


def metric(pipeline: Pipeline, name: str, **labels: str) -> float:
    value = pipeline.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def destination_pipeline(
    data_dir: Path,
    clock: ManualClock,
    table: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    sleep: Callable[[float], None] | None = None,
    **sections: Any,
) -> Pipeline:
    """An embedded pipeline delivering to one ``[[destinations]]`` table, its credentials
    in ``env``, retries sleeping on the manual clock."""
    environ = {**ENV, **(env or {})}
    overrides: dict[str, Any] = {"server": {"data_dir": str(data_dir)}, "destinations": [table],
                                 **sections}  # fmt: skip
    settings = load_settings(environ=environ, overrides=overrides)
    return Pipeline(settings, clock=clock, environ=environ, delivery_sleep=sleep or clock.advance)


def deliver_all(pipeline: Pipeline, clock: ManualClock | None = None) -> None:
    """Process, then deliver until caught up. With ``clock``: until nothing is held,
    moving the clock past an open circuit's cooldown or a setup pause, as time would."""
    process_all(pipeline)
    for delivery in pipeline.deliveries:
        if clock is None:
            drain(delivery)
            continue
        for _ in range(20):
            while delivery.run_once():
                pass
            if delivery.flush():
                break
            clock.advance(301)
        else:
            raise AssertionError("delivery is still held")
