"""Device classes of real user agents, and the crawler list's fast matcher."""

from __future__ import annotations

import re

import pytest

from convtrack.process.enrich import useragent
from convtrack.process.enrich.useragent import DeviceClass, classify, is_crawler

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD_SAFARI = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD_WEBVIEW_DESKTOP_MODE = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
ANDROID_CHROME_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.6422.165 Mobile Safari/537.36"
)
ANDROID_CHROME_REDUCED_PHONE = (  # Chrome's reduced user agent: model "K"
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
)
ANDROID_WEBVIEW_PHONE = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/125.0.0.0 Mobile Safari/537.36"
)
SAMSUNG_TAB_S7 = (
    "Mozilla/5.0 (Linux; Android 11; SM-T870) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/112.0.0.0 Safari/537.36"
)
SAMSUNG_TAB_S9_SAMSUNG_BROWSER = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36"
)
PIXEL_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; Pixel Tablet) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
)
FIREFOX_ANDROID_TABLET = "Mozilla/5.0 (Android 14; Tablet; rv:126.0) Gecko/126.0 Firefox/126.0"
FIREFOX_ANDROID_PHONE = "Mozilla/5.0 (Android 14; Mobile; rv:126.0) Gecko/126.0 Firefox/126.0"
KINDLE_FIRE_SILK = (
    "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Silk/124.2.1 like Chrome/124.0.6367.118 Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
)
WINDOWS_EDGE = WINDOWS_CHROME + " Edg/125.0.0.0"
WINDOWS_FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0"
MACOS_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
UBUNTU_FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
CHROMEOS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"
)
FACEBOOK_IN_APP_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.38.108;FBBV/618470498;"
    "FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
)
WINDOWS_PHONE = (
    "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.14977"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_DESKTOP = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html) Chrome/125.0.6422.141 Safari/537.36"
)
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.6422.141 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
BINGBOT = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
)
FACEBOOK_PREVIEW = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
GPTBOT = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot"
)
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) HeadlessChrome/125.0.0.0 Safari/537.36"
)
SAMSUNG_SMART_TV = (
    "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36"
)
FIRE_TV = (
    "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Silk/98.6.10 like Chrome/98.0.4758.136 Safari/537.36"
)
SONY_BRAVIA = (
    "Mozilla/5.0 (Linux; Android 12; BRAVIA 4K VH2 Build/STT2.230228.001) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/111.0.5563.116 Safari/537.36"
)
PLAYSTATION_5 = (
    "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/13.0 Safari/605.1.15"
)

BROWSERS = {
    IPHONE_SAFARI: "mobile",
    ANDROID_CHROME_PHONE: "mobile",
    ANDROID_CHROME_REDUCED_PHONE: "mobile",
    ANDROID_WEBVIEW_PHONE: "mobile",
    FIREFOX_ANDROID_PHONE: "mobile",
    FACEBOOK_IN_APP_IPHONE: "mobile",
    WINDOWS_PHONE: "mobile",
    IPAD_SAFARI: "tablet",
    IPAD_WEBVIEW_DESKTOP_MODE: "tablet",
    SAMSUNG_TAB_S7: "tablet",
    SAMSUNG_TAB_S9_SAMSUNG_BROWSER: "tablet",
    PIXEL_TABLET: "tablet",
    FIREFOX_ANDROID_TABLET: "tablet",
    KINDLE_FIRE_SILK: "tablet",
    WINDOWS_CHROME: "desktop",
    WINDOWS_EDGE: "desktop",
    WINDOWS_FIREFOX: "desktop",
    MACOS_SAFARI: "desktop",
    UBUNTU_FIREFOX: "desktop",
    CHROMEOS: "desktop",
    SAMSUNG_SMART_TV: "other",
    FIRE_TV: "other",
    SONY_BRAVIA: "other",
    PLAYSTATION_5: "other",
}
BOTS = [
    GOOGLEBOT,
    GOOGLEBOT_DESKTOP,
    GOOGLEBOT_SMARTPHONE,
    BINGBOT,
    FACEBOOK_PREVIEW,
    GPTBOT,
    HEADLESS_CHROME,
    # Headless and automated browsers, and audits.
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) "
    "PhantomJS/2.1.1 Safari/538.1",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Lighthouse",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Cypress/13.11.0 Chrome/118.0.5993.159 Electron/27.3.10 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36 Puppeteer",
    "Playwright/1.44.1",
    "Selenium/4.21.0 (python linux)",
    # Crawlers and scrapers, including those built on an HTTP library.
    "Scrapy/2.11.2 (+https://scrapy.org)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "MyShopCrawler/1.0 python-requests/2.32.3",
    "python-requests/2.31.0 (compatible; ExampleBot/1.0; +https://example.com/bot)",
    "Go-http-client/1.1 (site-crawler)",
    "amibot - http://www.amidalla.de - tech@amidalla.com libwww-perl/5.831",
    "colly - https://github.com/gocolly/colly",
    "Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)",
]
# HTTP libraries, command-line clients and analytics SDKs: someone's tool or backend,
# not a crawler. The crawler list calls most of them crawlers; they are counted here.
HTTP_CLIENTS = [
    "curl/8.5.0",
    "curl/7.88.1",
    "Wget/1.21.4",
    "Wget/1.14 (linux-gnu)",
    "python-requests/2.32.3",
    "Python-urllib/3.12",
    "Python/3.12 aiohttp/3.9.5",
    "python-httpx/0.27.0",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "Java/17.0.9",
    "Java-http-client/21.0.3",
    "Apache-HttpClient/4.5.14 (Java/17.0.11)",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "node-fetch",
    "axios/1.7.2",
    "undici",
    "node",
    "libwww-perl/6.72",
    "HTTPie/3.2.2",
    "Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.22631; en-US) PowerShell/7.4.2",
    "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.22621.2506",
    "GuzzleHttp/7",
    "Ruby",
    "analytics-python/2.4.0",
    "analytics-node-next/latest",
    "analytics-go (version: 3.0.0)",
    "rudder-sdk-python/2.1.9",
    "convtrack-python/0.1.0",
]


@pytest.mark.parametrize(("user_agent", "expected"), BROWSERS.items())
def test_people_get_their_device_type(user_agent: str, expected: str) -> None:
    assert classify(user_agent) == DeviceClass(expected, False)  # type: ignore[arg-type]


@pytest.mark.parametrize("user_agent", BOTS)
def test_crawlers_and_automated_browsers_are_bots(user_agent: str) -> None:
    assert classify(user_agent) == DeviceClass("bot", True)


@pytest.mark.parametrize("user_agent", HTTP_CLIENTS)
def test_http_libraries_cli_clients_and_sdks_are_other_not_bots(user_agent: str) -> None:
    assert classify(user_agent) == DeviceClass("other", False)


def test_an_app_on_a_phone_using_an_http_library_is_mobile() -> None:
    assert classify("okhttp/3.12.1 Dalvik/2.1.0 (Linux; U; Android 11)").device_type == "mobile"


def test_each_carved_out_pattern_is_an_http_library_entry_of_the_list() -> None:
    import crawleruseragents  # type: ignore[import-untyped]

    tags = {e["pattern"]: e["tags"] for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA}
    missing = [p for p in useragent.CLIENT_LIBRARY_PATTERNS if p not in tags]
    assert missing == []  # a renamed entry would quietly make its library a bot again
    assert all("http-library" in tags[p] for p in useragent.CLIENT_LIBRARY_PATTERNS)
    kept = useragent.crawler_patterns()
    assert len(kept) == len(tags) - len(useragent.CLIENT_LIBRARY_PATTERNS)


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_a_missing_user_agent_is_other_not_a_bot(user_agent: str | None) -> None:
    assert classify(user_agent) == DeviceClass("other", False)


def test_an_unknown_string_is_other() -> None:
    assert classify("my-own-thing") == DeviceClass("other", False)


def test_a_huge_user_agent_is_classified_without_the_cache() -> None:
    before = useragent._classify_cached.cache_info().currsize
    huge = WINDOWS_CHROME + " x" * 5000
    assert classify(huge).device_type == "desktop"
    assert useragent._classify_cached.cache_info().currsize == before


def test_repeated_strings_hit_the_cache() -> None:
    classify(MACOS_SAFARI)
    hits = useragent._classify_cached.cache_info().hits
    assert classify(MACOS_SAFARI).device_type == "desktop"
    assert useragent._classify_cached.cache_info().hits == hits + 1


def test_the_fast_matcher_agrees_with_the_crawler_list_on_its_own_examples() -> None:
    import crawleruseragents  # type: ignore[import-untyped]

    examples = [
        instance
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for instance in entry.get("instances", [])
    ]
    assert len(examples) > 1000
    kept = [re.compile(p) for p in useragent.crawler_patterns()]

    def listed(ua: str) -> bool:  # the list's own matching, HTTP libraries carved out
        return any(p.search(ua) for p in kept)

    disagreements = [
        ua for ua in examples + list(BROWSERS) + HTTP_CLIENTS if is_crawler(ua) != listed(ua)
    ]
    assert disagreements == []
    assert sum(is_crawler(ua) for ua in examples) > 1000
    assert not any(is_crawler(ua) for ua in BROWSERS)
    assert not any(is_crawler(ua) for ua in HTTP_CLIENTS)
