"""The browser SDK in headless Chromium, on a shop page of another origin, against a
real ``convtrack serve`` (behind a proxy that records every request)."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from convtrack.model.currency import iso4217_codes, minor_digits
from convtrack.testing import wait_for
from tests.conftest import (
    SERVER_KEY,
    WRITE_KEY,
    ServerFactory,
    ServerProcess,
    auth,
    logged_event_ids,
)
from tests.support.sdk_browser_kit import (
    CHROME_UA,
    CHROMIUM_ARGS,
    ROOT,
    CountingProxy,
    Seen,
    Site,
    build_sdk,
    ensure_chromium,
)

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for all the browser tests (they are all in this module). Not
    session-wide: Playwright's sync API holds an event loop on this thread while it
    runs, which would break asyncio.run() in the tests of other modules."""
    executable = ensure_chromium()
    build_sdk()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("sdk") / "data", {"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "1000"}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(collector: ServerProcess) -> Iterator[CountingProxy]:
    counting = CountingProxy(collector.url)
    yield counting
    counting.close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    shop = Site()
    yield shop
    shop.close()


@pytest.fixture
def context(browser: Any, proxy: CountingProxy) -> Iterator[Any]:
    """A fresh visitor (own cookies and localStorage) with a person's Chrome."""
    visitor = browser.new_context(user_agent=CHROME_UA)
    errors: list[str] = []
    visitor.on("weberror", lambda web_error: errors.append(str(web_error.error)))
    yield visitor
    visitor.close()
    assert errors == [], "the SDK threw into the page"
    # Beacons and fetches are simple text/plain requests: no CORS preflight, ever.
    assert proxy.requests("OPTIONS") == []


def page_html(collector_url: str, script: str, body: str = "", init: str = "") -> str:
    if init:
        tag = f'<script src="{collector_url}/sdk/v1/convtrack.js"></script><script>{init}</script>'
    else:
        src = f"{collector_url}/sdk/v1/convtrack.js"
        tag = f'<script src="{src}" data-write-key="{WRITE_KEY}"></script>'
    return f"<!doctype html><title>shop</title>{tag}<body>{body}<script>{script}</script></body>"


def events_seen(proxy: CountingProxy) -> list[tuple[Seen, dict[str, Any]]]:
    """Every event the proxy forwarded, with the request that carried it."""
    out = []
    for seen in proxy.requests("POST"):
        if seen.path not in ("/v1/track", "/v1/batch"):
            continue
        body = json.loads(seen.body)
        for event in body.get("batch", [body]):
            out.append((seen, event))
    return out


def sent_with(proxy: CountingProxy, **match: Any) -> list[tuple[Seen, dict[str, Any]]]:
    return [
        (seen, event)
        for seen, event in events_seen(proxy)
        if all(event.get(k) == v or event["properties"].get(k) == v for k, v in match.items())
    ]


def arrived(proxy: CountingProxy, campaign_id: str) -> dict[str, dict[str, Any]]:
    """The campaign's events that reached the proxy, by event_id; a copy sent again must be
    the same event (the collector's dedup keeps one)."""
    events: dict[str, dict[str, Any]] = {}
    for _, event in sent_with(proxy, campaign_id=campaign_id):
        first = events.setdefault(event["event_id"], event)
        assert first["properties"] == event["properties"], "a copy differs from its event"
    return events


def today() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d")


def stats(server: ServerProcess, campaign: str) -> dict[str, Any]:
    url = f"{server.url}/v1/stats/conversions?campaign_id={campaign}&date={today()}"
    answer: dict[str, Any] = httpx.get(url, headers=auth(SERVER_KEY), timeout=10).json()
    return answer


def settled_stats(server: ServerProcess, campaign: str, event_ids: set[str]) -> dict[str, Any]:
    """The counts once every given event is in the log and the processor has caught up."""
    wait_for("the events in the log", lambda: event_ids <= set(logged_event_ids(server.data_dir)))

    def caught_up() -> bool:
        live = httpx.get(f"{server.url}/v1/stats/live", headers=auth(SERVER_KEY)).json()
        return bool(live["lag"]["events"] == 0)

    wait_for("the processor to catch up", caught_up)
    return stats(server, campaign)


def campaign() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def test_track_on_click_is_counted(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/click.html"] = page_html(
        proxy.url,
        "",
        body=f"<button id=b onclick=\"convtrack.track('Signup', {{campaign_id: '{name}'}})\">go"
        "</button>",
    )
    page = context.new_page()
    page.goto(site.url + "/click.html")
    page.click("#b")
    wait_for("the click's event", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    ((seen, event),) = sent_with(proxy, campaign_id=name)
    assert seen.content_type.startswith("text/plain")
    assert seen.query["writeKey"] == [WRITE_KEY]
    assert seen.query["event_id"] == [event["event_id"]]
    uuid.UUID(event["event_id"])
    assert event["event_name"] == "Signup"
    assert event["session_id"] and "user_id" not in event
    context_ = event["context"]
    assert context_["user_agent"] == CHROME_UA
    assert context_["page_url"] == site.url + "/click.html"
    assert context_["client_seq"] == 1 and context_["client_id"]
    assert context_["library"] == {"name": "convtrack.js", "version": "1.0.0"}
    # The answer was readable across origins (CORS), so the SDK knows it landed.
    wait_for("the SDK to see the answer", lambda: page.evaluate("convtrack.status().queued") == 0)
    assert page.evaluate("convtrack.status().sent") == 1
    wait_for("the conversion counted", lambda: stats(collector, name)["conversions"] == 1)


def test_a_beacon_on_navigation_away_arrives(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/bye.html"] = "<!doctype html><p>elsewhere</p>"
    # A long flush interval: the only way out for the event is the beacon on pagehide.
    init = (
        f"convtrack.init({{writeKey: '{WRITE_KEY}', endpoint: '{proxy.url}',"
        " flushIntervalMs: 600000})"
    )
    track = f"convtrack.track('Outbound', {{campaign_id: '{name}'}})"
    link = f'<a id=out href=/bye.html onclick="{track}">out</a>'
    site.pages["/leave.html"] = page_html(proxy.url, "", body=link, init=init)
    page = context.new_page()
    page.goto(site.url + "/leave.html")
    # Note each sendBeacon and fetch call where the next page (same origin) can read it.
    page.evaluate(
        """() => {
        const note = (kind, url) => sessionStorage.setItem(
            'calls', (sessionStorage.getItem('calls') || '') + kind + ' ' + url + '\\n');
        const beacon = navigator.sendBeacon.bind(navigator), fetch_ = window.fetch;
        navigator.sendBeacon = (url, data) => (note('beacon', url), beacon(url, data));
        window.fetch = (url, init) => (note('fetch', url), fetch_(url, init));
    }"""
    )
    page.click("#out")
    page.wait_for_url(site.url + "/bye.html")
    wait_for("the beacon", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    ((seen, event),) = sent_with(proxy, campaign_id=name)
    assert seen.content_type == "text/plain;charset=UTF-8"  # what sendBeacon sends
    assert seen.query["event_id"] == [event["event_id"]]
    calls = page.evaluate("sessionStorage.getItem('calls')").split()
    assert calls[0] == "beacon" and len(calls) == 2, calls  # one beacon, no fetch
    assert calls[1] == f"{proxy.url}/v1/track?writeKey={WRITE_KEY}&event_id={event['event_id']}"
    wait_for("the conversion counted", lambda: stats(collector, name)["conversions"] == 1)


def test_offline_then_online_queued_events_arrive_once(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/offline.html"] = page_html(proxy.url, "")
    page = context.new_page()
    page.goto(site.url + "/offline.html")
    context.set_offline(True)
    for n in range(3):
        page.evaluate(f"convtrack.track('Lead', {{campaign_id: '{name}', n: {n}}})")
    # Queued in localStorage, nothing sent while offline.
    wait_for("three queued", lambda: page.evaluate("convtrack.status().queued") == 3)
    stored = json.loads(page.evaluate("localStorage.getItem('_ct_queue')"))
    assert [item["e"]["properties"]["n"] for item in stored] == [0, 1, 2]
    page.evaluate(f"convtrack.track('Lead', {{campaign_id: '{name}', n: 3}})")
    assert sent_with(proxy, campaign_id=name) == []
    # The visitor leaves offline, then comes back online. The SDK sends no beacon while
    # offline, but Chrome may still let the closing page's last `visibilitychange` beacon
    # out once its context is online again (DevTools' offline emulation, not a real
    # outage: seen once in CI). Either way each event gets there, with its one event_id.
    page.goto("about:blank")
    page.close()
    context.set_offline(False)
    again = context.new_page()
    again.goto(site.url + "/offline.html")
    wait_for("the queue sent on load", lambda: len(arrived(proxy, name)) == 4)
    wait_for("its answer seen", lambda: again.evaluate("convtrack.status().queued") == 0)
    # Offline and online again within one page: the `online` event sends the queue.
    context.set_offline(True)
    again.evaluate(f"convtrack.track('Lead', {{campaign_id: '{name}', n: 4}})")
    wait_for("one queued", lambda: again.evaluate("convtrack.status().queued") == 1)
    context.set_offline(False)
    wait_for("sent when back online", lambda: len(arrived(proxy, name)) == 5)
    wait_for("nothing left", lambda: again.evaluate("convtrack.status().queued") == 0)
    events = arrived(proxy, name)
    assert sorted(event["properties"]["n"] for event in events.values()) == [0, 1, 2, 3, 4]
    # The late ones say when they happened; per-page sequence numbers have no holes.
    seqs: dict[str, list[int]] = {}
    for event in events.values():
        seqs.setdefault(event["context"]["client_id"], []).append(event["context"]["client_seq"])
    assert sorted(sorted(s) for s in seqs.values()) == [[1], [1, 2, 3, 4]]
    counted = settled_stats(collector, name, set(events))
    assert counted["conversions"] == 5, "each queued event counted exactly once"


def test_a_reload_of_the_thank_you_page_counts_once(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    order = f"ord_{uuid.uuid4().hex[:8]}"
    # The shop's backend mints the order's token with its server key...
    minted = httpx.post(
        f"{collector.url}/v1/conversion-tokens",
        json={"order_id": order},
        headers=auth(SERVER_KEY),
        timeout=10,
    )
    assert minted.status_code == 200, minted.text
    token = minted.json()["conversion_token"]
    # ...and renders it into the thank-you page, which passes it to track.
    script = (
        f"convtrack.track('Purchase', {{value: 49.99, currency: 'USD', order_id: '{order}',"
        f" campaign_id: '{name}', conversion_token: '{token}'}})"
    )
    site.pages["/thanks.html"] = page_html(proxy.url, script)
    page = context.new_page()
    page.goto(site.url + "/thanks.html")
    wait_for("the purchase", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    page.reload()
    wait_for("the reload's purchase", lambda: len(sent_with(proxy, campaign_id=name)) == 2)
    sent = [event for _, event in sent_with(proxy, campaign_id=name)]
    assert sent[0]["event_id"] != sent[1]["event_id"]  # two page loads, two events...
    assert {e["conversion_token"] for e in sent} == {token}
    assert all("conversion_token" not in e["properties"] for e in sent)
    counted = settled_stats(collector, name, {e["event_id"] for e in sent})
    assert counted["conversions"] == 1  # ...one order
    assert counted["value"] == {"USD": 4999}


# The landing page's page view is the campaign's one event that is not a conversion.
EXCLUDED = {"bot": 0, "duplicate": 0, "not_a_conversion": 1}


def test_the_tutorial_purchase_counts_4999_usd(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/product.html"] = page_html(proxy.url, "analytics.page()")
    site.pages["/done.html"] = page_html(
        proxy.url,
        "analytics.track('Purchase', { value: 49.99, currency: 'USD', productId: 'sku_123' })",
    )
    page = context.new_page()
    landing = f"/product.html?utm_source=newsletter&utm_medium=email&utm_campaign={name}"
    page.goto(site.url + landing + "&gclid=G-1&fbclid=FB-1&msclkid=MS-1")
    wait_for(
        "the page view",
        lambda: len(sent_with(proxy, event_name="page_view", path="/product.html")) == 1,
    )
    page.goto(site.url + "/done.html")
    wait_for(
        "the purchase",
        lambda: len(sent_with(proxy, productId="sku_123", event_name="Purchase")) >= 1,
    )
    ((_, viewed),) = sent_with(proxy, event_name="page_view", path="/product.html")
    purchases = [
        e
        for _, e in sent_with(proxy, productId="sku_123")
        if e["context"]["campaign"]["name"] == name
    ]
    assert len(purchases) == 1
    (purchase,) = purchases
    assert (purchase["value"], purchase["currency"]) == (4999, "USD")
    assert purchase["properties"] == {"value": 49.99, "currency": "USD", "productId": "sku_123"}
    # Landing's campaign and click ids are kept for the session, on a later page too.
    assert purchase["context"]["campaign"] == {
        "source": "newsletter",
        "medium": "email",
        "name": name,
    }
    click_ids = purchase["context"]["click_ids"]
    assert (click_ids["gclid"], click_ids["fbclid"], click_ids["msclkid"]) == (
        "G-1",
        "FB-1",
        "MS-1",
    )
    assert re.fullmatch(r"fb\.1\.\d{13}\.FB-1", click_ids["fbc"])
    assert purchase["session_id"] == viewed["session_id"]
    assert purchase["context"]["anonymous_id"] == viewed["context"]["anonymous_id"]
    assert purchase["context"]["client_id"] != viewed["context"]["client_id"]  # another page load
    cookies = {c["name"]: c for c in context.cookies(site.url)}
    assert cookies["_ct_sid"]["value"].startswith(purchase["session_id"] + ".")
    assert cookies["_ct_sid"]["sameSite"] == "Lax"
    wait_for(
        "4999 USD counted",
        lambda: stats(collector, name) == {"campaign_id": name, "date": today(), "conversions": 1,
                                           "value": {"USD": 4999}, "excluded": EXCLUDED},
    )  # fmt: skip


def test_retries_one_second_apart_and_retry_after(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/retry.html"] = page_html(proxy.url, "")
    page = context.new_page()
    page.goto(site.url + "/retry.html")
    # 503 with Retry-After: 2, then the collector answers: one retry, 2 s later.
    proxy.fail_next(1, 503, retry_after="2")
    page.evaluate(f"convtrack.track('Lead', {{campaign_id: '{name}', case: 'after'}})")
    wait_for(
        "the retry", lambda: [s.status for s, _ in sent_with(proxy, case="after")] == [503, 202]
    )
    (first, e1), (second, e2) = sent_with(proxy, case="after")
    assert e1["event_id"] == e2["event_id"] and (first.status, second.status) == (503, 202)
    assert second.at - first.at >= 1.9
    # 5xx four times: the first try and 3 retries, 1 s apart; then it waits in the queue.
    proxy.fail_next(4, 500)
    page.evaluate(f"convtrack.track('Lead', {{campaign_id: '{name}', case: 'five'}})")
    wait_for(
        "four tries", lambda: [s.status for s, _ in sent_with(proxy, case="five")] == [500] * 4
    )
    tries = [seen for seen, _ in sent_with(proxy, case="five")]
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(tries))
    tried = "JSON.parse(localStorage.getItem('_ct_queue')).map(item => item.n)"
    wait_for("kept queued after 4 tries", lambda: page.evaluate(tried) == [4])
    assert len({e["event_id"] for _, e in sent_with(proxy, case="five")}) == 1
    page.evaluate("convtrack.flush()")  # sent now (as when back online or on the next page)
    wait_for("delivered", lambda: page.evaluate("convtrack.status().queued") == 0)
    assert [s.status for s, _ in sent_with(proxy, case="five")] == [500, 500, 500, 500, 202]
    # A validation error is final: not retried, said in the console, kept by the collector.
    warnings: list[str] = []
    page.on("console", lambda message: warnings.append(message.text))
    page.evaluate(
        f"convtrack.track('Lead', {{campaign_id: '{name}', case: 'bad', value: 1.234,"
        " currency: 'USD'})"
    )
    wait_for("the rejection", lambda: page.evaluate("convtrack.status().rejected") == 1)
    # (Calls into the page let Playwright deliver the console messages it holds.)
    wait_for("the warning", lambda: page.evaluate("1") and any("rejected" in w for w in warnings))
    ((seen, bad),) = sent_with(proxy, case="bad")
    assert seen.status == 400 and bad["value"] == 1.234
    assert "value_not_integer_minor_units" in " ".join(warnings)
    assert page.evaluate("convtrack.status().queued") == 0


def test_exact_minor_units(context: Any, site: Site, proxy: CountingProxy) -> None:
    site.pages["/money.html"] = page_html(proxy.url, "")
    page = context.new_page()
    page.goto(site.url + "/money.html")
    cases: list[tuple[Any, str, int | None]] = [
        (49.99, "USD", 4999), ("19.99", "USD", 1999), (19.99, "EUR", 1999), (0.07, "USD", 7),
        (1e2, "JPY", 100), (5, "JPY", 5), (5.5, "JPY", None), (1.005, "KWD", 1005),
        (1.0005, "KWD", None), ("1e-2", "USD", 1), ("2.50E1", "USD", 2500), (-3.5, "EUR", -350),
        (123456789.12, "USD", 12345678912), (49.999, "USD", None), ("abc", "USD", None),
        ("", "USD", None), (None, "USD", None), (1e300, "USD", None), ("12.", "USD", 1200),
        (".5", "USD", 50), (0.1 + 0.2, "USD", None),
    ]  # fmt: skip
    got = page.evaluate(
        "cases => cases.map(([v, c]) => convtrack.toMinorUnits(v, c))",
        [[v, c] for v, c, _ in cases],
    )
    assert got == [want for _, _, want in cases]
    # The SDK's exponent table is the collector's, for every ISO 4217 code.
    codes = sorted(iso4217_codes())
    units = page.evaluate("codes => codes.map(c => convtrack.toMinorUnits('1', c))", codes)
    assert dict(zip(codes, units, strict=True)) == {c: 10 ** minor_digits(c) for c in codes}


def test_identify_consent_and_no_throw(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    name = campaign()
    site.pages["/me.html"] = page_html(proxy.url, "")
    page = context.new_page()
    page.goto(site.url + "/me.html")
    page.evaluate(
        f"""() => {{
        convtrack.identify('u_42',
            {{email: 'Ann@Example.com', firstName: 'Ann', plan: 'pro', mark: '{name}'}});
        convtrack.consent({{ad_user_data: false, analytics: 'granted', bogus: 1}});
        analytics.track('Lead', {{campaign_id: '{name}'}}, {{}}, () => {{ window.called = true; }});
        // Bad calls: never an exception into the page.
        const cycle = {{}}; cycle.self = cycle;
        convtrack.track('Cyclic', cycle); convtrack.track(); analytics.track(null);
        convtrack.init(); convtrack.identify(); convtrack.consent(null); analytics.page(42);
    }}"""
    )
    wait_for("the callback", lambda: page.evaluate("window.called === true"))
    wait_for("the events", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    ((_, lead),) = sent_with(proxy, campaign_id=name)
    ((_, who),) = sent_with(proxy, mark=name)
    assert who["event_name"] == "identify" and who["user_id"] == "u_42"
    assert who["user"] == {"email": "Ann@Example.com", "first_name": "Ann"}  # hashed on arrival
    assert who["properties"] == {"plan": "pro", "mark": name}  # no contact field in properties
    assert lead["user_id"] == "u_42" and lead["consent"] == {
        "ad_user_data": False,
        "analytics": True,
    }
    assert lead["context"]["client_seq"] == who["context"]["client_seq"] + 1
    wait_for("the lead counted", lambda: stats(collector, name)["conversions"] == 1)


def test_the_session_slides_for_30_minutes_and_keeps_the_landing_campaign(
    context: Any, site: Site, proxy: CountingProxy
) -> None:
    """The page's clock is Playwright's (injected), so minutes pass without waiting."""
    name = campaign()
    site.pages["/session.html"] = page_html(proxy.url, "")
    site.pages["/later.html"] = page_html(proxy.url, "")
    context.clock.install()
    page = context.new_page()
    page.goto(site.url + f"/session.html?utm_source=ads&utm_campaign={name}&ttclid=TT")

    def step(label: str) -> dict[str, Any]:
        page.evaluate(f"convtrack.track('Tick', {{mark: '{name}', step: '{label}'}})")
        wait_for(label, lambda: len(sent_with(proxy, mark=name, step=label)) == 1)
        wait_for("its answer", lambda: page.evaluate("convtrack.status().queued") == 0)
        ((_, event),) = sent_with(proxy, mark=name, step=label)
        return event

    first = step("a")
    page.goto(site.url + "/later.html")  # another page of the site, no parameters
    context.clock.fast_forward("25:00")
    second = step("b")
    context.clock.fast_forward("25:00")  # 50 minutes after the first, 25 after the last
    third = step("c")
    context.clock.fast_forward("31:00")
    fourth = step("d")
    assert first["session_id"] == second["session_id"] == third["session_id"]
    assert fourth["session_id"] != first["session_id"]
    for kept in (first, second, third):
        assert kept["context"]["campaign"] == {"source": "ads", "name": name}
        assert kept["context"]["click_ids"] == {"ttclid": "TT"}
    assert "campaign" not in fourth["context"] and "click_ids" not in fourth["context"]
    assert fourth["context"]["anonymous_id"] == first["context"]["anonymous_id"]
    assert all("timestamp" not in e for e in (first, second, third, fourth))


def test_without_local_storage_it_still_sends(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    """Storage refused (a sandboxed frame, a privacy mode): the page's memory serves."""
    name = campaign()
    context.add_init_script(
        "Object.defineProperty(window, 'localStorage', {get() {"
        " throw new DOMException('denied', 'SecurityError'); }});"
    )
    site.pages["/nostore.html"] = page_html(
        proxy.url, f"convtrack.track('Signup', {{campaign_id: '{name}'}})"
    )
    page = context.new_page()
    page.goto(site.url + "/nostore.html")
    wait_for("the event", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    wait_for("its answer", lambda: page.evaluate("convtrack.status()")["sent"] == 1)
    assert page.evaluate("convtrack.status().queued") == 0
    wait_for("counted", lambda: stats(collector, name)["conversions"] == 1)


def test_a_key_limited_to_the_shop_origin(
    context: Any, site: Site, server_factory: ServerFactory
) -> None:
    """The write key allows the shop's origin only: its pages are counted; another
    site's are refused (403 origin_not_allowed) and stay queued, never counted."""
    server = server_factory({"CONVTRACK_COLLECT_ALLOWED_ORIGINS": site.url}, name="strict")
    server.start()
    other = Site()
    try:
        script = "convtrack.track('Signup', {campaign_id: 'strict'})"
        page_text = page_html(server.url, script)
        site.pages["/strict.html"] = other.pages["/strict.html"] = page_text
        shop = context.new_page()
        shop.goto(site.url + "/strict.html")
        wait_for("the shop's event", lambda: shop.evaluate("convtrack.status()")["sent"] == 1)
        wait_for("in the log", lambda: len(logged_event_ids(server.data_dir)) == 1)
        foreign = context.new_page()
        foreign.goto(other.url + "/strict.html")
        tries = "(JSON.parse(localStorage.getItem('_ct_queue')) || []).map(item => item.n)"
        wait_for("a refused try", lambda: foreign.evaluate(tries) == [1])
        assert foreign.evaluate("convtrack.status()")["sent"] == 0
        assert len(logged_event_ids(server.data_dir)) == 1
    finally:
        other.close()


def test_calls_before_an_async_load_are_replayed(
    context: Any, site: Site, proxy: CountingProxy, collector: ServerProcess
) -> None:
    """The docs' snippet: a stub keeps the calls until the file arrives (async)."""
    name = campaign()
    doc = (ROOT / "docs" / "browser-sdk.md").read_text()
    stub = doc.split("<script>\n    !function", 1)[1].split("analytics.page();", 1)[0]
    site.pages["/async.html"] = (
        f"<!doctype html><script>!function{stub}"
        f"analytics.track('Signup', {{campaign_id: '{name}'}});</script>"
        f'<script async src="{proxy.url}/sdk/v1/convtrack.js" data-write-key="{WRITE_KEY}">'
        "</script>"
    )
    page = context.new_page()
    page.goto(site.url + "/async.html")
    wait_for("the stubbed call", lambda: len(sent_with(proxy, campaign_id=name)) == 1)
    assert page.evaluate("[convtrack.VERSION, analytics.VERSION]") == ["1.0.0", "1.0.0"]
    wait_for("counted", lambda: stats(collector, name)["conversions"] == 1)
