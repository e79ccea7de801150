"""Per-call cost of the steps on convtrack's ingest path, in-process (no HTTP).

    .venv/bin/python bench/micro.py

Uses the same Purchase event as ``bench/events.lua``. Explains where the time
per event goes in ``bench/ingest.py``; not a substitute for it. Internal APIs
are used on purpose: if one moved, update this script.

The last part adds up what one event of a 100-event batch costs the collector
(its steps, and the SQLite log's insert measured as the CPU of the whole
process, writer thread included) next to the budget the issue-2 batch target
implies on one core (200,000 events/s: 5 us per event, everything included)
and next to what the bench's stub spends per event (the batch decode).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from convtrack.clock import SystemClock
from convtrack.collect.auth import ApiKey, Keyring, read_credential
from convtrack.collect.http import Request, json_response
from convtrack.collect.ratelimit import TokenBuckets
from convtrack.log.base import LogRecord
from convtrack.log.sqlite import SqliteLog
from convtrack.model.event import encode_envelope
from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.validate import IngestFacts, Rules, _fits, validate_event, within_limits
from convtrack.observe.metrics import Metrics

WRITE_KEY = "bench_write_key_0123456789"
# Like bench/events.lua: the current time, so the event is neither too old nor in the future.
STAMP = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def event(n: int) -> dict[str, Any]:
    event_id = f"run-0-{n}"
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-0-{n % 100_000}",
        "timestamp": STAMP,
        "value": 1000 + n % 90000,
        "currency": "USD",
        "campaign_id": f"cmp-{n % 50}",
        "properties": {
            "order_id": f"o-{event_id}",
            "items": 1 + n % 5,
            "coupon": "SPRING24",
            "skus": ["SKU-1042", "SKU-2210"],
            "shipping": "standard",
        },
        "context": {
            "page_url": f"https://shop.example.com/checkout/complete?order=o-{event_id}",
            "referrer": "https://shop.example.com/cart",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "campaign": {"source": "google", "medium": "cpc", "name": "spring-sale"},
        },
    }


def per_call_us(fn: Callable[[], object]) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=5, number=number))
    return 1e6 * best / number


def main() -> None:
    body = event(1)
    raw = msgspec.json.encode(body)
    batch_raw = msgspec.json.encode({"batch": [event(i) for i in range(100)]})
    now_us = parse_timestamp_us(STAMP) or 0
    facts = IngestFacts(
        source="default", key_role="write", received_at_us=now_us + 1_000_000,
        client_ip="127.0.0.1", client_user_agent="convtrack-bench/wrk",
    )  # fmt: skip
    rules = Rules()
    envelope = validate_event(body, facts, rules)
    assert not isinstance(envelope, list), envelope
    key = ApiKey(secret=WRITE_KEY, role="write")
    keyring = Keyring([key])
    buckets = TokenBuckets(1_000_000, 0, SystemClock())
    metrics = Metrics()
    scope = {
        "type": "http", "method": "POST", "path": "/v1/track", "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {WRITE_KEY}".encode()),
            (b"user-agent", b"convtrack-bench/wrk"), (b"content-length", str(len(raw)).encode()),
        ],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    request = Request(scope, receive)
    loop = asyncio.new_event_loop()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("msgspec.json.decode(event, ~600 B)", lambda: msgspec.json.decode(raw)),
        ("msgspec.json.decode(100-event batch) / 100", lambda: msgspec.json.decode(batch_raw)),
        ("Request(scope, receive)", lambda: Request(scope, receive)),
        ("read_credential(request)", lambda: read_credential(request)),
        ("Keyring.lookup(secret)", lambda: keyring.lookup(WRITE_KEY)),
        ("validate_event(event) without its text", lambda: validate_event(body, facts, rules)),
        ("  _fits(properties)", lambda: _fits(body["properties"], rules)),
        ("  _fits(context)", lambda: _fits(body["context"], rules)),
        ("  parse_timestamp_us(rfc3339)", lambda: parse_timestamp_us(STAMP)),
        ("validate_event(event, text)", lambda: validate_event(body, facts, rules, raw)),
        ("  within_limits(text)", lambda: within_limits(raw, rules)),
        ("ApiKey.key_id (sha256)", lambda: key.key_id),
        ("TokenBuckets.take(user)", lambda: buckets.take("default\x00u-0-1")),
        ("batch rate limit, 100 users / 100", lambda: batch_grants(buckets, 100)),
        ("encode_envelope(envelope)", lambda: encode_envelope(envelope)),
        ("counter.labels(route).inc()", lambda: metrics.events_received.labels("/v1/track").inc()),
        ("histogram.observe()", lambda: metrics.log_append_seconds.observe(0.001)),
        ("json_response(202, {...})", lambda: json_response(202, {"status": "accepted"})),
        ("loop.create_future()", loop.create_future),
    ]
    print(f"{'step':<46}{'us/call':>9}")
    costs: dict[str, float] = {}
    for name, fn in steps:
        us = per_call_us(fn)
        if "/ 100" in name:
            us /= 100
        costs[name] = us
        print(f"{name:<46}{us:>9.2f}")
    loop.close()
    log_row = sqlite_row_us(encode_envelope(envelope))
    print(f"{'SQLite log: one row of a 100-event append':<46}{log_row:>9.2f}")
    batch_event = [
        costs["msgspec.json.decode(100-event batch) / 100"],
        costs["validate_event(event, text)"],
        costs["batch rate limit, 100 users / 100"],
        costs["encode_envelope(envelope)"],
        log_row,
    ]
    print()
    print("one event of a 100-event batch: decode, validate with its text, rate limit,")
    print("encode, log row")
    print(f"{'':<46}{'us':>9}")
    print(f"{'  the stub (decode only)':<46}{batch_event[0]:>9.2f}")
    print(f"{'  convtrack (the five steps above)':<46}{sum(batch_event):>9.2f}")
    print(f"{'  budget for 200,000 events/s on one core':<46}{1e6 / 200_000:>9.2f}")


def batch_grants(buckets: TokenBuckets, users: int) -> int:
    """What ``Collector._grants`` does for a batch of ``users`` distinct users."""
    keys = [f"default\x00u-{i}" for i in range(users)]
    wanted = Counter(keys)
    return sum(buckets.take_up_to(user, n) for user, n in wanted.items())


def sqlite_row_us(payload: bytes, appends: int = 200, per_append: int = 100) -> float:
    """CPU of the whole process (the log's writer thread included) per record appended
    in 100-record calls to the real embedded log, fsync per commit as by default."""
    with tempfile.TemporaryDirectory() as folder:
        log = SqliteLog(Path(folder) / "events.db", clock=SystemClock())
        try:
            records = [LogRecord(f"u-{i}", payload) for i in range(per_append)]
            log.append_blocking(records)  # warm: the file and its first pages exist
            started = time.process_time()
            for _ in range(appends):
                log.append_blocking(records)
            return 1e6 * (time.process_time() - started) / (appends * per_append)
        finally:
            log.close()


if __name__ == "__main__":
    main()
