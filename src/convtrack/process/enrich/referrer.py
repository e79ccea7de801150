"""Classify a referrer URL: a search engine, a social network, an email provider, or other.

The list is Snowplow's referer list, as shipped by its ``referer-parser``
package (the only one on PyPI that carries it without pulling a network
updater along). Its data dates from 2016, so a few hosts that came later
are added in ``LATER_REFERERS``; the package's entries win where both name
a host. Lookup follows Snowplow's rule: the host with the path, then with
its first path segment, dropping one leading label at a time; then the
bare host the same way.

A referrer is classified as (source, medium): search engines as
(engine, "organic"), social networks as (network, "social"), email
providers as (provider, "email"), with the list's name lower-cased
("google", "facebook", "twitter", "gmail"); any other external site as
(its host without "www.", "referral"). No referrer, one whose scheme is not
a web or app one, or one on the page's own host gives None: the visit is
direct as far as the referrer can tell.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache
from urllib.parse import SplitResult, urlsplit

CACHE_SIZE = 8192
MAX_CACHED_CHARS = 512  # longer referrers skip the cache, so hostile ones cannot fill it

MEDIA = {"search": "organic", "social": "social", "email": "email"}
REFERRAL = "referral"
WEB_SCHEMES = frozenset({"http", "https", "android-app", ""})

# Hosts that appeared after the packaged list's data (2016), in its own shape.
LATER_REFERERS: Mapping[str, tuple[str, str]] = {
    "x.com": ("Twitter", "social"),
    "threads.net": ("Threads", "social"),
    "bsky.app": ("Bluesky", "social"),
    "tiktok.com": ("TikTok", "social"),
    "outlook.live.com": ("Outlook.com", "email"),
    "outlook.office.com": ("Outlook.com", "email"),
    "com.google.android.gm": ("Gmail", "email"),
    "com.google.android.googlequicksearchbox": ("Google", "search"),
}


@cache
def referer_table() -> Mapping[str, tuple[str, str]]:
    """Host (or host and path) to (name, medium), from the package's list plus later hosts."""
    import referer_parser  # type: ignore[import-untyped]

    table = dict(LATER_REFERERS)
    for key, entry in referer_parser.REFERERS.items():
        table[str(key)] = (str(entry["name"]), str(entry["medium"]))
    return table


def split_url(url: str) -> SplitResult | None:
    """``url`` split into parts, "//" put before a scheme-less one; None when invalid."""
    text = url.strip()
    if not text:
        return None
    if "://" not in text[:24] and not text.startswith("//"):
        text = "//" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises for a malformed port
    except ValueError:
        return None
    return parts


def bare_host(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def classify_referrer(referrer: str | None, page_host: str | None) -> tuple[str, str] | None:
    """(source, medium) of ``referrer`` seen from a page on ``page_host``; None: direct."""
    if not referrer:
        return None
    if len(referrer) > MAX_CACHED_CHARS:
        return _classify_url(referrer, page_host)
    return _classify_url_cached(referrer, page_host)


@lru_cache(maxsize=CACHE_SIZE)
def _classify_url_cached(referrer: str, page_host: str | None) -> tuple[str, str] | None:
    return _classify_url(referrer, page_host)


def _classify_url(referrer: str, page_host: str | None) -> tuple[str, str] | None:
    parts = split_url(referrer)
    if parts is None or parts.scheme.lower() not in WEB_SCHEMES:
        return None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return None
    if page_host is not None and bare_host(host) == bare_host(page_host):
        return None
    return _classify(host, parts.path)


def _classify(host: str, path: str) -> tuple[str, str]:
    known = _lookup(referer_table(), host, path)
    if known is not None:
        name, medium = known
        if medium in MEDIA:
            return name.lower(), MEDIA[medium]
    return bare_host(host), REFERRAL


def _lookup(table: Mapping[str, tuple[str, str]], host: str, path: str) -> tuple[str, str] | None:
    segments = path.split("/")
    first = "/" + segments[1] if len(segments) > 1 else ""
    for tails in ((path, first), ("",)):
        suffix = host
        while suffix:
            for tail in tails:
                found = table.get(suffix + tail)
                if found is not None:
                    return found
            _, dot, rest = suffix.partition(".")
            suffix = rest if dot else ""
    return None
