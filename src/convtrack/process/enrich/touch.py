"""The campaign touch of one event: where the visit came from, and its click ids.

Pure: everything comes from the event's ``context`` and merged ``click_ids``
(the validator merges ``context.click_ids`` and top-level ``click_ids``),
and the event time. Each field takes the first of:

1. ``context.campaign`` (``source``, ``medium``, ``name``, ``term``,
   ``content``) and the ``click_ids`` argument;
2. the query string of ``context.page_url`` (``utm_*`` and every click-id
   name), then its ``#`` fragment (some sites put ``#utm_source=...`` there,
   or ``#/route?utm_source=...``). Names are matched case-insensitively,
   values are percent-decoded with "+" as a space, and of repeated
   parameters the first non-empty one wins. A URL that cannot be parsed
   gives nothing; nothing here raises.

Source and medium: the UTM ones when either is given (the other then comes
from the click id's network, else "(not set)"); else the network of the
first click id (gclid, gbraid, wbraid: google/cpc; fbclid: facebook/paid;
ttclid: tiktok/paid; li_fat_id: linkedin/paid; msclkid: bing/cpc); else the
referrer's class (``referrer.py``); else "(direct)"/"(none)", the only case
where ``direct`` is true. ``fbc`` and ``fbp`` are Meta's cookies, not a
click: alone they say nothing of the source. When an ``fbclid`` arrives
without an ``fbc``, Meta's own form is built: ``fb.1.<event ms>.<fbclid>``,
the fbclid exactly as received.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from convtrack.process.enrich.referrer import classify_referrer, split_url

CLICK_ID_NAMES = (
    "gclid", "gbraid", "wbraid", "fbclid", "fbc", "fbp", "ttclid", "li_fat_id", "msclkid",
)  # fmt: skip
CLICK_NETWORKS: tuple[tuple[str, str, str], ...] = (
    ("gclid", "google", "cpc"),
    ("gbraid", "google", "cpc"),
    ("wbraid", "google", "cpc"),
    ("fbclid", "facebook", "paid"),
    ("ttclid", "tiktok", "paid"),
    ("li_fat_id", "linkedin", "paid"),
    ("msclkid", "bing", "cpc"),
)
UTM_NAMES = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")
URL_PARAMETERS = frozenset(UTM_NAMES + CLICK_ID_NAMES)
DIRECT_SOURCE = "(direct)"
DIRECT_MEDIUM = "(none)"
NOT_SET = "(not set)"
CACHE_SIZE = 4096
MAX_CACHED_URL_CHARS = 2048


class Touch(msgspec.Struct, frozen=True, kw_only=True):
    """One campaign touch. ``campaign_id`` is ``utm_id``; ``at_us`` the event's time."""

    source: str
    medium: str
    campaign: str | None = None
    campaign_id: str | None = None
    term: str | None = None
    content: str | None = None
    click_ids: dict[str, str] = msgspec.field(default_factory=dict)
    at_us: int
    direct: bool = False


class PageFacts(msgspec.Struct, frozen=True):
    """What a page URL says: its host (lower case) and its known parameters."""

    host: str | None
    parameters: Mapping[str, str]  # shared by the cache: read only


NO_PAGE = PageFacts(None, {})


def touch_from(context: Mapping[str, Any], click_ids: Mapping[str, str], at_us: int) -> Touch:
    """The touch of an event with ``context`` and merged ``click_ids``, at ``at_us``."""
    raw_campaign = context.get("campaign")
    campaign: Mapping[str, Any] = raw_campaign if isinstance(raw_campaign, dict) else {}
    page = page_facts(context.get("page_url"))
    url = page.parameters

    ids: dict[str, str] = {}
    if click_ids or url:
        for name in CLICK_ID_NAMES:
            value = click_ids.get(name)
            if isinstance(value, str) and value.strip():
                ids[name] = value
            elif name in url:
                ids[name] = url[name]
        if "fbclid" in ids and "fbc" not in ids:
            ids["fbc"] = f"fb.1.{at_us // 1000}.{ids['fbclid']}"

    source = _text(campaign.get("source")) or url.get("utm_source")
    medium = _text(campaign.get("medium")) or url.get("utm_medium")
    network = next(((s, m) for name, s, m in CLICK_NETWORKS if name in ids), None)
    direct = False
    if source or medium:
        source = source or (network[0] if network else NOT_SET)
        medium = medium or (network[1] if network else NOT_SET)
    elif network is not None:
        source, medium = network
    else:
        referrer = context.get("referrer")
        classified = classify_referrer(referrer if isinstance(referrer, str) else None, page.host)
        if classified is not None:
            source, medium = classified
        else:
            source, medium, direct = DIRECT_SOURCE, DIRECT_MEDIUM, True
    return Touch(
        source=source,
        medium=medium,
        campaign=_text(campaign.get("name")) or url.get("utm_campaign"),
        campaign_id=url.get("utm_id"),
        term=_text(campaign.get("term")) or url.get("utm_term"),
        content=_text(campaign.get("content")) or url.get("utm_content"),
        click_ids=ids,
        at_us=at_us,
        direct=direct,
    )


def page_facts(page_url: object) -> PageFacts:
    """The host and the UTM and click-id parameters of ``page_url`` (never raises)."""
    if not isinstance(page_url, str) or not page_url:
        return NO_PAGE
    if len(page_url) > MAX_CACHED_URL_CHARS:
        return _page_facts(page_url)
    return _page_facts_cached(page_url)


@lru_cache(maxsize=CACHE_SIZE)
def _page_facts_cached(page_url: str) -> PageFacts:
    return _page_facts(page_url)


def _page_facts(page_url: str) -> PageFacts:
    parts = split_url(page_url)
    if parts is None:
        return NO_PAGE
    found: dict[str, str] = {}
    fragment = parts.fragment
    for query in (parts.query, fragment.partition("?")[2] if "?" in fragment else fragment):
        if "=" not in query:
            continue
        for key, value in parse_qsl(query):
            name = key.strip().lower()
            if name in URL_PARAMETERS and name not in found and value.strip():
                found[name] = value if name in CLICK_ID_NAMES else value.strip()
    host = (parts.hostname or "").rstrip(".") or None
    return PageFacts(host, found)


def _text(value: object) -> str | None:
    """A campaign field as text: strings stripped, numbers as written, anything else None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # tuple: no union per call
        return str(value)
    return None
