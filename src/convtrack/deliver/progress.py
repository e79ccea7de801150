"""How far a destination is behind, and whether it is stalled: its lag (the log's,
plus what it read and has not committed) and the time of its last commit."""

from __future__ import annotations

from convtrack.clock import Clock
from convtrack.deliver.dispatch import Dispatcher
from convtrack.deliver.window import CommitWindow
from convtrack.log.base import LogConsumer
from convtrack.observe.metrics import Metrics


class Progress:
    def __init__(
        self, name: str, consumer: LogConsumer, clock: Clock, metrics: Metrics, *,
        stall_secs: float,
    ) -> None:  # fmt: skip
        self.name = name
        self._consumer = consumer
        self._clock = clock
        self._metrics = metrics
        self._stall_secs = stall_secs
        self.lag_events = 0
        self.lag_seconds = 0.0
        self._progress_at = clock.monotonic()  # the last commit, or the last time idle

    def committed(self) -> None:
        self._progress_at = self._clock.monotonic()

    def update_lag(self, window: CommitWindow) -> None:
        lag = self._consumer.lag()
        uncommitted = window.uncommitted()
        self.lag_events = lag.events + len(uncommitted)
        self.lag_seconds = lag.seconds
        if uncommitted:
            oldest = (self._clock.now_us() - uncommitted[0].logged_at_us) / 1e6
            self.lag_seconds = max(self.lag_seconds, oldest)
        self._metrics.deliver.lag_events.labels(self.name).set(self.lag_events)
        self._metrics.deliver.lag_seconds.labels(self.name).set(self.lag_seconds)

    def health(
        self, dispatcher: Dispatcher, window: CommitWindow, dead_letters: int
    ) -> dict[str, object]:
        """For ``/readyz`` (cheap: no I/O)."""
        circuit = dispatcher.circuit()
        paused = dispatcher.paused
        detail = dispatcher.pause_reason if paused else None
        if detail is None and circuit != "closed":
            detail = f"circuit {circuit}"
        if self.lag_events == 0:
            self._progress_at = self._clock.monotonic()  # idle is not stalled
        idle_secs = self._clock.monotonic() - self._progress_at
        stalled = self.lag_events > 0 and idle_secs >= self._stall_secs
        self._metrics.stage_stalled.labels(f"deliver-{self.name}").set(1 if stalled else 0)
        if stalled:
            why = detail or dispatcher.last_error or "no error"
            detail = (
                f"stalled: nothing committed for {idle_secs:.0f} s with "
                f"{self.lag_events} events waiting ({why})"
            )
        return {
            "healthy": not paused
            and circuit == "closed"
            and dispatcher.last_error is None
            and not stalled,
            "detail": detail or dispatcher.last_error or "ok",
            "stalled": stalled,
            "paused": paused,
            "circuit": circuit,
            "last_error": dispatcher.last_error,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "buffered_events": window.buffered_events(),
            "requests_in_flight": window.running(),
            "dead_letters": dead_letters,
        }
