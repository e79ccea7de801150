"""Campaign touches: UTM and click ids from messy URLs, networks, referrers, direct."""

from __future__ import annotations

from typing import Any

import pytest

from convtrack.process.enrich.referrer import classify_referrer
from convtrack.process.enrich.touch import Touch, page_facts, touch_from

AT_US = 1_718_000_000_123_456  # 2024-06-10, event time
AT_MS = AT_US // 1000
PAGE = "https://shop.example.com/landing"
GCLID = "Cj0KCQjw3ZayBhDRARIsAPWzx8oQ_V2k9YQ-E1bGdrBX1b2S3vj4xZzXh0pL6sQ8aAl9BEALw_wcB"
FBCLID = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMEY"


def touch(context: dict[str, Any], click_ids: dict[str, str] | None = None) -> Touch:
    return touch_from(context, click_ids or {}, AT_US)


# --- page URL parsing -------------------------------------------------------------------------


def test_utm_and_click_ids_from_a_clean_url() -> None:
    url = (
        f"{PAGE}?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale"
        f"&utm_term=running+shoes&utm_content=hero&utm_id=cmp-42&gclid={GCLID}"
    )
    t = touch({"page_url": url})
    assert (t.source, t.medium) == ("newsletter", "email")
    assert (t.campaign, t.term, t.content, t.campaign_id) == (
        "spring_sale", "running shoes", "hero", "cmp-42",
    )  # fmt: skip
    assert t.click_ids == {"gclid": GCLID}
    assert t.at_us == AT_US
    assert not t.direct


def test_percent_encoding_and_plus_are_decoded() -> None:
    t = touch({"page_url": f"{PAGE}?utm_campaign=%C3%A9t%C3%A9%202024+promo&utm_source=a%26b"})
    assert t.campaign == "été 2024 promo"
    assert t.source == "a&b"


def test_repeated_parameters_first_non_empty_wins() -> None:
    t = touch({"page_url": f"{PAGE}?gclid=&gclid=first&gclid=second&utm_source=&utm_source=x"})
    assert t.click_ids == {"gclid": "first"}
    assert t.source == "x"


def test_parameter_names_are_case_insensitive_values_are_kept() -> None:
    t = touch({"page_url": f"{PAGE}?UTM_SOURCE=Google&Utm_Medium=CPC&GCLID={GCLID}"})
    assert (t.source, t.medium) == ("Google", "CPC")
    assert t.click_ids == {"gclid": GCLID}


def test_parameters_in_the_fragment() -> None:
    t = touch({"page_url": f"{PAGE}#utm_source=partner&utm_medium=affiliate"})
    assert (t.source, t.medium) == ("partner", "affiliate")
    spa = touch({"page_url": "https://shop.example.com/#/product/7?ttclid=E.C.P.CtgBqE2"})
    assert spa.click_ids == {"ttclid": "E.C.P.CtgBqE2"}
    assert (spa.source, spa.medium) == ("tiktok", "paid")


def test_the_query_wins_over_the_fragment() -> None:
    t = touch({"page_url": f"{PAGE}?utm_source=query#utm_source=fragment&utm_medium=frag"})
    assert (t.source, t.medium) == ("query", "frag")


def test_a_url_without_scheme() -> None:
    t = touch({"page_url": "shop.example.com/landing?msclkid=8f3c9a2b1d&utm_campaign=brand"})
    assert t.click_ids == {"msclkid": "8f3c9a2b1d"}
    assert (t.source, t.medium, t.campaign) == ("bing", "cpc", "brand")
    assert page_facts("shop.example.com/landing?x=1").host == "shop.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/?gclid=abc",  # unbalanced IPv6 bracket
        "https://shop.example.com:99999/?gclid=abc",  # port out of range
        "https://shop.example.com:port/?gclid=abc",
        "",
        "   ",
        "?",
        "#",
        "?&&=&utm_source",
        "https://shop.example.com/?%%%=%zz&gclid",
    ],
)
def test_invalid_urls_give_nothing_and_never_raise(url: str) -> None:
    t = touch({"page_url": url})
    assert t.click_ids == {}
    assert (t.source, t.medium, t.direct) == ("(direct)", "(none)", True)


def test_non_string_fields_are_ignored() -> None:
    t = touch({"page_url": 42, "referrer": ["x"], "campaign": "not a map"})
    assert (t.source, t.medium, t.direct) == ("(direct)", "(none)", True)


def test_unrelated_parameters_are_ignored() -> None:
    assert page_facts(f"{PAGE}?q=shoes&page=2&gclid=abc").parameters == {"gclid": "abc"}


# --- precedence ---------------------------------------------------------------------------------


def test_explicit_campaign_beats_the_url_field_by_field() -> None:
    context = {
        "page_url": f"{PAGE}?utm_source=url&utm_medium=url_medium&utm_campaign=url_name"
        "&utm_term=url_term",
        "campaign": {"source": "explicit", "name": "explicit_name", "content": 7},
    }
    t = touch(context)
    assert (t.source, t.medium) == ("explicit", "url_medium")
    assert (t.campaign, t.term, t.content) == ("explicit_name", "url_term", "7")


def test_explicit_click_ids_beat_the_url() -> None:
    t = touch({"page_url": f"{PAGE}?gclid=from_url&ttclid=tt_url"}, {"gclid": "explicit"})
    assert t.click_ids == {"gclid": "explicit", "ttclid": "tt_url"}


def test_utm_beats_click_id_network_and_referrer() -> None:
    t = touch(
        {
            "page_url": f"{PAGE}?utm_source=meta&utm_medium=paid_social&fbclid={FBCLID}",
            "referrer": "https://www.google.com/",
        }
    )
    assert (t.source, t.medium) == ("meta", "paid_social")


def test_a_lone_utm_half_is_completed_by_the_network_else_not_set() -> None:
    assert (touch({"page_url": f"{PAGE}?utm_medium=display&gclid=x"}).source) == "google"
    t = touch({"page_url": f"{PAGE}?utm_source=partner"})
    assert (t.source, t.medium) == ("partner", "(not set)")


def test_click_id_network_beats_referrer() -> None:
    t = touch({"page_url": f"{PAGE}?gclid={GCLID}", "referrer": "https://www.facebook.com/"})
    assert (t.source, t.medium) == ("google", "cpc")


@pytest.mark.parametrize(
    ("name", "network"),
    [
        ("gclid", ("google", "cpc")),
        ("gbraid", ("google", "cpc")),
        ("wbraid", ("google", "cpc")),
        ("fbclid", ("facebook", "paid")),
        ("ttclid", ("tiktok", "paid")),
        ("li_fat_id", ("linkedin", "paid")),
        ("msclkid", ("bing", "cpc")),
    ],
)
def test_click_id_networks(name: str, network: tuple[str, str]) -> None:
    from_url = touch({"page_url": f"{PAGE}?{name}=abc123"})
    explicit = touch({"page_url": PAGE}, {name: "abc123"})
    assert (from_url.source, from_url.medium) == network
    assert (explicit.source, explicit.medium) == network
    assert from_url.click_ids[name] == explicit.click_ids[name] == "abc123"


@pytest.mark.parametrize("cookie", ["fbc", "fbp"])
def test_meta_cookies_alone_are_not_a_click(cookie: str) -> None:
    value = f"fb.1.1717000000000.{cookie}-value"
    t = touch({"page_url": PAGE}, {cookie: value})
    assert t.click_ids == {cookie: value}
    assert (t.source, t.medium, t.direct) == ("(direct)", "(none)", True)


# --- fbc ----------------------------------------------------------------------------------------


def test_fbc_is_built_from_an_fbclid_in_metas_form() -> None:
    t = touch({"page_url": f"{PAGE}?fbclid={FBCLID}"})
    assert t.click_ids["fbclid"] == FBCLID
    assert t.click_ids["fbc"] == f"fb.1.{AT_MS}.{FBCLID}"


def test_fbclid_case_is_preserved() -> None:
    mixed = "IwAR_MiXeD-CaSe_0123"
    t = touch({"page_url": f"{PAGE}?FBCLID={mixed}"})
    assert t.click_ids == {"fbclid": mixed, "fbc": f"fb.1.{AT_MS}.{mixed}"}


def test_a_given_fbc_is_kept() -> None:
    given = "fb.1.1717000000000.IwAR_earlier"
    t = touch({"page_url": f"{PAGE}?fbclid={FBCLID}"}, {"fbc": given})
    assert t.click_ids["fbc"] == given
    from_url = touch({"page_url": f"{PAGE}?fbclid={FBCLID}&fbc={given}"})
    assert from_url.click_ids["fbc"] == given


# --- referrers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://www.google.com/", ("google", "organic")),
        ("https://www.google.co.uk/search?q=running+shoes", ("google", "organic")),
        ("https://www.bing.com/search?q=running+shoes", ("bing", "organic")),
        ("https://duckduckgo.com/", ("duckduckgo", "organic")),
        ("https://yandex.ru/search/?text=x", ("yandex", "organic")),
        ("https://www.facebook.com/", ("facebook", "social")),
        ("https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example.com", ("facebook", "social")),
        ("https://m.facebook.com/", ("facebook", "social")),
        ("https://t.co/AbCdEf123", ("twitter", "social")),
        ("https://x.com/", ("twitter", "social")),
        ("https://www.linkedin.com/feed/", ("linkedin", "social")),
        ("https://mail.google.com/mail/u/0/", ("gmail", "email")),
        ("https://mail.yahoo.com/d/folders/1", ("yahoo! mail", "email")),
        ("https://outlook.live.com/mail/0/inbox", ("outlook.com", "email")),
        ("android-app://com.google.android.gm/", ("gmail", "email")),
        ("https://www.running-blog.net/2024/06/shoes", ("running-blog.net", "referral")),
        ("https://support.google.com/", ("support.google.com", "referral")),
        ("partner-site.org/deals", ("partner-site.org", "referral")),
    ],
)
def test_referrer_classes(referrer: str, expected: tuple[str, str]) -> None:
    t = touch({"page_url": PAGE, "referrer": referrer})
    assert (t.source, t.medium) == expected
    assert not t.direct


@pytest.mark.parametrize(
    "referrer",
    [
        None,
        "",
        "https://shop.example.com/cart",  # the page's own host
        "https://SHOP.example.com./",  # the same, spelled differently
        "https://www.shop.example.com/",  # the same but for www.
        "about:blank",
        "file:///home/user/page.html",
        "chrome-extension://abcdef/popup.html",
        "http://[::1",
    ],
)
def test_direct(referrer: str | None) -> None:
    t = touch({"page_url": PAGE, "referrer": referrer})
    assert t == Touch(source="(direct)", medium="(none)", at_us=AT_US, direct=True)


def test_a_subdomain_of_the_page_is_a_referral() -> None:
    assert classify_referrer("https://blog.example.com/post", "shop.example.com") == (
        "blog.example.com",
        "referral",
    )


def test_without_a_page_url_any_referrer_is_external() -> None:
    t = touch({"referrer": "https://www.google.com/"})
    assert (t.source, t.medium) == ("google", "organic")
