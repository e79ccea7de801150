"""Wiring of the deliver role: one runner per configured destination, sharing alerts."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from convtrack.clock import Clock
from convtrack.config import Settings
from convtrack.deliver.alerts import AlertChannel, Alerts
from convtrack.deliver.base import Destination
from convtrack.deliver.destinations import DestinationSettings, create_destination
from convtrack.deliver.destinations.slack.settings import SlackSettings
from convtrack.deliver.outbound import EndpointGuard
from convtrack.deliver.runner import DeliveryRunner
from convtrack.errors import ConfigError
from convtrack.log.base import EventLog
from convtrack.observe.metrics import Metrics
from convtrack.store.deadletters.base import DeadLetterStore
from convtrack.store.quarantine.base import QuarantineStore


def build_deliveries(
    settings: Settings,
    *,
    processed: EventLog,
    deadletters: DeadLetterStore,
    clock: Clock,
    metrics: Metrics,
    environ: Mapping[str, str],
    sleep: Callable[[float], None] | None = None,
    quarantine: QuarantineStore | None = None,
) -> list[DeliveryRunner]:
    """The runners, not started. Every destination's credentials and endpoint are checked
    first, so a missing secret or a refused endpoint fails the start before any thread runs."""
    destinations = [(d, create_destination(d, environ)) for d in settings.destinations]
    guards = {d.name: check_endpoint(d) for d, _ in destinations}
    alerts = Alerts(metrics.deliver.set_alert)
    return [
        DeliveryRunner(
            destination=destination,
            settings=d,
            consumer=processed.consumer(f"deliver-{d.name}"),
            deadletters=deadletters,
            clock=clock,
            metrics=metrics,
            sleep=sleep,
            default_granted=settings.consent.default_granted,
            deadletter_limits=settings.deadletters,
            alerts=alerts,
            outbox=alerts.outbox(d.name) if sends_alerts(d, destination) else None,
            guard=guards[d.name],
            quarantine=quarantine,
            stall_secs=settings.process.stall_secs,
        )
        for d, destination in destinations
    ]


def check_destinations(settings: Settings, environ: Mapping[str, str]) -> None:
    """What ``build_deliveries`` checks first, alone: ``serve`` fails its start on a wrong
    destination even when the deliveries run in a child process (runtime/children.py)."""
    for destination in settings.destinations:
        create_destination(destination, environ)
        check_endpoint(destination)


def check_endpoint(settings: DestinationSettings) -> EndpointGuard:
    """The destination's guard, after refusing a configured endpoint it would refuse."""
    guard = EndpointGuard(allow_private_network=settings.allow_private_network)
    if settings.endpoint:
        refusal = guard.refusal(settings.endpoint)
        if refusal is not None:
            raise ConfigError(f"destination {settings.name}: {refusal}")
    return guard


def sends_alerts(settings: DestinationSettings, destination: Destination) -> bool:
    return (
        isinstance(settings, SlackSettings)
        and settings.alerts
        and isinstance(destination, AlertChannel)
    )
