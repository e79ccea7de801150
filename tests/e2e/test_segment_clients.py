"""The real Segment-spec client libraries against a real ``convtrack serve``.

``segment-analytics-python`` and ``rudder-sdk-python`` (which gzips its bodies)
from PyPI, ``@segment/analytics-node`` from npm (installed here, into a cache
directory outside the repository). Each must get its events counted with the
exact value, a retried message counted once, and bad ones kept as rejects.

Every message sets ``context.userAgent`` to a desktop Chrome: the libraries'
own user agents (python-requests, node) are classed as bots by the user-agent
rules as they stand, which another change reconsiders; these tests are about
the Segment mapping and must not depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.conftest import (
    ADMIN_KEY,
    BROWSER_UA,
    SERVER_KEY,
    WRITE_KEY,
    ServerFactory,
    ServerProcess,
    auth,
)

pytestmark = pytest.mark.slow

ANALYTICS_NODE = "@segment/analytics-node@3.1.0"


def context(**more: Any) -> dict[str, Any]:
    """A fresh context each call (the Python libraries add to the one they are given)."""
    return {"userAgent": BROWSER_UA, "ip": "203.0.113.9", **more}  # see the module docstring


@pytest.fixture
def segment_server(server_factory: ServerFactory) -> Iterator[ServerProcess]:
    proc = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000"})
    proc.start()
    yield proc
    proc.stop()


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def drained(server: ServerProcess) -> None:
    """Wait until the processor has read everything the log holds."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
        if live["lag"]["events"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the processor did not catch up in 20 s")


def counted(server: ServerProcess, campaign: str) -> dict[str, Any]:
    drained(server)
    response = httpx.get(
        f"{server.url}/v1/stats/conversions",
        params={"campaign_id": campaign, "date": today()},
        headers=auth(SERVER_KEY),
    )
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


def rejects(server: ServerProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def reject_codes(server: ServerProcess) -> dict[str, list[str]]:
    """messageId -> the codes it was rejected with."""
    return {r["event_id"]: r["codes"] for r in rejects(server) if r["event_id"]}


class Errors:
    """What a library's ``on_error`` reported."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, error: Exception, batch: list[Any]) -> None:
        self.seen.append(str(error))


def python_library_round(client: Any, errors: Errors, server: ServerProcess, tag: str) -> None:
    """The same conversions through a Python library; then the counts and rejects."""
    campaign = f"{tag}_{uuid.uuid4().hex[:8]}"
    props = {"revenue": 49.99, "currency": "usd", "campaign_id": campaign}
    order_id = f"{tag}-order-{uuid.uuid4()}"
    client.track(
        user_id="u_1", event="Order Completed", context=context(), message_id=order_id,
        properties={**props, "order_id": "o1", "products": [{"product_id": "sku_1"}]},
    )  # fmt: skip
    # A retry of the same message (same messageId): accepted, counted once.
    client.track(
        user_id="u_1", event="Order Completed", context=context(), message_id=order_id,
        properties={**props, "order_id": "o1", "products": [{"product_id": "sku_1"}]},
    )  # fmt: skip
    client.track(
        anonymous_id="anon_2", event="Checkout Started", context=context(),
        properties={"value": 1e3, "currency": "jpy", "campaign_id": campaign},
    )  # fmt: skip
    client.identify(
        user_id="u_1", context=context(), traits={"email": "Jane@Example.com", "firstName": "Jane"}
    )
    client.page(user_id="u_1", name="Thanks", context=context(page={"url": "https://s/t"}))
    client.flush()  # every message so far is accepted: no batch of them may be an error
    assert errors.seen == []
    # Bad ones, sent after: a batch of only rejected messages is a 4xx once the batch
    # answer says so (CONTRACT.md), which the library reports; nothing else may be.
    float_sum = f"{tag}-float-sum-{uuid.uuid4()}"
    client.track(  # sent as 0.30000000000000004: more than cents, never rounded to 30
        user_id="u_1", event="Order Completed", context=context(), message_id=float_sum,
        properties={"revenue": 0.1 + 0.2, "currency": "USD", "campaign_id": campaign},
    )  # fmt: skip
    bad_precise = f"{tag}-bad-precise-{uuid.uuid4()}"
    client.track(
        user_id="u_1", event="Order Completed", context=context(), message_id=bad_precise,
        properties={"revenue": 19.999, "currency": "USD", "campaign_id": campaign},
    )  # fmt: skip
    bad_currency = f"{tag}-bad-currency-{uuid.uuid4()}"
    client.track(
        user_id="u_1", event="Order Completed", context=context(), message_id=bad_currency,
        properties={"total": 12, "campaign_id": campaign},
    )  # fmt: skip
    client.flush()
    client.join()
    assert [e for e in errors.seen if not e.endswith("(400)")] == []

    stats = counted(server, campaign)
    # 49.99 USD once (its retry deduplicated) and 1000 JPY; identify and page are not
    # conversions.
    assert stats["conversions"] == 2, stats
    assert stats["value"] == {"USD": 4999, "JPY": 1000}, stats
    codes = reject_codes(server)
    assert codes[float_sum] == ["value_too_precise"]
    assert codes[bad_precise] == ["value_too_precise"]
    assert codes[bad_currency] == ["currency_missing"]
    assert len(codes) == 3, codes


def test_segment_analytics_python(segment_server: ServerProcess) -> None:
    errors = Errors()
    client = SegmentClient(WRITE_KEY, host=segment_server.url, on_error=errors, max_retries=1)
    python_library_round(client, errors, segment_server, "seg_py")


def test_rudder_sdk_python_gzip(segment_server: ServerProcess) -> None:
    errors = Errors()
    client = RudderClient(
        WRITE_KEY, host=segment_server.url, on_error=errors, gzip=True,
        max_retries=1,
    )  # fmt: skip
    python_library_round(client, errors, segment_server, "rudder_py")


# -- @segment/analytics-node -----------------------------------------------------------


@pytest.fixture(scope="session")
def analytics_node() -> Path:
    """``node_modules`` with @segment/analytics-node, installed once into a cache dir."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm (and node) are not installed: @segment/analytics-node cannot be tested")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    prefix = cache / "convtrack-tests" / "analytics-node-3.1.0"
    module = prefix / "node_modules" / "@segment" / "analytics-node" / "package.json"
    if not module.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
             ANALYTICS_NODE],
            check=True, timeout=300,
        )  # fmt: skip
    return prefix / "node_modules"


NODE_SCRIPT = r"""
const { Analytics } = require('@segment/analytics-node');
const [host, writeKey, messagesJson] = process.argv.slice(-3);  // node -e: no script path in argv
const analytics = new Analytics({ writeKey, host, maxRetries: 1, flushInterval: 50 });
const errors = [];
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.code || err))));
for (const m of JSON.parse(messagesJson)) {
  const { kind, ...params } = m;
  analytics[kind](params);
}
analytics.closeAndFlush({ timeout: 10000 }).then(() => {
  process.stdout.write(JSON.stringify({ errors }));
});
"""


def run_node(modules: Path, server: ServerProcess, messages: list[dict[str, Any]]) -> list[str]:
    result = subprocess.run(
        ["node", "-e", NODE_SCRIPT, server.url, WRITE_KEY, json.dumps(messages)],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors: list[str] = json.loads(result.stdout)["errors"]
    return errors


def test_segment_analytics_node(analytics_node: Path, segment_server: ServerProcess) -> None:
    campaign = f"seg_node_{uuid.uuid4().hex[:8]}"
    order_id = f"node-order-{uuid.uuid4()}"
    order = {
        "kind": "track", "userId": "u_node", "event": "Order Completed", "messageId": order_id,
        "context": context(),
        "properties": {"revenue": 49.99, "currency": "USD", "campaign_id": campaign,
                       "products": [{"product_id": "sku_1", "price": 49.99}]},
    }  # fmt: skip
    messages = [
        order,
        {**order},  # the same messageId again: a retry, counted once
        {"kind": "track", "anonymousId": "anon_node", "event": "Product Added",
         "context": context(),
         "properties": {"value": 12.5, "currency": "kwd", "campaign_id": campaign}},
        {"kind": "identify", "userId": "u_node", "context": context(),
         "traits": {"email": "node@example.com"}},
        {"kind": "page", "userId": "u_node", "name": "Home", "context": context()},
    ]  # fmt: skip
    assert run_node(analytics_node, segment_server, messages) == []
    stats = counted(segment_server, campaign)
    assert stats["conversions"] == 2, stats
    assert stats["value"] == {"USD": 4999, "KWD": 12500}, stats


def test_analytics_node_batch_of_rejects_only(
    analytics_node: Path, segment_server: ServerProcess
) -> None:
    """Every message rejected: kept with its codes (the library is told by the answer)."""
    ids = [f"node-rej-{uuid.uuid4()}" for _ in range(3)]
    messages = [
        {"kind": "track", "userId": "u", "event": "Order Completed", "messageId": ids[0],
         "context": context(), "properties": {"revenue": -5, "currency": "USD"}},
        {"kind": "track", "userId": "u", "event": "Order Completed", "messageId": ids[1],
         "context": context(), "properties": {"revenue": 5, "currency": "XYZ"}},
        {"kind": "track", "userId": "u", "event": "Order Completed", "messageId": ids[2],
         "context": context(), "properties": {"revenue": 1.005, "currency": "USD"}},
    ]  # fmt: skip
    run_node(analytics_node, segment_server, messages)
    codes = reject_codes(segment_server)
    assert codes[ids[0]] == ["value_negative"]
    assert codes[ids[1]] == ["currency_unknown"]
    assert codes[ids[2]] == ["value_too_precise"]
