"""Classify a User-Agent string: desktop, mobile, tablet, bot or other.

Two maintained data sets do the work. ``ua-parser`` (the uap-core rules,
refreshed monthly as ``ua-parser-builtins``) names the device and OS; its
``Spider`` device family marks the bots it knows. The crawler list of
``crawler-user-agents`` (monperrus/crawler-user-agents) adds the rest:
HTTP libraries, scrapers, monitors, AI crawlers. Its 1,500 patterns run in
``ua-parser-rs``'s Rust regex set (the accelerator that ua-parser's own
``regex`` resolver uses), which takes microseconds where Python's ``re``
takes a quarter of a millisecond; a test holds the two to the same verdicts.

Bots are judged on the end user's user agent (``context.user_agent``, which
the collector fills with the request's own when a browser sent it). The list
calls HTTP libraries and command-line clients (curl, python-requests, ...)
crawlers; here they are not bots but a person's or a backend's tool: a
conversion sent with curl, or by a shop's backend through an SDK, is counted.
So their entries are carved out of the list by name (``CLIENT_LIBRARY_PATTERNS``,
a test holds each to the list), and a user agent that *is* such a client (its
first product is one: ``_HTTP_CLIENT``) is "other". Crawlers built on them
("MyBot/1.0 python-requests/2.31") stay bots: the list or ua-parser's
``Spider`` catches their own name first. Headless and automated browsers
(HeadlessChrome, Lighthouse, PhantomJS, Puppeteer, Playwright, Selenium,
Cypress) are bots.

The rules beyond the data, in order: TVs, consoles and headsets are
"other"; iPad, Kindle and Android browsers without "Mobile" are tablets;
"Mobi", phones and phone OSes are mobile; Windows, macOS, Linux desktops
and ChromeOS are desktop; anything else is "other". An iPad in Safari's
default desktop mode sends a Mac user agent and counts as desktop: no
user-agent rule can tell them apart (its web views add "Mobile/", which
gives them away as tablets).

Pure, thread-safe, cached: the same strings repeat from event to event.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Literal

import msgspec
import ua_parser
import ua_parser_rs

DeviceType = Literal["desktop", "mobile", "tablet", "bot", "other"]

CACHE_SIZE = 8192
# Longer strings are classified without the cache, so hostile ones cannot fill memory.
MAX_CACHED_CHARS = 1024


class DeviceClass(msgspec.Struct, frozen=True):
    device_type: DeviceType
    is_bot: bool


BOT = DeviceClass("bot", True)
DESKTOP = DeviceClass("desktop", False)
MOBILE = DeviceClass("mobile", False)
TABLET = DeviceClass("tablet", False)
OTHER = DeviceClass("other", False)

# Entries of the crawler list (its exact patterns) that name an HTTP library or a
# command-line client, not a crawler. Its other "http-library" entries are crawler
# frameworks and scrapers (Scrapy, colly, crawler4j, HTTrack, ...): those stay.
CLIENT_LIBRARY_PATTERNS = frozenset(
    {
        "^curl", "[wW]get", "Python-urllib", "python-requests", "aiohttp", "httpx",
        "libwww-perl", "lwp-trivial", "Go-http-client", "okhttp", "^Apache-HttpClient",
        "AHC\\/", "HttpUrlConnection", "Jetty", "AnyEvent", "axios", "node-fetch",
        "sindresorhus\\/got", "^HTTPie\\/", "^PHP-Curl-Class", "http_get",
        "CustomAsyncHttpClient",
    }
)  # fmt: skip
# A user agent whose first product is an HTTP library, a CLI client, a runtime's
# default or an analytics SDK (Segment's, RudderStack's, ours).
_HTTP_CLIENT = re.compile(
    r"^(?:curl|[Ww]get|python-requests|Python-urllib|Python(?:/[\d.]+)? aiohttp|aiohttp"
    r"|python-httpx|httpx|Go-http-client|okhttp|Java|Java-http-client|Apache-HttpClient"
    r"|AHC|Jetty|ReactorNetty|node-fetch|axios|undici|node|Node\.js|Deno|Bun|got"
    r"|libwww-perl|lwp-trivial|LWP::Simple|HTTPie|PHP-Curl-Class|GuzzleHttp|PHP|Faraday"
    r"|Ruby|rest-client|Dart|reqwest|hyper|RestSharp|WindowsPowerShell|PowerShell"
    r"|analytics-[\w.-]+|@segment/[\w.-]+|rudder[\w.-]*|RudderLabs[\w.-]*|convtrack[\w.-]*)"
    r"(?:[/\s(;]|$)"
    r"|PowerShell/"  # PowerShell's Invoke-WebRequest: "Mozilla/5.0 (Windows NT ...) PowerShell/7"
)
# A crawler that names itself after its library ("python-requests/2.31 ExampleBot/1.0").
_BOT_WORDS = re.compile(r"bot\b|crawl|spider|scrap", re.IGNORECASE)
# An app's own runtime beside its HTTP library: a person's phone, classed as one.
_APP_RUNTIME = re.compile(r"Dalvik/|CFNetwork/")
# Automated browsers the list does not name (or names only in other spellings).
_AUTOMATED = re.compile(r"Lighthouse|Cypress/|PTST/|Headless|SlimerJS|Puppeteer|Playwright")

_NOT_PERSONAL = re.compile(
    r"SMART-?TV|SmartTV|Google ?TV|Android ?TV|Apple ?TV|HbbTV|CrKey|BRAVIA|Tizen|Web0S"
    r"|NetCast|Roku|PlayStation|Xbox|Nintendo|Oculus|\bQuest\b|\bTV\b|;\s*AFT[A-Z0-9]+[;) ]"
)
_TABLET_FAMILIES = frozenset(
    {"iPad", "Generic Tablet", "BlackBerry Playbook", "HP TouchPad", "Microsoft Surface RT"}
)
_MOBILE_FAMILIES = frozenset(
    {"iPhone", "iPod", "iOS-Device", "Generic Smartphone", "Generic Feature Phone"}
)
_TABLET_TOKENS = re.compile(r"iPad|PlayBook|Kindle|Silk/")
_BROWSER_ENGINE = re.compile(r"AppleWebKit/|Gecko/|Presto/|Trident/")
_MOBILE_TOKENS = re.compile(r"Mobi|iPhone|iPod|Opera Mini|Windows Phone|BlackBerry|KAIOS|Dalvik/")
_DESKTOP_TOKENS = re.compile(r"Windows NT|Macintosh|X11|CrOS")
_MOBILE_OS = frozenset(
    {
        "iOS", "Android", "Windows Phone", "Windows Mobile", "BlackBerry OS", "KaiOS",
        "Firefox OS", "Symbian OS", "Symbian^3", "Nokia Series 40", "Nokia Series 30 Plus",
    }
)  # fmt: skip
_DESKTOP_OS = frozenset(
    {
        "Windows", "Mac OS X", "Mac OS", "Chrome OS", "Linux", "Ubuntu", "Debian", "Fedora",
        "Red Hat", "FreeBSD", "OpenBSD", "NetBSD", "Solaris", "Gentoo",
    }
)  # fmt: skip


def classify(user_agent: str | None) -> DeviceClass:
    """The device class of ``user_agent``; a missing or blank one is "other", not a bot."""
    if not user_agent:
        return OTHER
    if len(user_agent) > MAX_CACHED_CHARS:
        return _classify(user_agent)
    return _classify_cached(user_agent)


@lru_cache(maxsize=CACHE_SIZE)
def _classify_cached(user_agent: str) -> DeviceClass:
    return _classify(user_agent)


def _classify(user_agent: str) -> DeviceClass:
    ua = user_agent.strip()
    if not ua:
        return OTHER
    if is_crawler(ua) or _AUTOMATED.search(ua):
        return BOT
    if _HTTP_CLIENT.search(ua) and not _APP_RUNTIME.search(ua):
        # A tool or a backend, not a bot: counted. Unless it names itself a crawler.
        return BOT if _BOT_WORDS.search(ua) else OTHER
    device = ua_parser.parse_device(ua)
    family = device.family if device is not None else ""
    brand = device.brand if device is not None else None
    if family == "Spider":
        return BOT
    if _NOT_PERSONAL.search(ua):
        return OTHER
    if family in _TABLET_FAMILIES or brand == "Generic_Android_Tablet":
        return TABLET
    if family.startswith("Kindle") or _TABLET_TOKENS.search(ua):
        return TABLET
    if family == "Mac" and "Mobile/" in ua:
        return TABLET  # an iPad web view asking for desktop pages: no Mac says "Mobile/"
    if family in _MOBILE_FAMILIES:
        return MOBILE
    android = "Android" in ua
    if android and "Mobile" not in ua and _BROWSER_ENGINE.search(ua):
        return TABLET  # Android browsers leave "Mobile" out on tablets
    if android or _MOBILE_TOKENS.search(ua):
        return MOBILE
    if family == "Mac" or _DESKTOP_TOKENS.search(ua):
        return DESKTOP
    os = ua_parser.parse_os(ua)
    os_family = os.family if os is not None else ""
    if os_family in _MOBILE_OS:
        return MOBILE
    if os_family in _DESKTOP_OS or os_family.startswith("Windows"):
        return DESKTOP
    return OTHER


_crawlers: ua_parser_rs.UserAgentExtractor | None = None
_crawlers_lock = threading.Lock()


def _crawler_set() -> ua_parser_rs.UserAgentExtractor:
    global _crawlers
    if _crawlers is None:
        with _crawlers_lock:
            if _crawlers is None:
                _crawlers = ua_parser_rs.UserAgentExtractor(
                    (pattern, "bot", None, None, None, None) for pattern in crawler_patterns()
                )
    return _crawlers


def crawler_patterns() -> list[str]:
    """The regular expressions of the crawler-user-agents list (case-sensitive), but
    those of ``CLIENT_LIBRARY_PATTERNS``."""
    import crawleruseragents  # type: ignore[import-untyped]

    return [
        str(entry["pattern"])
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        if entry["pattern"] not in CLIENT_LIBRARY_PATTERNS
    ]


def is_crawler(user_agent: str) -> bool:
    """True when a crawler pattern (the list, HTTP libraries carved out) matches ``user_agent``."""
    return _crawler_set().extract(user_agent) is not None
