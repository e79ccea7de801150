"""The pure parts of delivery: backoff, the breaker, endpoint safety, and the sender's limits."""

from __future__ import annotations

import random
import socket
import threading
import time

import httpx
import pytest

from convtrack.deliver.alerts import PAUSED, Alerts
from convtrack.deliver.base import OutboundRequest
from convtrack.deliver.outbound import MAX_ANSWER_BYTES, EndpointGuard, Sender, forbidden_address
from convtrack.deliver.policy import Backoff, Breaker, next_delay
from convtrack.errors import TransportError, TransportTimeout
from convtrack.testing.standins.base import Answer, Request, Slow, StandIn


def test_full_jitter_stays_between_zero_and_the_capped_exponential() -> None:
    backoff = Backoff(base_secs=2.0, cap_secs=50.0)
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(50.0, 2.0 * 2 ** (attempt - 1))
        assert backoff.ceiling(attempt) == ceiling
        delays = [backoff.delay(attempt, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter uses the whole range, not just its top.
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9
    assert Backoff(1.0, 600.0).ceiling(5000) == 600.0  # no overflow on long outages


def test_retry_after_wins_and_each_policy_has_its_own_curve() -> None:
    transient, throttle = Backoff(1.0, 4.0), Backoff(30.0, 3600.0)
    rng = random.Random(1)

    def delay(after: float | None, throttled: bool) -> float:
        return next_delay(attempt=5, after_secs=after, throttled=throttled,
                          transient=transient, throttle=throttle, rng=rng)  # fmt: skip

    assert delay(7.0, True) == 7.0 and delay(0.0, False) == 0.0
    fast = [delay(None, False) for _ in range(200)]
    slow = [delay(None, True) for _ in range(200)]
    assert max(fast) <= 4.0 and 4.0 < max(slow) <= 480.0


def test_the_breaker_opens_after_failing_requests_in_a_row_then_trials() -> None:
    breaker = Breaker(failure_ratio=0.5, threshold=3, cooldown_secs=60.0)
    assert breaker.record(1.0, 0.0) is None and breaker.record(0.6, 1.0) is None
    assert breaker.record(0.2, 2.0) is None  # a mostly good request resets the count
    assert [breaker.record(1.0, t) for t in (3.0, 4.0)] == [None, None]
    assert breaker.record(0.5, 5.0) == "opened"  # the ratio is inclusive
    assert breaker.state(5.0) == "open" and breaker.wait_secs(35.0) == 30.0
    assert breaker.state(65.0) == "half_open" and breaker.wait_secs(65.0) == 0.0
    assert breaker.record(1.0, 65.0) is None  # the trial failed: open again, no new alert
    assert breaker.state(100.0) == "open" and breaker.wait_secs(100.0) == 25.0
    assert breaker.record(0.0, 125.0) == "closed"
    assert breaker.state(125.0) == "closed" and not breaker.is_open


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "100.100.100.200",
     "168.63.129.16", "::ffff:169.254.169.254"],
)  # fmt: skip
def test_link_local_and_metadata_addresses_are_forbidden(address: str) -> None:
    assert forbidden_address(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.5", "8.8.8.8", "100.100.100.1"])
def test_other_addresses_are_not(address: str) -> None:
    assert not forbidden_address(address)


def test_the_guard_refuses_by_name_by_address_and_by_resolution() -> None:
    answers = {"rebind.example": ["203.0.113.9", "169.254.169.254"], "ok.example": ["203.0.113.9"]}
    guard = EndpointGuard(allow_private_network=False, resolver=lambda h: answers.get(h, []))
    refused = guard.refusal("https://rebind.example/secret-path?token=abc")
    assert refused is not None and "169.254.169.254" in refused and "rebind.example" in refused
    assert "secret-path" not in refused and "abc" not in refused  # paths may hold secrets
    assert guard.refusal("http://169.254.169.254/latest/meta-data/") is not None
    assert guard.refusal("http://[fe80::1]:8080/x") is not None
    assert guard.refusal("http://metadata.google.internal/computeMetadata/v1/") is not None
    assert guard.refusal("https://ok.example/hook") is None
    assert guard.refusal("http://127.0.0.1:8080/standin") is None  # loopback stays allowed
    assert guard.refusal("http://localhost:8080/standin") is None  # real resolution
    allowed = EndpointGuard(allow_private_network=True, resolver=lambda h: answers[h])
    assert allowed.refusal("https://rebind.example/") is None


class Echo(StandIn):
    def check(self, request: Request) -> Answer:
        if request.path == "/big":
            return Answer(200, body=b"x" * (MAX_ANSWER_BYTES + 4096))
        return Answer(302, {"location": f"{self.base_url}/elsewhere"}, b"moved")


def test_the_sender_caps_answers_and_never_follows_redirects() -> None:
    with Echo() as platform:
        sender = Sender(timeout_secs=5)
        try:
            status, _, body = sender.send(
                OutboundRequest("POST", f"{platform.base_url}/big", {}, b"{}")
            )
            assert status == 200 and len(body) == MAX_ANSWER_BYTES
            status, headers, _ = sender.send(
                OutboundRequest("POST", f"{platform.base_url}/hook", {}, b"{}")
            )
            assert status == 302 and headers["location"].endswith("/elsewhere")
            assert [r.path for r in platform.requests] == ["/big", "/hook"]  # not followed
        finally:
            sender.close()


def test_the_sender_times_out() -> None:
    with Echo() as platform:
        platform.plan = [Slow(1.5)]
        sender = Sender(timeout_secs=0.3)
        try:
            with pytest.raises(TransportTimeout) as caught:
                sender.send(OutboundRequest("POST", f"{platform.base_url}/big", {}, b"{}"))
            assert isinstance(caught.value.__cause__, httpx.TimeoutException)
            assert caught.value.maybe_sent  # the whole request had left
        finally:
            sender.close()


def test_alerts_are_raised_once_cleared_once_and_not_sent_to_the_channel_they_are_about() -> None:
    gauges: dict[tuple[str, str], float] = {}
    alerts = Alerts(lambda kind, name, value: gauges.__setitem__((kind, name), value))
    ops, other = alerts.outbox("ops"), alerts.outbox("team")
    alerts.raise_(PAUSED, "meta", "HTTP 401: token expired")
    alerts.raise_(PAUSED, "meta", "HTTP 401: token expired again")  # already raised
    alerts.raise_(PAUSED, "ops", "HTTP 403: invalid_token")  # ops cannot tell itself
    assert gauges == {(PAUSED, "meta"): 1.0, (PAUSED, "ops"): 1.0}
    assert alerts.active()[(PAUSED, "meta")] == "HTTP 401: token expired again"
    assert len(ops) == 1 and len(other) == 2
    alerts.clear(PAUSED, "meta")
    alerts.clear(PAUSED, "meta")
    assert gauges[(PAUSED, "meta")] == 0.0 and len(ops) == 2
    messages = [ops.take(), ops.take()]
    assert "meta" in str(messages[0]) and "token expired" in str(messages[0])
    assert "resolved" in str(messages[1]) and ops.take() is None


def test_a_slow_body_cannot_outlast_the_whole_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def drip() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(100):
            try:
                conn.sendall(b"x")
            except OSError:
                break
            time.sleep(0.05)
        conn.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    sender = Sender(timeout_secs=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(TransportTimeout) as caught:
            sender.send(OutboundRequest("POST", f"http://127.0.0.1:{port}/", {}, b"{}"))
        assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    finally:
        sender.close()
        server.close()
    assert time.monotonic() - started < 2.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_our_transport_error_without_the_url_path() -> None:
    """httpx stays inside the sender: its error leaves as ours, raised from it, and the
    message names the host but not the path (it may hold a secret)."""
    url = f"http://127.0.0.1:{free_port()}/hooks/SECRET-TOKEN"
    sender = Sender(timeout_secs=2.0)
    try:
        with pytest.raises(TransportError) as caught:
            sender.send(OutboundRequest("POST", url, {}, b"{}"))
    finally:
        sender.close()
    error = caught.value
    assert not isinstance(error, TransportTimeout)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert not error.maybe_sent  # nothing left: sending it again is safe
    assert "ConnectError" in str(error) and "127.0.0.1" in str(error)
    assert "SECRET-TOKEN" not in str(error)


def test_a_connection_closed_before_the_answer_may_have_been_taken() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def hang_up() -> None:
        conn, _ = server.accept()
        # Read the whole request (headers and its 2-byte body may come apart) before
        # closing: a close with unread bytes sends a reset, not the end of the stream.
        request = b""
        while b"\r\n\r\n" not in request or not request.endswith(b"{}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            request += chunk
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    sender = Sender(timeout_secs=5.0)
    try:
        with pytest.raises(TransportError) as caught:
            sender.send(OutboundRequest("POST", f"http://127.0.0.1:{port}/", {}, b"{}"))
    finally:
        sender.close()
        server.close()
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert caught.value.maybe_sent
