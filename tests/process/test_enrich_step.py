"""The enrich step: registered enrichers in order; a failing one never drops the event."""

from __future__ import annotations

from convtrack.log.base import LogEntry
from convtrack.model.event import Envelope
from convtrack.observe.metrics import Metrics
from convtrack.process.base import Batch, Checked, Enriched, Item
from convtrack.process.enrich import ENRICHERS
from convtrack.process.steps import EnrichStep


def item(**kw: object) -> Item:
    envelope = Envelope(
        event_id="e",
        source="default",
        event_name="Purchase",
        event_time_us=1_796_000_000_000_000,
        received_at_us=1_796_000_000_000_000,
        user_id="u",
        **kw,
    )  # type: ignore[arg-type]
    return Item(entry=LogEntry(0, 0, "k", b"", 0), checked=Checked(envelope, 0))


def test_a_failing_enricher_leaves_its_field_unknown_and_is_counted() -> None:
    def broken_geo(envelope: Envelope, target: Enriched) -> None:
        target.country_code = "X?"  # half done, then fails
        raise ValueError("database unreadable")

    metrics = Metrics()
    one = item(context={"ip": "8.8.8.8"})
    EnrichStep([broken_geo, *ENRICHERS[:2]], metrics).submit(Batch(items=[one], positions={0: 1}))
    assert one.drop_reason is None and one.enriched is not None
    assert one.enriched.campaign_id == "(none)" and one.enriched.event_date == "2026-11-30"
    assert 'convtrack_enrichment_errors_total{enricher="broken_geo"} 1.0' in (
        metrics.render().decode()
    )


def test_the_registry_enriches_device_country_campaign_and_date() -> None:
    one = item(campaign_id="spring", context={"ip": "8.8.8.8", "user_agent": "Googlebot/2.1"})
    curl = item(context={"user_agent": "curl/8.5.0"})
    EnrichStep(ENRICHERS, Metrics()).submit(Batch(items=[one, curl], positions={0: 2}))
    assert one.enriched is not None and curl.enriched is not None
    assert (one.enriched.campaign_id, one.enriched.event_date) == ("spring", "2026-11-30")
    assert (one.enriched.country_code, one.enriched.is_bot) == ("US", True)
    assert (curl.enriched.device_type, curl.enriched.is_bot) == ("other", False)  # a tool


def test_segments_context_user_agent_is_the_end_users() -> None:
    # A Segment library on a backend, with a write key: the collector filled user_agent
    # with the library's own; the end user's is in userAgent.
    googlebot = "Googlebot/2.1 (+http://www.google.com/bot.html)"
    crawler = item(context={"user_agent": "analytics-node-next/latest", "userAgent": googlebot})
    phone = item(context={"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)"})
    library = item(context={"user_agent": "analytics-python/2.4.0"})
    EnrichStep(ENRICHERS, Metrics()).submit(Batch(items=[crawler, phone, library], positions={}))
    bot, mobile, other = crawler.enriched, phone.enriched, library.enriched
    assert bot is not None and mobile is not None and other is not None
    assert (bot.device_type, bot.is_bot) == ("bot", True)
    assert (mobile.device_type, mobile.is_bot) == ("mobile", False)
    assert (other.device_type, other.is_bot) == ("other", False)
