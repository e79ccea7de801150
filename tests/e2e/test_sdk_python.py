"""Our Python SDK (sdk/python, ``convtrack_sdk``) against a real ``convtrack serve``.

Events carry a browser's user agent in ``context.user_agent`` (the end user's, as a
backend passes it): the server judges bots on it, and this keeps the counts about
the SDK whatever the server thinks of the SDK's own user agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack_sdk import ApiError, AsyncClient, Client, InvalidEvent, RetryPolicy
from tests.conftest import BROWSER_UA, SERVER_KEY, WRITE_KEY, ServerProcess, auth, logged_payloads

pytestmark = pytest.mark.slow

BROWSER = {"user_agent": BROWSER_UA}
# Fast retries: the tests wait for the server's answers, not for backoff.
QUICK = RetryPolicy(base_delay_secs=0.01, max_delay_secs=0.05)
ROOT = Path(__file__).resolve().parents[2]


def today() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d")


def campaign() -> str:
    return f"sdk-{uuid.uuid4().hex[:8]}"


def counted(server: ServerProcess, campaign_id: str, expected: int) -> dict[str, Any]:
    """The hot read once ``expected`` conversions show and nothing is left to process,
    so that a count above ``expected`` would show too."""
    url = f"{server.url}/v1/stats/conversions?campaign_id={campaign_id}&date={today()}"
    deadline = time.monotonic() + 20
    while True:
        stats: dict[str, Any] = httpx.get(url, headers=auth(SERVER_KEY)).json()
        live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
        if stats["conversions"] >= expected and live["lag"]["events"] == 0:
            return httpx.get(url, headers=auth(SERVER_KEY)).json()  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"not counted in time: {stats} {live['lag']}")
        time.sleep(0.02)


def start_shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a test module: each test tells its events apart by client id
    and campaign, so the servers' start-up time is paid once."""
    data_dir = tmp_path_factory.mktemp("sdk") / "data"
    proc = ServerProcess(data_dir, {"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "100000"})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from start_shared_server(tmp_path_factory)


def logged_events(data_dir: Path, *client_ids: str) -> list[dict[str, Any]]:
    """The events of these clients in the server's log, as the collector wrote them."""
    events = [json.loads(payload) for payload in logged_payloads(data_dir)]
    return [e for e in events if e.get("context", {}).get("client_id") in client_ids]


def test_track_identify_page_are_counted_with_exact_values(server: ServerProcess) -> None:
    spring = campaign()
    with Client(WRITE_KEY, server.url, retry=QUICK) as client:
        client.track("Purchase", user_id="u1", value=4999, currency="USD",
                     campaign_id=spring, context=BROWSER)  # fmt: skip
        client.track("Purchase", user_id="u2", revenue=Decimal("19.99"), currency="usd",
                     campaign_id=spring, context=BROWSER)  # fmt: skip
        client.track("Purchase", user_id="u3", revenue="1500", currency="JPY",
                     campaign_id=spring, context=BROWSER, properties={"sku": "sku_1"})  # fmt: skip
        client.track("Purchase", user_id="u4", revenue=0.1, currency="KWD",
                     campaign_id=spring, context=BROWSER)  # fmt: skip
        client.identify("u1", {"email": "Jane@Example.com", "plan": "pro"}, context=BROWSER)
        client.page("https://shop.example/thanks?utm_source=news", session_id="s1",
                    campaign_id=spring, context=BROWSER)  # fmt: skip
        assert client.flush(timeout=30)
        stats = client.stats
    assert (stats.tracked, stats.accepted, stats.rejected, stats.dropped_total) == (6, 6, 0, 0)
    answer = counted(server, spring, 4)
    assert answer["conversions"] == 4  # page_view and identify are not conversions
    assert answer["value"] == {"USD": 4999 + 1999, "JPY": 1500, "KWD": 100}
    events = logged_events(server.data_dir, client.client_id)
    assert [e["context"]["client_seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    identify = next(e for e in events if e["event_name"] == "identify")
    assert "Jane@Example.com" not in json.dumps(identify)  # hashed on arrival
    assert identify["user"]["email"] != "" and identify["properties"] == {"plan": "pro"}
    page = next(e for e in events if e["event_name"] == "page_view")
    assert page["context"]["page_url"] == "https://shop.example/thanks?utm_source=news"


def test_large_batches_are_split_by_count_and_bytes(server: ServerProcess) -> None:
    name = campaign()
    blob = "x" * 8000
    with Client(WRITE_KEY, server.url, max_batch_size=500, retry=QUICK,
                flush_interval_secs=60) as client:  # fmt: skip
        for i in range(1200):
            client.track("Signup", user_id=f"u{i}", campaign_id=name, context=BROWSER)
        assert client.flush(timeout=60)
        small = client.stats.requests
        # 8 strings of 8000 characters: 64 KB an event, 8 to a 512 KiB request at most.
        for i in range(20):
            client.track("Purchase", user_id=f"b{i}", value=100, currency="EUR",
                         campaign_id=name, context=BROWSER,
                         properties={f"p{k}": blob for k in range(8)})  # fmt: skip
        assert client.flush(timeout=60)
        stats = client.stats
    assert small == 3  # 500 + 500 + 200
    assert stats.requests - small >= 3  # 20 * 64 KB in bodies under 512 KiB
    assert (stats.accepted, stats.rejected, stats.dropped_total) == (1220, 0, 0)
    answer = counted(server, name, 1220)
    assert answer["conversions"] == 1220 and answer["value"] == {"EUR": 2000}


def test_conversion_token_counts_an_order_once(server: ServerProcess) -> None:
    name = campaign()
    with Client(SERVER_KEY, server.url, retry=QUICK) as backend:
        token = backend.conversion_token("ord_1001")
        for _ in range(3):  # a thank-you page refreshed: new event ids, one order
            backend.track("Purchase", user_id="u1", value=2500, currency="USD",
                          campaign_id=name, conversion_token=token, context=BROWSER)  # fmt: skip
        assert backend.flush(timeout=30)
        assert backend.stats.accepted == 3
    assert counted(server, name, 1)["value"] == {"USD": 2500}
    with Client(WRITE_KEY, server.url) as browser_key, pytest.raises(ApiError) as refused:
        browser_key.conversion_token("ord_1002")
    assert refused.value.status == 403


def test_invalid_arguments_raise_at_the_call_and_send_nothing(server: ServerProcess) -> None:
    with Client(WRITE_KEY, server.url) as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"revenue": "19.999", "currency": "USD"}, "value_too_precise"),
            ({"revenue": 0.1 + 0.2, "currency": "USD"}, "value_too_precise"),
            ({"revenue": "1.5", "currency": "JPY"}, "value_too_precise"),
            ({"revenue": "9.99"}, "currency_missing"),
            ({"value": 49.99, "currency": "USD"}, "value_not_integer_minor_units"),
            ({"value": 1, "revenue": "1", "currency": "USD"}, "value_ambiguous"),
            ({"user_id": None}, "user_id_missing"),
            ({"timestamp": datetime(2026, 1, 1)}, "timestamp_invalid"),
        ]
        for kwargs, code in cases:
            with pytest.raises(InvalidEvent) as caught:
                client.track("Purchase", **{"user_id": "u1", **kwargs})
            assert caught.value.code == code, kwargs
        with pytest.raises(TypeError):
            client.track("Purchase", user_id="u1", properties={"when": object()})
        client.track("Purchase", user_id="u1", context=BROWSER)  # numbered 1: no gaps
        assert client.flush(timeout=30)
        assert client.stats.tracked == 1
    seqs = [e["context"]["client_seq"] for e in logged_events(server.data_dir, client.client_id)]
    assert seqs == [1]


def test_queue_full_drops_are_counted_and_leave_sequence_gaps(server: ServerProcess) -> None:
    name = campaign()
    # The worker waits for a full batch (100) or 60 s: the queue holds all five.
    client = Client(WRITE_KEY, server.url, max_queue_size=5, flush_interval_secs=60)
    for i in range(8):
        client.track("Purchase", user_id=f"u{i}", value=100, currency="USD",
                     campaign_id=name, context=BROWSER)  # fmt: skip
    assert client.stats.dropped == {"queue_full": 3} and client.stats.queued == 5
    assert client.close(timeout=30)
    assert client.stats.accepted == 5
    assert counted(server, name, 5)["conversions"] == 5
    seqs = [e["context"]["client_seq"] for e in logged_events(server.data_dir, client.client_id)]
    assert seqs == [1, 2, 3, 4, 5]  # 6, 7 and 8 never left the client: counted as drops


def test_close_flushes_and_later_events_are_dropped_as_closed(server: ServerProcess) -> None:
    name = campaign()
    client = Client(WRITE_KEY, server.url, flush_interval_secs=60)
    for i in range(3):
        client.track("Lead", user_id=f"u{i}", campaign_id=name, context=BROWSER)
    assert client.close()
    client.track("Lead", user_id="late", campaign_id=name, context=BROWSER)
    assert client.stats.accepted == 3 and client.stats.dropped == {"closed": 1}
    assert counted(server, name, 3)["conversions"] == 3


def test_interpreter_exit_sends_what_is_queued(server: ServerProcess) -> None:
    name = campaign()
    script = textwrap.dedent(f"""
        from convtrack_sdk import AsyncClient, Client
        client = Client({WRITE_KEY!r}, {server.url!r}, flush_interval_secs=60)
        early = AsyncClient({WRITE_KEY!r}, {server.url!r}, flush_interval_secs=60)
        for i in range(4):
            client.track("Lead", user_id=f"u{{i}}", campaign_id={name!r},
                         context={{"user_agent": {BROWSER_UA!r}}})
        early.track("Lead", user_id="no-loop", campaign_id={name!r},
                    context={{"user_agent": {BROWSER_UA!r}}})
        # no flush, no close: atexit sends both clients' events
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert counted(server, name, 5)["conversions"] == 5


def test_async_client(server: ServerProcess) -> None:
    name = campaign()

    async def go() -> tuple[str, Any]:
        async with AsyncClient(SERVER_KEY, server.url, retry=QUICK) as client:
            token = await client.conversion_token("ord_async")
            for i in range(250):
                client.track("Purchase", user_id=f"u{i}", value=10, currency="USD",
                             campaign_id=name, context=BROWSER)  # fmt: skip
            client.track("Purchase", user_id="u0", value=999, currency="USD",
                         campaign_id=name, conversion_token=token, context=BROWSER)  # fmt: skip
            client.track("Purchase", user_id="u0", value=999, currency="USD",
                         campaign_id=name, conversion_token=token, context=BROWSER)  # fmt: skip
            assert await client.flush(timeout=30)
            return client.client_id, client.stats

    client_id, stats = asyncio.run(go())
    assert (stats.tracked, stats.accepted, stats.dropped_total, stats.queued) == (252, 252, 0, 0)
    assert stats.requests == 3  # 100 + 100 + 52
    answer = counted(server, name, 251)
    assert answer["conversions"] == 251 and answer["value"] == {"USD": 2500 + 999}
    seqs = [e["context"]["client_seq"] for e in logged_events(server.data_dir, client_id)]
    assert sorted(seqs) == list(range(1, 253))


def test_the_sdk_imports_with_the_standard_library_only() -> None:
    src = ROOT / "sdk" / "python" / "src"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import convtrack_sdk;"
        "extra = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names);"
        "assert extra <= {'convtrack_sdk', '__main__'}, extra"
    )
    # -S: no site-packages, so nothing installed for the server can be found.
    done = subprocess.run(
        [sys.executable, "-S", "-c", code, str(src)], capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def wait_accepted(stats: Any, expected: int) -> None:
    deadline = time.monotonic() + 20
    while stats().accepted < expected:
        assert time.monotonic() < deadline, stats()
        time.sleep(0.01)


def test_events_go_on_their_own_after_the_flush_interval(server: ServerProcess) -> None:
    name = campaign()
    with Client(WRITE_KEY, server.url, flush_interval_secs=0.05) as client:
        client.track("Lead", user_id="u1", campaign_id=name, context=BROWSER)
        wait_accepted(lambda: client.stats, 1)  # no flush(): the worker sent it
        client.track("Lead", user_id="u2", campaign_id=name, context=BROWSER)
        wait_accepted(lambda: client.stats, 2)

    async def go() -> None:
        async with AsyncClient(WRITE_KEY, server.url, flush_interval_secs=0.05) as aclient:
            aclient.track("Lead", user_id="u3", campaign_id=name, context=BROWSER)
            while aclient.stats.accepted < 1:
                await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(go(), 20))
    assert counted(server, name, 3)["conversions"] == 3


def test_an_async_client_outlives_its_event_loop(server: ServerProcess) -> None:
    name = campaign()
    client = AsyncClient(WRITE_KEY, server.url, flush_interval_secs=60)

    async def first() -> None:
        client.track("Lead", user_id="u1", campaign_id=name, context=BROWSER)
        assert await client.flush(timeout=20)
        client.track("Lead", user_id="u2", campaign_id=name, context=BROWSER)  # left queued

    async def second() -> None:
        client.track("Lead", user_id="u3", campaign_id=name, context=BROWSER)
        assert await client.close(timeout=20)

    asyncio.run(first())
    asyncio.run(second())  # a new loop: the worker starts again, nothing is lost
    assert client.stats.accepted == 3
    assert counted(server, name, 3)["conversions"] == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_only_its_own_events(server: ServerProcess) -> None:
    name = campaign()
    client = Client(WRITE_KEY, server.url, flush_interval_secs=60)
    client.track("Lead", user_id="parent", campaign_id=name, context=BROWSER)  # worker started
    pid = os.fork()
    if pid == 0:  # the child: the parent's queued event is not its to send
        ok = False
        try:
            client.track("Lead", user_id="child", campaign_id=name, context=BROWSER)
            ok = client.close(timeout=20) and client.stats.accepted == 1
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.close(timeout=20) and client.stats.accepted == 1
    assert counted(server, name, 2)["conversions"] == 2
    both = logged_events(server.data_dir, client.client_id, f"{client.client_id}.{pid}")
    numbered = {e["user_id"]: e["context"] for e in both}
    assert numbered["parent"]["client_id"] == client.client_id
    assert numbered["child"]["client_id"] == f"{client.client_id}.{pid}"
    assert numbered["parent"]["client_seq"] == numbered["child"]["client_seq"] == 1
