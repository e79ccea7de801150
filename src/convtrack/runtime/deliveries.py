"""Wiring of the deliver role: one runner per configured destination."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from convtrack.clock import Clock
from convtrack.config import Settings
from convtrack.deliver.deadletters import DeadLetterStore
from convtrack.deliver.registry import create_destination
from convtrack.deliver.runner import DeliveryRunner
from convtrack.log.base import EventLog
from convtrack.observe.metrics import Metrics


def build_deliveries(
    settings: Settings,
    *,
    processed: EventLog,
    deadletters: DeadLetterStore,
    clock: Clock,
    metrics: Metrics,
    environ: Mapping[str, str],
    sleep: Callable[[float], None] | None = None,
) -> list[DeliveryRunner]:
    """The runners, not started. Every destination's credentials are read first, so a
    missing secret fails the start before any thread runs."""
    destinations = [(d, create_destination(d, environ)) for d in settings.destinations]
    return [
        DeliveryRunner(
            destination=destination,
            settings=d,
            consumer=processed.consumer(f"deliver-{d.name}"),
            deadletters=deadletters,
            clock=clock,
            metrics=metrics,
            sleep=sleep,
        )
        for d, destination in destinations
    ]
