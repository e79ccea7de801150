"""Enrichment: what an event's context says about its device, country and campaign.

Small pure functions, each on maintained offline data, each cached because
the same inputs repeat from event to event:

- ``useragent.classify``: desktop, mobile, tablet, bot or other
  (ua-parser's uap-core rules and the crawler-user-agents list);
- ``geo.country_of``: ISO 3166-1 alpha-2 country of an IP, "ZZ" when unknown
  (iptocc's Regional Internet Registry data, no network);
- ``touch.touch_from``: source, medium, UTM fields and click ids of an event
  (its campaign, page URL and referrer; Snowplow's referer list).

``ENRICHERS`` is the one registry of the stateless enrichers the enrich step
(``convtrack.process.steps.EnrichStep``) runs, in order: each reads the
envelope and sets its fields of the stage's ``Enriched``, and a failing one
leaves its fields at their unknown defaults. The session step, which is
stateful, runs before them and uses ``touch_from``; the campaign it
attributes is in ``Enriched.campaign_id`` when the enrichers start.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from convtrack.model.event import Envelope, text
from convtrack.process.base import Enriched
from convtrack.process.enrich.geo import country_of
from convtrack.process.enrich.touch import Touch, touch_from
from convtrack.process.enrich.useragent import DeviceClass, classify
from convtrack.store.hot.base import NO_CAMPAIGN

__all__ = [
    "ENRICHERS",
    "DeviceClass",
    "Enricher",
    "Touch",
    "classify",
    "country_of",
    "enrich_campaign",
    "enrich_country",
    "enrich_device",
    "enrich_event_date",
    "touch_from",
    "utc_date",
]

# The same alias as convtrack.process.steps.Enricher, declared here so that
# steps may import this package without an import cycle.
Enricher = Callable[[Envelope, Enriched], None]


def utc_date(epoch_us: int) -> str:
    return _date_of_day(epoch_us // 86_400_000_000)


@lru_cache(maxsize=4096)
def _date_of_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def enrich_campaign(envelope: Envelope, enriched: Enriched) -> None:
    """The event's own campaign, else the one its session attributed, else none."""
    enriched.campaign_id = envelope.campaign_id or enriched.campaign_id or NO_CAMPAIGN


def enrich_event_date(envelope: Envelope, enriched: Enriched) -> None:
    """The UTC date of the event's time: the day it is counted and stored under."""
    enriched.event_date = utc_date(envelope.event_time_us)


def enrich_device(envelope: Envelope, enriched: Enriched) -> None:
    """Device type and bot flag of the end user: Segment's ``context.userAgent``, else
    ``context.user_agent``, else ``user.user_agent``.

    ``userAgent`` comes first because only a sender sets it: the collector fills
    ``context.user_agent`` with the request's own when a write key sent the event,
    which for a Segment library on a backend is the library's, not its user's."""
    context = envelope.context
    user_agent = (
        text(context.get("userAgent"))
        or text(context.get("user_agent"))
        or text(envelope.user.get("user_agent"))
    )
    device = classify(user_agent)
    enriched.device_type = device.device_type
    enriched.is_bot = device.is_bot


def enrich_country(envelope: Envelope, enriched: Enriched) -> None:
    """Country code from ``context.ip``, else ``user.client_ip``."""
    enriched.country_code = country_of(
        text(envelope.context.get("ip")) or text(envelope.user.get("client_ip"))
    )


ENRICHERS: tuple[Enricher, ...] = (
    enrich_campaign,
    enrich_event_date,
    enrich_device,
    enrich_country,
)
