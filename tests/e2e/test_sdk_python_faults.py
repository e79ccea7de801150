"""Our Python SDK under faults: a dropped answer, 503s, a server down, bad events.

Between the client and a real ``convtrack serve`` sits a small HTTP proxy that
answers 503 (with Retry-After) to the first requests, or forwards a request and
then drops the connection instead of answering, and records what it saw.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from convtrack_sdk import AsyncClient, Client, Rejection, RetryPolicy
from tests.conftest import ADMIN_KEY, WRITE_KEY, ServerFactory, ServerProcess, auth
from tests.e2e.test_sdk_python import (
    BROWSER,
    QUICK,
    campaign,
    counted,
    logged_events,
    start_shared_server,
)

pytestmark = pytest.mark.slow


class FaultyProxy:
    """Forwards POSTs to ``target``. The first ``unavailable`` requests get ``status``
    (503) with ``Retry-After: retry_after``; the next ``drop_answers`` are forwarded, and their
    answers thrown away with the connection."""

    def __init__(
        self,
        target: str,
        *,
        unavailable: int = 0,
        retry_after: str | None = "1",
        drop_answers: int = 0,
        status: int = 503,
    ) -> None:
        self.target = target.removeprefix("http://")
        self.unavailable = unavailable
        self.retry_after = retry_after
        self.drop_answers = drop_answers
        self.status = status
        self.seen: list[tuple[float, list[str], str]] = []  # when, event ids, what we did
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                proxy.handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        plain = gzip.decompress(body) if request.headers.get("Content-Encoding") else body
        ids = [e["event_id"] for e in json.loads(plain).get("batch", [])]
        with self._lock:
            if self.unavailable > 0:
                self.unavailable -= 1
                action = str(self.status)
            elif self.drop_answers > 0:
                self.drop_answers -= 1
                action = "drop"
            else:
                action = "forward"
            self.seen.append((time.monotonic(), ids, action))
        if action == str(self.status):
            answer = b'{"error":"unavailable"}'
            request.send_response(self.status)
            if self.retry_after is not None:
                request.send_header("Retry-After", self.retry_after)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(answer)))
            request.end_headers()
            request.wfile.write(answer)
            return
        upstream = http.client.HTTPConnection(self.target, timeout=10)
        names = ("Authorization", "Content-Type", "Content-Encoding", "User-Agent")
        headers = {k: request.headers[k] for k in names if request.headers.get(k)}
        upstream.request("POST", request.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        if action == "drop":  # the server has the events; the client never hears so
            request.close_connection = True
            return
        request.send_response(response.status)
        for name in ("Content-Type", "Retry-After"):
            if response.getheader(name):
                request.send_header(name, str(response.getheader(name)))
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def actions(self) -> list[str]:
        return [action for _, _, action in self.seen]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from start_shared_server(tmp_path_factory)


@pytest.fixture
def proxy_to(server: ServerProcess) -> Iterator[Any]:
    made: list[FaultyProxy] = []

    def make(**kw: Any) -> FaultyProxy:
        made.append(FaultyProxy(server.url, **kw))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def purchases(client: Client | AsyncClient, name: str, count: int, value: int = 100) -> list[str]:
    def one(i: int) -> str:
        return client.track("Purchase", user_id=f"u{i}", value=value, currency="USD",
                            campaign_id=name, context=BROWSER)  # fmt: skip

    return [one(i) for i in range(count)]


def test_an_answer_lost_with_its_connection_is_resent_and_counted_once(
    server: ServerProcess, proxy_to: Any
) -> None:
    proxy = proxy_to(drop_answers=1)
    name = campaign()
    with Client(WRITE_KEY, proxy.url, retry=QUICK, gzip=True) as client:
        sent = purchases(client, name, 10)
        assert client.flush(timeout=30)
        stats = client.stats
    assert proxy.actions() == ["drop", "forward"]
    assert proxy.seen[0][1] == proxy.seen[1][1] == sent  # the same events, same event ids
    assert (stats.accepted, stats.retries, stats.dropped_total) == (10, 1, 0)
    assert [e["event_id"] for e in logged_events(server.data_dir, client.client_id)] == sent + sent
    answer = counted(server, name, 10)
    assert answer["conversions"] == 10 and answer["value"] == {"USD": 1000}


def test_503_with_retry_after_then_recovery_loses_nothing_and_doubles_nothing(
    server: ServerProcess, proxy_to: Any
) -> None:
    proxy = proxy_to(unavailable=3, retry_after="1")
    name = campaign()
    with Client(WRITE_KEY, proxy.url, retry=QUICK, max_batch_size=50) as client:
        sent = purchases(client, name, 120, value=250)
        assert client.flush(timeout=60)
        stats = client.stats
    assert proxy.actions() == ["503", "503", "503", "forward", "forward", "forward"]
    # Retry-After honoured: each resend came at least a second after its 503.
    times = [when for when, _, _ in proxy.seen]
    assert all(later - earlier >= 0.99 for earlier, later in itertools.pairwise(times[:4]))
    assert (stats.accepted, stats.retries, stats.dropped_total) == (120, 3, 0)
    logged = [e["event_id"] for e in logged_events(server.data_dir, client.client_id)]
    assert sorted(logged) == sorted(sent)  # each once: the 503s took nothing
    answer = counted(server, name, 120)
    assert answer["conversions"] == 120 and answer["value"] == {"USD": 120 * 250}


def test_429_and_500_are_resent_and_given_up_after_max_retries(
    server: ServerProcess, proxy_to: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name = campaign()
    limited = proxy_to(unavailable=2, status=429, retry_after="0")
    with Client(WRITE_KEY, limited.url, retry=QUICK) as client:
        purchases(client, name, 3)
        assert client.flush(timeout=30)
        assert (client.stats.accepted, client.stats.retries) == (3, 2)
    assert limited.actions() == ["429", "429", "forward"]
    failing = proxy_to(unavailable=1000, status=500, retry_after=None)
    caplog.set_level(logging.ERROR, logger="convtrack_sdk")
    twice = RetryPolicy(max_retries=2, base_delay_secs=0.01, max_delay_secs=0.02)
    with Client(WRITE_KEY, failing.url, retry=twice) as client:
        purchases(client, name, 4)
        assert client.flush(timeout=30)
        stats = client.stats
    assert failing.actions() == ["500"] * 3  # the first try and two resends
    assert (stats.accepted, stats.retries, stats.dropped) == (0, 2, {"retries_exhausted": 4})
    assert any("gave up on 4 events after 2 retries" in r.getMessage() for r in caplog.records)
    assert counted(server, name, 3)["conversions"] == 3


def test_a_server_down_then_back_on_the_same_port_and_data_dir(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000"})
    server.start()
    name = campaign()
    retry = RetryPolicy(max_retries=1000, base_delay_secs=0.01, max_delay_secs=0.1)
    with Client(WRITE_KEY, server.url, retry=retry) as client:
        before = purchases(client, name, 5)
        assert client.flush(timeout=30)
        server.kill()
        during = purchases(client, name, 7)
        assert not client.flush(timeout=0.5)  # nothing can take them: they wait
        assert client.stats.queued == 7
        server.start()
        assert client.flush(timeout=60)
        stats = client.stats
    assert (stats.accepted, stats.dropped_total) == (12, 0)
    assert [
        e["event_id"] for e in logged_events(server.data_dir, client.client_id)
    ] == before + during
    answer = counted(server, name, 12)
    assert answer["conversions"] == 12 and answer["value"] == {"USD": 1200}


def test_a_server_with_a_lower_body_limit_gets_smaller_requests(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"CONVTRACK_LIMITS_MAX_BATCH_BYTES": "65536",
                             "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000"})  # fmt: skip
    server.start()
    name = campaign()
    blob = "y" * 8000
    with Client(WRITE_KEY, server.url, retry=QUICK, flush_interval_secs=60) as client:
        for i in range(10):  # 10 events of 16 KB: one 160 KB request, over 64 KiB
            client.track("Purchase", user_id=f"u{i}", value=1, currency="USD", campaign_id=name,
                         context=BROWSER, properties={"a": blob, "b": blob})  # fmt: skip
        assert client.flush(timeout=30)
        first = client.stats
        # The 413 said the limit (65536): the SDK keeps to it from then on.
        for i in range(10):
            client.track("Purchase", user_id=f"v{i}", value=1, currency="USD", campaign_id=name,
                         context=BROWSER, properties={"a": blob, "b": blob})  # fmt: skip
        assert client.flush(timeout=30)
        stats = client.stats
    # 160 KB refused (413 with limit_bytes), then requests under 64 KiB; the second
    # round, the same sizes, goes in as many requests with no refusal first.
    second = stats.requests - first.requests
    assert second >= 3 and first.requests == 1 + second
    assert (stats.accepted, stats.rejected, stats.retries, stats.dropped_total) == (20, 0, 0, 0)
    assert counted(server, name, 20)["value"] == {"USD": 20}


def test_rate_limited_events_of_a_batch_are_resent_alone(server_factory: ServerFactory) -> None:
    server = server_factory({"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "5"})
    server.start()
    name = campaign()
    patient = RetryPolicy(max_retries=100, base_delay_secs=0.05, max_delay_secs=0.3)
    with Client(WRITE_KEY, server.url, retry=patient, flush_interval_secs=60) as client:
        sent = [client.track("Purchase", user_id="one-user", value=10, currency="USD",
                             campaign_id=name, context=BROWSER) for _ in range(12)]  # fmt: skip
        assert client.flush(timeout=60)
        stats = client.stats
    assert (stats.accepted, stats.rejected, stats.dropped_total) == (12, 0, 0)
    assert stats.retries >= 1
    logged = [e["event_id"] for e in logged_events(server.data_dir, client.client_id)]
    assert sorted(logged) == sorted(sent)  # the accepted ones were not sent again
    kept = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    assert kept["total"] >= 1 and {c for i in kept["items"] for c in i["codes"]} == {"rate_limited"}
    assert counted(server, name, 12)["value"] == {"USD": 120}


def test_bad_events_are_kept_as_rejects_with_their_code_and_not_resent(
    server: ServerProcess, proxy_to: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = proxy_to()
    name = campaign()
    seen: list[Rejection] = []
    old = datetime.now(UTC) - timedelta(days=30)
    caplog.set_level(logging.WARNING, logger="convtrack_sdk")
    with Client(WRITE_KEY, proxy.url, retry=QUICK, on_reject=seen.append) as client:
        good = client.track("Purchase", user_id="u1", value=100, currency="USD",
                            campaign_id=name, context=BROWSER)  # fmt: skip
        stale = client.track("Purchase", user_id="u2", value=100, currency="USD",
                             campaign_id=name, timestamp=old, context=BROWSER)  # fmt: skip
        assert client.flush(timeout=30)
        # A batch of bad events only: answered 400 (or 200 by older servers), same list.
        unknown = client.track("Purchase", user_id="u3", value=100, currency="XQQ",
                               campaign_id=name, context=BROWSER)  # fmt: skip
        assert client.flush(timeout=30)
        stats = client.stats
    assert proxy.actions() == ["forward", "forward"]  # neither request was sent again
    assert (stats.accepted, stats.rejected, stats.retries) == (1, 2, 0)
    assert stats.rejected_by_code == {"timestamp_too_old": 1, "currency_unknown": 1}
    assert [(r.event_id, r.codes) for r in seen] == [
        (stale, ("timestamp_too_old",)),
        (unknown, ("currency_unknown",)),
    ]
    assert seen[0].seq == 2 and seen[1].seq == 3
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(stale in m and "timestamp_too_old" in m for m in warned)
    assert any(unknown in m and "currency_unknown" in m for m in warned)
    kept = httpx.get(f"{server.url}/v1/rejects", headers=auth(ADMIN_KEY)).json()
    ours = [item for item in kept["items"] if item["event_id"] in (stale, unknown)]
    assert {(item["event_id"], tuple(item["codes"])) for item in ours} == {
        (stale, ("timestamp_too_old",)),
        (unknown, ("currency_unknown",)),
    }
    assert counted(server, name, 1)["conversions"] == 1
    assert [e["event_id"] for e in logged_events(server.data_dir, client.client_id)] == [good]


def test_a_wrong_key_is_refused_once_counted_and_logged(
    server: ServerProcess, proxy_to: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = proxy_to()
    caplog.set_level(logging.ERROR, logger="convtrack_sdk")
    with Client("not-a-key-0123456789", proxy.url, retry=QUICK) as client:
        purchases(client, campaign(), 4)
        assert client.flush(timeout=30)
        assert client.stats.dropped == {"refused": 4}
    assert proxy.actions() == ["forward"]
    assert any("HTTP 401" in r.getMessage() for r in caplog.records)


def test_async_client_rides_out_503s(server: ServerProcess, proxy_to: Any) -> None:
    proxy = proxy_to(unavailable=2, retry_after="0")
    name = campaign()

    client = AsyncClient(WRITE_KEY, proxy.url, retry=QUICK)

    async def go() -> tuple[list[str], Any]:
        async with client:
            sent = purchases(client, name, 30)
            assert await client.flush(timeout=30)
            return sent, client.stats

    sent, stats = asyncio.run(go())
    assert proxy.actions() == ["503", "503", "forward"]
    assert (stats.accepted, stats.retries, stats.dropped_total) == (30, 2, 0)
    assert [e["event_id"] for e in logged_events(server.data_dir, client.client_id)] == sent
    assert counted(server, name, 30)["value"] == {"USD": 3000}
