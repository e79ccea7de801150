"""Slack incoming webhook: a readable message per batch or per conversion, and operator alerts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.slack.config import SlackConfig
from convtrack.deliver.destinations.slack.request import alert_message, conversions_message, post
from convtrack.deliver.destinations.slack.response import read_response
from convtrack.deliver.destinations.slack.settings import SlackSettings

__all__ = ["REGISTRATION", "SlackConfig", "SlackDestination", "create"]

# More conversions than this in one message is no longer something a person reads.
MAX_EVENTS_PER_MESSAGE = 100


class SlackDestination(Destination):
    max_batch_events = MAX_EVENTS_PER_MESSAGE
    ad_platform = False  # a team channel: consent to ad use does not gate it
    dedupes_on_event_id = False  # a message posted twice shows twice
    min_interval_secs = 1.0  # Slack: about one message per second per hook

    def __init__(self, config: SlackConfig) -> None:
        self.name = config.name
        self.alerts = config.alerts
        self.min_interval_secs = config.min_interval_secs
        if config.message_per == "conversion":
            self.max_batch_events = 1
        self._config = config

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        message = conversions_message([e.payload for e in events], self._config.max_lines)
        return post(self._config.url, message)

    def alert_request(self, text: str, now_us: int) -> OutboundRequest:
        """An operator alert (a paused destination, a growing dead-letter store) for this hook."""
        return post(self._config.url, alert_message(self.name, text, now_us))

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(status, headers, body)


def create(settings: SlackSettings, environ: Mapping[str, str]) -> SlackDestination:
    return SlackDestination(SlackConfig.build(settings, environ))


REGISTRATION = DestinationKind(SlackSettings, create)
