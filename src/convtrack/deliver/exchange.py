"""One destination's requests: built, checked, paced, sent, and their answers read.

The dispatcher (``deliver.dispatch``) acts on the outcomes; this module makes
them: ``attempt`` sends one batch's request and reads its answer into an
``Outcome``, counting it in ``convtrack_deliver_attempts_total``. The alert
poster (``deliver.alerts``) sends Slack alerts through the same ``Exchange``
(``send``: no events, no outcome), so both keep one pace (``min_interval_secs``).

A request gets no answer to read when its endpoint is refused (nothing is
sent), when it fails on the way, or when it is redirected (never followed). A
request that was sent but not answered (a read timeout, a connection dropped
after the request went out) may have been taken: where the platform cannot
deduplicate it is rejected, for an operator to check, instead of being sent
again. A connection that could not be made (refused, connect timeout) or a
request that could not be written sent nothing whole and is retried as usual.

An answer that cannot be read (the destination's ``read`` raises) is read
again per event by sending each alone (platforms that deduplicate); an event
whose own answer cannot be read, or whose own request cannot be built, is
rejected. Where the platform cannot deduplicate, a batch whose answer cannot be
read may have been taken: it is rejected whole, for an operator to check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.deliver.answers import excerpt
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
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.inflight import unanswered_reason
from convtrack.deliver.outbound import REASON_CHARS, EndpointGuard, Sender, host_of
from convtrack.errors import TransportError, TransportTimeout
from convtrack.observe.metrics import DeliveryMetrics


class Stopped(Exception):
    """The runner was stopped while its dispatcher or alert poster waited."""


@dataclass(frozen=True)
class Answered:
    """The platform's answer, to be read by the destination (or the alert poster)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Unanswered:
    """No answer to read, and what it means; ``label`` names it in the attempts metric
    (``refused``: not sent; ``error``: failed on the way; ``setup``: redirected)."""

    status: int | None
    outcome: Retry | Reject | SetupFault
    label: str


class Exchange:
    """Builds and sends one destination's requests, one pace for all of them."""

    def __init__(
        self,
        *,
        destination: Destination,
        settings: DestinationSettings,
        sender: Sender,
        guard: EndpointGuard,
        clock: Clock,
        metrics: DeliveryMetrics,
        sleep: Callable[[float], None],
        stop: threading.Event,
    ) -> None:
        self.name = settings.name
        self._destination = destination
        self._timeout_secs = settings.timeout_secs
        self._sender = sender
        self._guard = guard
        self._clock = clock
        self._metrics = metrics
        self._sleep = sleep
        self._stop = stop
        self._last_request_at: float | None = None

    # -- one batch's request --------------------------------------------------------

    def build(self, events: Sequence[Forwarded]) -> OutboundRequest:
        armed = failpoints.poisoned("deliver")
        if armed:
            for event in events:
                failpoints.check("deliver", event.event_id, armed)
        return self._destination.build(events, self._clock.now_us())

    def attempt(
        self, events: Sequence[Forwarded], request: OutboundRequest
    ) -> tuple[int | None, Outcome]:
        """Send the request built from ``events``; the answer's status and outcome."""
        try:
            status, outcome, label = self._send_events(request, events)
        except _Unreadable as unreadable:
            self._metrics.attempts.labels(self.name, "unreadable").inc()
            return unreadable.status, self._read_alone(events, unreadable)
        self._metrics.attempts.labels(self.name, label).inc()
        return status, outcome

    def _read_alone(self, events: Sequence[Forwarded], unreadable: _Unreadable) -> Outcome:
        """The answer to a batch could not be read: settle each event on its own."""
        reason = f"the answer could not be read: {unreadable.error}"[:REASON_CHARS]
        if len(events) == 1 or not self._destination.dedupes_on_event_id:
            return Reject(reason=reason)
        retry: list[str] = []
        rejected: dict[str, str] = {}
        for event in events:
            try:
                _, outcome = self.attempt([event], self.build([event]))
            except Exception as exc:
                outcome = Reject(reason=unbuildable(exc))
            match outcome:
                case Delivered():
                    pass
                case Reject():
                    rejected[event.event_id] = outcome.reason
                case Retry() | Throttled() | RetryPartial() | SetupFault():
                    retry.append(event.event_id)
                case _:
                    assert_never(outcome)
        if not retry and not rejected:
            return Delivered()
        return RetryPartial(event_ids=retry, reason=reason, rejected=rejected)

    def _send_events(
        self, request: OutboundRequest, events: Sequence[Forwarded]
    ) -> tuple[int | None, Outcome, str]:
        answer = self.send(request)
        if isinstance(answer, Unanswered):
            return answer.status, answer.outcome, answer.label
        try:
            outcome = self._destination.read(events, answer.status, answer.headers, answer.body)
        except Exception as exc:
            raise _Unreadable(answer.status, exc) from exc
        if not isinstance(outcome, Delivered) and not outcome.reason:
            outcome = Reject(reason=f"HTTP {answer.status}: {excerpt(answer.body)}")
        return answer.status, outcome, _label(outcome)

    # -- any request ------------------------------------------------------------------

    def send(self, request: OutboundRequest) -> Answered | Unanswered:
        """Send one request (events or an alert) unless its endpoint is refused."""
        refusal = self._guard.refusal(request.url)
        if refusal is not None:
            return Unanswered(None, SetupFault(reason=refusal), "refused")
        started = time.perf_counter()
        try:
            status, headers, body = self._sender.send(request)
        except TransportError as exc:
            if isinstance(exc, TransportTimeout):
                what = f"timed out after {self._timeout_secs:g} s ({host_of(request.url)})"
            else:
                what = str(exc)  # names the host, not the URL (see outbound.transport_error)
            # The platform may have taken it: only a destination that drops a copy it
            # already has (by event id) may be sent it again.
            if exc.maybe_sent and not self._destination.dedupes_on_event_id:
                return Unanswered(None, Reject(reason=unanswered_reason(self.name, what)), "error")
            return Unanswered(None, Retry(after_secs=None, reason=what), "error")
        finally:
            self._last_request_at = self._clock.monotonic()
            elapsed = time.perf_counter() - started
            self._metrics.request_seconds.labels(self.name).observe(elapsed)
        if 300 <= status < 400:
            target = host_of(headers.get("location", "")) if headers.get("location") else "?"
            reason = (f"HTTP {status}: redirect (to host {target}) not followed; "
                      "set the endpoint to the final URL")  # fmt: skip
            return Unanswered(status, SetupFault(reason=reason), "setup")
        return Answered(status, headers, body)

    # -- waiting ------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def pace(self) -> None:
        """Wait until the destination's least interval since the last request has passed."""
        interval = self._destination.min_interval_secs
        if interval > 0 and self._last_request_at is not None:
            wait = self._last_request_at + interval - self._clock.monotonic()
            if wait > 0:
                self.wait(wait)

    def wait(self, secs: float) -> None:
        """Sleep; raises ``Stopped`` when the runner was stopped meanwhile."""
        self._sleep(secs)
        if self._stop.is_set():
            raise Stopped


class _Unreadable(Exception):
    """The destination's ``read`` raised on an answer."""

    def __init__(self, status: int, error: Exception) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = f"{type(error).__name__}: {error}"


def unbuildable(exc: BaseException) -> str:
    """The reason given for events whose request cannot be built."""
    return f"the request could not be built: {type(exc).__name__}: {exc}"[:REASON_CHARS]


def _label(outcome: Outcome) -> str:
    """The ``outcome`` label of ``convtrack_deliver_attempts_total`` for a read answer."""
    match outcome:
        case Delivered():
            return "delivered"
        case RetryPartial():
            return "partial"
        case Throttled():
            return "throttled"
        case Retry():
            return "retry"
        case SetupFault():
            return "setup"
        case Reject():
            return "rejected"
        case _:
            assert_never(outcome)
