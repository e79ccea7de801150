"""The registered enrichers: device and country from an envelope's context or user."""

from __future__ import annotations

from typing import Any

import pytest

from convtrack.model.event import Envelope
from convtrack.process.base import Enriched
from convtrack.process.enrich import (
    ENRICHERS,
    enrich_campaign,
    enrich_country,
    enrich_device,
    enrich_event_date,
)

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def enriched(context: dict[str, Any] | None = None, user: dict[str, str] | None = None) -> Enriched:
    """What the registry finds in an envelope with ``context`` and ``user``."""
    envelope = Envelope(
        event_id="e1",
        source="web",
        event_name="purchase",
        event_time_us=1_718_000_000_000_000,
        received_at_us=1_718_000_000_000_000,
        user_id="u1",
        context=context or {},
        user=user or {},
    )
    found = Enriched()
    for enricher in ENRICHERS:
        enricher(envelope, found)
    return found


def test_the_registry_holds_the_stateless_enrichers() -> None:
    assert (enrich_campaign, enrich_event_date, enrich_device, enrich_country) == ENRICHERS


def test_context_sets_device_bot_and_country() -> None:
    it = enriched({"user_agent": IPHONE, "ip": "80.128.0.1"})
    assert (it.device_type, it.is_bot, it.country_code) == ("mobile", False, "DE")


def test_user_fields_are_the_fallback() -> None:
    it = enriched(user={"user_agent": GOOGLEBOT, "client_ip": "2001:4860:4860::8888"})
    assert (it.device_type, it.is_bot, it.country_code) == ("bot", True, "US")


def test_context_wins_over_user() -> None:
    it = enriched(
        {"user_agent": WINDOWS, "ip": "8.8.8.8"},
        {"user_agent": GOOGLEBOT, "client_ip": "80.128.0.1"},
    )
    assert (it.device_type, it.is_bot, it.country_code) == ("desktop", False, "US")


@pytest.mark.parametrize("context", [{}, {"user_agent": "", "ip": ""}, {"user_agent": 5, "ip": 7}])
def test_nothing_to_go_on_leaves_the_unknowns(context: dict[str, Any]) -> None:
    it = enriched(context)
    assert (it.device_type, it.is_bot, it.country_code) == ("other", False, "ZZ")
