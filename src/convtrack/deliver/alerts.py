"""Operator alerts from the delivery runners, raised and cleared by key.

An alert is a structured log warning, a gauge set to 1 while it holds, and a
message to every Slack destination with ``alerts = true``. Messages are best
effort: each Slack runner's ``AlertPoster`` takes them from its outbox between
batches, paced like its other requests (the destination's ``Exchange``), one
attempt each, never dead-lettered.

The Slack destination offers ``alert_request(text, now_us)``; it is reached
through the ``AlertChannel`` protocol so this module does not import it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from convtrack.clock import Clock
from convtrack.deliver.base import OutboundRequest
from convtrack.deliver.exchange import Exchange, Unanswered

log = logging.getLogger("convtrack.deliver.alerts")
_delivery_log = logging.getLogger("convtrack.deliver")  # where alert_not_sent has been logged

OUTBOX_LIMIT = 100  # a flapping destination must not queue messages without end

# An alert's kind names its gauge: convtrack_deliver_paused, _circuit_open, _dead_letters_alert.
PAUSED = "paused"
CIRCUIT_OPEN = "circuit_open"
DEAD_LETTERS = "dead_letters"

GaugeSetter = Callable[[str, str, float], None]  # (kind, destination, value)


@runtime_checkable
class AlertChannel(Protocol):
    def alert_request(self, text: str, now_us: int) -> OutboundRequest: ...


class Outbox:
    """Messages waiting for one Slack destination's runner (thread-safe)."""

    def __init__(self) -> None:
        self._messages: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._lock = threading.Lock()

    def put(self, text: str) -> None:
        with self._lock:
            self._messages.append(text)

    def take(self) -> str | None:
        with self._lock:
            return self._messages.popleft() if self._messages else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)


class Alerts:
    """The active alerts of this process's runners; shared by them (thread-safe)."""

    def __init__(self, set_gauge: GaugeSetter | None = None) -> None:
        self._set_gauge = set_gauge
        self._active: dict[tuple[str, str], str] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._lock = threading.Lock()

    def outbox(self, destination: str) -> Outbox:
        """Subscribe a Slack destination: alerts are queued for its runner to send."""
        with self._lock:
            return self._outboxes.setdefault(destination, Outbox())

    def active(self) -> dict[tuple[str, str], str]:
        with self._lock:
            return dict(self._active)

    def raise_(self, kind: str, destination: str, text: str) -> None:
        """Raise (or update the text of) an alert; messages go out only when it is new."""
        with self._lock:
            new = (kind, destination) not in self._active
            self._active[(kind, destination)] = text
            outboxes = list(self._outboxes.items()) if new else []
        if self._set_gauge is not None:
            self._set_gauge(kind, destination, 1.0)
        if new:
            log.warning("alert_raised", extra={"alert": kind, "destination": destination,
                                               "detail": text})  # fmt: skip
            for name, box in outboxes:
                if name != destination or kind == DEAD_LETTERS:
                    box.put(f":rotating_light: convtrack {destination}: {text}")

    def clear(self, kind: str, destination: str) -> None:
        with self._lock:
            was = self._active.pop((kind, destination), None)
            outboxes = list(self._outboxes.items()) if was is not None else []
        if self._set_gauge is not None:
            self._set_gauge(kind, destination, 0.0)
        if was is not None:
            log.warning("alert_cleared", extra={"alert": kind, "destination": destination})
            for name, box in outboxes:
                if name != destination or kind == DEAD_LETTERS:
                    box.put(f":white_check_mark: convtrack {destination}: resolved ({kind})")


class AlertPoster:
    """Posts the messages queued in one Slack destination's outbox, through its exchange.

    ``blocked`` is that destination's own state (a setup pause or an open circuit:
    seconds until it may send); while it is blocked the messages wait.
    """

    def __init__(
        self,
        *,
        channel: AlertChannel,
        outbox: Outbox,
        exchange: Exchange,
        clock: Clock,
        blocked: Callable[[], float],
    ) -> None:
        self._channel = channel
        self._outbox = outbox
        self._exchange = exchange
        self._clock = clock
        self._blocked = blocked

    def send(self) -> int:
        """Post the queued messages (best effort: one attempt each); returns how many."""
        if self._blocked() > 0:
            return 0
        sent = 0
        while (text := self._outbox.take()) is not None:
            self._exchange.pace()
            answer = self._exchange.send(self._channel.alert_request(text, self._clock.now_us()))
            sent += 1
            status: int | None = answer.status
            if isinstance(answer, Unanswered):
                problem: str | None = answer.outcome.reason
            else:
                problem = None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
            if problem is not None:
                _delivery_log.warning("alert_not_sent", extra={
                    "destination": self._exchange.name, "status": status, "answer": problem,
                })  # fmt: skip
        return sent
