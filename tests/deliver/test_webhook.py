"""Webhook delivery against a real local receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from convtrack.cli.main import cli
from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.deliver.base import Delivered, Reject, Retry, SetupFault, Throttled
from convtrack.deliver.destinations.webhook.config import decode_secret
from convtrack.deliver.destinations.webhook.request import build_request, sign
from convtrack.deliver.destinations.webhook.response import read_response
from convtrack.deliver.runner import DeliveryRunner, wanted
from convtrack.errors import ConfigError
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent
from convtrack.runtime.embedded import Pipeline
from convtrack.store.deadletters.base import Failure, store_path
from convtrack.store.deadletters.sqlite import SqliteDeadLetterStore as DeadLetterStore
from convtrack.testing.events import forwarded
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY
from tests.support.inprocess import ENV, call, process_all

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_ENV = "HOOK_SECRET"


class Receiver:
    """A webhook receiver on a free port: verifies each request, answers as planned."""

    def __init__(self, secret: str) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.requests: list[dict[str, Any]] = []
        self.plan: list[tuple[int, dict[str, str], bytes]] = []  # answers, then 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": {k.lower(): v for k, v in self.headers.items()},
                         "body": body, "valid": receiver.verify(self.headers, body)}
                    )  # fmt: skip
                    status, headers, answer = (
                        receiver.plan.pop(0) if receiver.plan else (200, {}, b"ok")
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def verify(self, headers: Any, body: bytes) -> bool:
        """What a receiver does: HMAC over id.timestamp.raw body, constant-time compare."""
        msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        for candidate in headers["webhook-signature"].split(" "):
            version, _, value = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(value, expected):
                return True
        return False

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in json.loads(r["body"])["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(SECRET)
    yield server
    server.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


def destination(receiver: Receiver, **kw: Any) -> dict[str, Any]:
    table = {"kind": "webhook", "name": "hook", "endpoint": receiver.url,
             "secret_env": SECRET_ENV, "batch_max_wait_secs": 0}  # fmt: skip
    table.update(kw)
    return table


def open_pipeline(
    data_dir: Path,
    clock: ManualClock,
    *tables: dict[str, Any],
    sleep: Callable[[float], None] | None = None,
) -> Pipeline:
    env = {**ENV, SECRET_ENV: SECRET}
    overrides: dict[str, Any] = {
        "server": {"data_dir": str(data_dir)},
        "destinations": list(tables),
    }
    settings = load_settings(environ=env, overrides=overrides)
    return Pipeline(settings, clock=clock, environ=env, delivery_sleep=sleep or clock.advance)


def send(pipeline: Pipeline, clock: ManualClock, event_id: str, **kw: Any) -> None:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", "value": 1250,
            "currency": "EUR", "campaign_id": "spring",
            "timestamp": clock.now_us() // 1000}  # fmt: skip
    body.update(kw)
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def deliver_all(pipeline: Pipeline) -> None:
    process_all(pipeline)
    for runner in pipeline.deliveries:
        while runner.run_once():
            pass


def dead_letters(pipeline: Pipeline, query: str = "?destination=hook") -> dict[str, Any]:
    response = call(pipeline, "GET", f"/v1/dead-letters{query}", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# -- pure parts ------------------------------------------------------------------


def test_the_signature_matches_the_worked_vector() -> None:
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = (b'{"type":"conversion.created","timestamp":"2026-10-01T12:00:00Z",'
            b'"data":{"event_id":"ord_1001"}}')  # fmt: skip
    assert (
        sign(key, "msg_2Yx9", 1759320000, body) == "v1,kz++tld5pipIx/9zb57i9s/qHVC0AibnmQEjgC/B7iQ="
    )


def test_the_id_is_stable_across_attempts_and_the_timestamp_is_not() -> None:
    events = [forwarded("e1", 0, 4), forwarded("e2", 0, 9)]
    key = decode_secret(SECRET)
    first = build_request(destination="hook", endpoint="http://x", secret=key, events=events,
                          now_us=1_000_000_000)  # fmt: skip
    again = build_request(destination="hook", endpoint="http://x", secret=key, events=events,
                          now_us=1_060_000_000)  # fmt: skip
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert (first.headers["webhook-timestamp"], again.headers["webhook-timestamp"]) == (
        "1000",
        "1060",
    )
    assert json.loads(first.body) == {"events": [msgspec.to_builtins(e.payload) for e in events]}


def test_the_body_is_the_payloads_with_sorted_keys_as_when_they_were_dicts() -> None:
    """The typed payload changed no byte: keys sorted at every level, as the dicts were."""
    events = [forwarded("e1", 0, 4, properties={"b": 1, "a": {"z": 2, "y": 3}}, value=4999,
                        currency="EUR", amount="49.99", user={"email": "a" * 64}),
              forwarded("e2", 0, 9, click_ids={"gclid": "g"})]  # fmt: skip
    request = build_request(destination="hook", endpoint="http://x", secret=b"k", events=events,
                            now_us=1_000_000_000)  # fmt: skip
    as_dicts = [msgspec.to_builtins(e.payload) for e in events]
    assert request.body == msgspec.json.Encoder(order="deterministic").encode({"events": as_dicts})


def test_answers_become_outcomes() -> None:
    assert read_response(204, {}, b"") == Delivered()
    throttled = read_response(429, {"retry-after": "7"}, b"")
    assert isinstance(throttled, Throttled) and throttled.after_secs == 7.0
    assert read_response(429, {}, b"").after_secs is None  # type: ignore[union-attr]
    busy = read_response(503, {}, b"busy")
    assert isinstance(busy, Retry)
    assert read_response(401, {}, b"no") == SetupFault(reason="HTTP 401: no")
    gone = read_response(410, {}, b"gone")
    assert gone == Reject(reason="HTTP 410: gone")
    long = read_response(400, {}, b"x" * 5000)
    assert isinstance(long, Reject) and long.reason.startswith("HTTP 400: xxx")
    assert len(long.reason) < 600
    assert isinstance(read_response(302, {}, b""), Reject)  # redirects are not followed


def test_secrets_and_kinds_are_checked(tmp_path: Path, clock: ManualClock) -> None:
    table = {"kind": "webhook", "name": "hook", "endpoint": "http://127.0.0.1:9/",
             "secret_env": "MISSING_SECRET"}  # fmt: skip
    settings = load_settings(environ={}, overrides={"server": {"data_dir": str(tmp_path)},
                                                    "destinations": [table]})  # fmt: skip
    with pytest.raises(ConfigError, match="MISSING_SECRET"):
        Pipeline(settings, clock=clock, environ=ENV)
    with pytest.raises(ConfigError, match="MISSING_SECRET"):
        Pipeline(settings, clock=clock, environ={**ENV, "MISSING_SECRET": "whsec_!!"})
    with pytest.raises(ConfigError, match="kind"):
        load_settings(environ={}, overrides={"destinations": [dict(table, kind="fax")]})
    with pytest.raises(ConfigError, match="secret_env"):  # not a setting of Slack's
        load_settings(environ={}, overrides={"destinations": [dict(table, kind="slack")]})
    with pytest.raises(ConfigError, match="more than once"):
        load_settings(environ={}, overrides={"destinations": [table, table]})


def test_filters_keep_conversions_that_pass() -> None:
    def processed(name: str, value: int | None, conversion: bool = True, bot: bool = False) -> Any:
        event = Envelope(event_id="e", source="default", event_name=name, event_time_us=1,
                         received_at_us=1, value=value)  # fmt: skip
        return ProcessedEvent(event=event, source_partition=0, source_offset=0,
                              campaign_id="c", event_date="2026-01-01", is_conversion=conversion,
                              is_bot=bot, logged_at_us=1, processed_at_us=1,
                              counted_at_us=1)  # fmt: skip

    settings = load_settings(environ={}, overrides={"destinations": [
        {"kind": "webhook", "name": "h", "endpoint": "http://x/", "secret_env": "S",
         "event_names": ["Purchase"], "min_value": 1000}]}).destinations[0]  # fmt: skip
    assert wanted(settings, processed("Purchase", 1000))
    assert not wanted(settings, processed("Purchase", 999))
    assert not wanted(settings, processed("Purchase", None))
    assert not wanted(settings, processed("Lead", 5000))
    assert not wanted(settings, processed("Purchase", 5000, conversion=False, bot=True))
    assert not wanted(settings, processed("page_view", 5000, conversion=False))


# -- the pipeline against the receiver ----------------------------------------------


def test_a_batch_is_delivered_signed(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    pipeline = open_pipeline(tmp_path, clock, destination(receiver))
    try:
        send(pipeline, clock, "order-1", user={"email": "Jane.Doe@example.com"},
             properties={"sku": "A1"})  # fmt: skip
        send(pipeline, clock, "order-2", value=500)
        send(pipeline, clock, "pv-1", event_name="page_view", value=None, currency=None)
        deliver_all(pipeline)
    finally:
        pipeline.close()
    assert len(receiver.requests) == 1 and receiver.requests[0]["valid"]
    headers = receiver.requests[0]["headers"]
    assert headers["webhook-id"].startswith("msg_")
    assert int(headers["webhook-timestamp"]) == clock.now_us() // 1_000_000
    events = receiver.events()
    assert [e["event_id"] for e in events] == ["order-1", "order-2"]
    first = events[0]
    assert first["event_name"] == "Purchase" and first["value"] == 1250
    assert first["currency"] == "EUR" and first["campaign_id"] == "spring"
    assert first["event_time"].endswith("Z") and first["properties"] == {"sku": "A1"}
    assert first["user"]["email"] == hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert "Jane" not in receiver.requests[0]["body"].decode()
    assert set(first) >= {"campaign_source", "campaign_medium", "device_type", "country_code",
                          "user_id", "session_id", "click_ids", "consent"}  # fmt: skip


def test_filters_apply_to_what_is_sent(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    pipeline = open_pipeline(tmp_path, clock, destination(receiver, event_names=["Purchase"],
                                                          min_value=1000))  # fmt: skip
    try:
        send(pipeline, clock, "big")
        send(pipeline, clock, "small", value=10)
        send(pipeline, clock, "lead", event_name="Lead")
        deliver_all(pipeline)
        lag = pipeline.processed.lag(pipeline.deliveries[0]._consumer.committed())
    finally:
        pipeline.close()
    assert [e["event_id"] for e in receiver.events()] == ["big"]
    assert lag.events == 0  # the filtered ones are committed too


def test_retry_then_success(tmp_path: Path, clock: ManualClock, receiver: Receiver) -> None:
    receiver.plan = [(429, {"Retry-After": "7"}, b"slow down"), (500, {}, b"oops")]
    pipeline = open_pipeline(tmp_path, clock, destination(receiver))
    started = clock.monotonic()
    try:
        send(pipeline, clock, "order-1")
        deliver_all(pipeline)
        assert dead_letters(pipeline)["total"] == 0
    finally:
        pipeline.close()
    assert len(receiver.requests) == 3 and all(r["valid"] for r in receiver.requests)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    assert clock.monotonic() - started >= 7  # Retry-After was honoured


def test_a_permanent_rejection_is_dead_lettered_then_replayed(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.plan = [(400, {}, b'{"error":"bad field"}')]
    pipeline = open_pipeline(tmp_path, clock, destination(receiver))
    try:
        send(pipeline, clock, "order-1")
        deliver_all(pipeline)
        assert len(receiver.requests) == 1
        listed = dead_letters(pipeline)
        assert listed["total"] == 1
        (item,) = listed["items"]
        assert item["event_id"] == "order-1" and item["last_status"] == 400
        assert "bad field" in item["last_answer"] and item["attempts"] == 1
        assert item["event"]["value"] == 1250
        live = call(pipeline, "GET", "/v1/stats/live", key=SERVER_KEY).json()
        assert live["dead_letters"] == 1
        # The receiver recovered (it answers 200 now): replay.
        response = call(pipeline, "POST", "/v1/dead-letters/replay", {"destination": "hook"},
                        key=ADMIN_KEY)  # fmt: skip
        assert response.status_code == 200 and response.json() == {"replayed": 1}
        deliver_all(pipeline)
        assert dead_letters(pipeline) == {"total": 0, "items": []}
    finally:
        pipeline.close()
    assert [e["event_id"] for e in receiver.events()] == ["order-1", "order-1"]
    assert receiver.requests[1]["valid"]


def test_exhausted_attempts_are_dead_lettered(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.plan = [(500, {}, b"down")] * 10
    pipeline = open_pipeline(tmp_path, clock, destination(receiver, max_attempts=3))
    try:
        send(pipeline, clock, "order-1")
        deliver_all(pipeline)
        (item,) = dead_letters(pipeline)["items"]
    finally:
        pipeline.close()
    assert len(receiver.requests) == 3
    assert item["attempts"] == 3 and item["last_status"] == 500 and "down" in item["last_answer"]


def test_elapsed_time_bounds_the_retries(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.plan = [(429, {"Retry-After": "100"}, b"")] * 10
    pipeline = open_pipeline(tmp_path, clock, destination(receiver, max_elapsed_secs=250))
    try:
        send(pipeline, clock, "order-1")
        deliver_all(pipeline)
        assert dead_letters(pipeline)["total"] == 1
    finally:
        pipeline.close()
    assert len(receiver.requests) == 3


def test_offsets_are_committed_only_after_delivery(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    table = destination(receiver, batch_max_wait_secs=60)
    pipeline = open_pipeline(tmp_path, clock, table)
    try:
        send(pipeline, clock, "order-1")
        send(pipeline, clock, "order-2")
        deliver_all(pipeline)  # buffered: the batch waits up to 60 s
        assert receiver.requests == []
    finally:
        pipeline.close()  # stops mid-way: nothing committed
    pipeline = open_pipeline(tmp_path, clock, table)
    try:
        deliver_all(pipeline)
        assert receiver.requests == []
        clock.advance(61)
        send(pipeline, clock, "order-3")
        deliver_all(pipeline)
    finally:
        pipeline.close()
    assert [e["event_id"] for e in receiver.events()] == ["order-1", "order-2", "order-3"]
    pipeline = open_pipeline(tmp_path, clock, table)  # delivered and committed: not sent again
    try:
        clock.advance(61)
        deliver_all(pipeline)
    finally:
        pipeline.close()
    assert len(receiver.requests) == 1


def test_the_api_is_admin_only_and_knows_the_destinations(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    pipeline = open_pipeline(tmp_path, clock, destination(receiver))
    try:
        for key in (WRITE_KEY, SERVER_KEY):
            assert call(pipeline, "GET", "/v1/dead-letters", key=key).status_code == 403
            replay = call(pipeline, "POST", "/v1/dead-letters/replay", {"destination": "hook"},
                          key=key)  # fmt: skip
            assert replay.status_code == 403
        unknown = call(pipeline, "GET", "/v1/dead-letters?destination=nope", key=ADMIN_KEY)
        assert unknown.status_code == 404 and unknown.json() == {"error": "not_found"}
        unknown = call(pipeline, "POST", "/v1/dead-letters/replay", {"destination": "nope"},
                       key=ADMIN_KEY)  # fmt: skip
        assert unknown.status_code == 404 and unknown.json() == {"error": "not_found"}
        assert (
            call(pipeline, "POST", "/v1/dead-letters/replay", {}, key=ADMIN_KEY).status_code == 400
        )
        assert dead_letters(pipeline, "") == {"total": 0, "items": []}
    finally:
        pipeline.close()


def test_the_dlq_commands(tmp_path: Path) -> None:
    store = DeadLetterStore(store_path(tmp_path))
    failure = Failure(last_status=400, last_answer="HTTP 400: nope", attempts=1,
                      first_attempt_at_us=1_796_000_000_000_000,
                      last_attempt_at_us=1_796_000_000_000_000)  # fmt: skip
    store.add("hook", [forwarded("e1", 0, 1)], failure)
    store.add("other", [forwarded("e2", 0, 2)], failure)
    store.close()
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path)]
    listed = runner.invoke(cli, ["dlq", "list", *args, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert '"event_id":"e1"' in listed.output and '"event_id":"e2"' in listed.output
    replayed = runner.invoke(cli, ["dlq", "replay", *args, "--destination", "hook"])
    assert replayed.exit_code == 0 and "replayed 1" in replayed.output
    store = DeadLetterStore(store_path(tmp_path))
    assert [d.event.event_id for d in store.replay_batch("hook", 10, now_us=0)] == ["e1"]
    assert store.replay_batch("other", 10, now_us=0) == []
    store.close()
    purged = runner.invoke(cli, ["dlq", "purge", *args, "--destination", "other"])
    assert purged.exit_code == 0 and "purged 1" in purged.output
    listed = runner.invoke(cli, ["dlq", "list", *args, "--format", "json"])
    assert '"e2"' not in listed.output and '"e1"' in listed.output


def test_a_stopped_runner_does_not_commit_a_batch_waiting_to_retry(
    tmp_path: Path, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.plan = [(500, {}, b"down")] * 100
    table = destination(receiver, max_attempts=100, max_elapsed_secs=100_000)
    waiting, release = threading.Event(), threading.Event()

    def first_backoff_holds(secs: float) -> None:
        # The runner thread waits here after its first failed attempt until the test has
        # asked it to stop: it cannot race through its attempts into a dead letter.
        clock.advance(secs)
        waiting.set()
        release.wait(10)

    pipeline = open_pipeline(tmp_path, clock, table, sleep=first_backoff_holds)
    runner: DeliveryRunner = pipeline.deliveries[0]
    try:
        send(pipeline, clock, "order-1")
        process_all(pipeline)
        pipeline.start()
        assert waiting.wait(10)
        runner.request_stop()
    finally:
        release.set()
        pipeline.close()
    assert runner.delivered == 0 and len(receiver.requests) == 1
    store = DeadLetterStore(store_path(tmp_path))
    assert store.total() == 0
    store.close()
    receiver.plan = []
    pipeline = open_pipeline(tmp_path, clock, table)
    try:
        deliver_all(pipeline)
    finally:
        pipeline.close()
    assert len(receiver.requests) == 2  # the failed attempt, then the one after the restart
    assert [e["event_id"] for e in json.loads(receiver.requests[-1]["body"])["events"]] == [
        "order-1"
    ]
