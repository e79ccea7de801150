"""Attribution models over a real local lake, with credit computed by hand.

Most journeys are processed events put straight on the processed log (as the
processor would write them, ``touch_*`` included), then flushed by the
pipeline's own cold store; one test sends page views with utm parameters
through the API and lets the session step find the touches.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.log.base import LogRecord
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.runtime.embedded import Pipeline
from convtrack.store.cold.attribution import (
    MODELS,
    AttributionRow,
    attribute,
    count_conversions,
)
from convtrack.store.cold.counted import COUNTED
from convtrack.store.cold.query import connect
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY
from tests.support.inprocess import call, make_pipeline, process_all

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
DAY0 = int(datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000  # noon UTC
NOW_US = DAY0 + 20 * DAY_US
FROM, TO = date(2026, 11, 3), date(2026, 11, 7)  # day 2 to day 6
GOOGLE = ("google", "cpc")
FACEBOOK = ("facebook", "paid_social")
EMAIL = ("email", "newsletter")


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", ManualClock(start_us=NOW_US))
    yield built
    built.close()


class Events:
    """Processed events for the lake, in log order (offsets 0, 1, ...)."""

    def __init__(self) -> None:
        self.items: list[ProcessedEvent] = []

    def add(
        self,
        who: str | None,
        day: float,
        *,
        touch: tuple[str, str] | None = None,
        campaign: str = "(none)",
        touch_campaign: str | None = None,
        conversion: bool = False,
        value: int | None = None,
        currency: str | None = None,
        is_bot: bool = False,
        session: str | None = None,
        source: str = "default",
    ) -> None:
        """An event ``day`` days after DAY0 of user ``who`` (None: only ``session``).

        ``touch`` is (source, medium) of the event's own campaign touch; its
        campaign is ``touch_campaign``, else ``campaign`` (the row's campaign_id).
        """
        offset = len(self.items)
        at = DAY0 + round(day * DAY_US)
        envelope = Envelope(
            event_id=f"e{offset}",
            source=source,
            event_name="Purchase" if conversion else "page_view",
            event_time_us=at,
            received_at_us=at,
            user_id=who,
            session_id=session,
            value=value,
            currency=currency,
            campaign_id=campaign,
        )
        self.items.append(
            ProcessedEvent(
                event=envelope,
                source_partition=0,
                source_offset=offset,
                campaign_id=campaign,
                event_date=datetime.fromtimestamp(at / 1e6, tz=UTC).date().isoformat(),
                # The processor's verdict with conversions.count_bots off: a bot's
                # Purchase is stored, not counted.
                is_conversion=conversion and not is_bot,
                touch_source=touch[0] if touch else None,
                touch_medium=touch[1] if touch else None,
                touch_campaign=touch_campaign,
                is_bot=is_bot,
                logged_at_us=at,
                processed_at_us=at,
                counted_at_us=at,
            )
        )

    def flush_into(self, pipeline: Pipeline) -> None:
        records = [LogRecord("k", encode_processed(e)) for e in self.items]
        pipeline.processed.append_blocking(records)
        pipeline.cold.flush_all()


def journeys() -> Events:
    """Seven conversions in FROM..TO, and what must not count."""
    ev = Events()
    # A: three touches, then a conversion (direct itself) on day 6, 900 USD.
    ev.add("A", 0, touch=GOOGLE, campaign="spring")
    ev.add("A", 3, touch=FACEBOOK, campaign="fall")
    ev.add("A", 5, touch=EMAIL, campaign="news")
    ev.add("A", 5.5, source="other", touch=GOOGLE, campaign="elsewhere")  # another source
    ev.add("A", 6, campaign="news", conversion=True, value=900, currency="USD")
    ev.add("A", 6 + 1 / 24, touch=GOOGLE, campaign="late")  # after the conversion
    # B: one touch, then a conversion, 500 EUR; and one before FROM (day 1).
    ev.add("B", 0.5, touch=GOOGLE, campaign="spring")
    ev.add("B", 1, campaign="spring", conversion=True, value=70, currency="EUR")
    ev.add("B", 4, touch=GOOGLE, campaign="spring")
    ev.add("B", 6, campaign="spring", conversion=True, value=500, currency="EUR")
    # C: a conversion with no touch at all: (direct).
    ev.add("C", 6, conversion=True, value=100, currency="USD")
    # D: its only touch is 40 days before the conversion: ignored, (direct).
    ev.add("D", 6 - 40, touch=GOOGLE, campaign="spring")
    ev.add("D", 6, conversion=True, value=300, currency="USD")
    # E: a touch on day 4; the conversion is a touch itself (touch_campaign unset:
    # its campaign_id "news" is the touch's campaign), 200 USD.
    ev.add("E", 4, touch=FACEBOOK, campaign="fall")
    ev.add("E", 6, touch=EMAIL, campaign="news", conversion=True, value=200, currency="USD")
    # F: a touch exactly 30 days before (the edge of the lookback counts); no value.
    # touch_campaign wins over the row's campaign_id.
    ev.add("F", 6 - 30, touch=GOOGLE, campaign="(none)", touch_campaign="edge")
    ev.add("F", 6, conversion=True)
    # G: a bot converting after a touch: not a conversion.
    ev.add("G", 5, touch=GOOGLE, campaign="spring")
    ev.add("G", 6, campaign="spring", conversion=True, value=999, currency="USD", is_bot=True)
    # H: no user id, a session: a touch and a conversion in it, 50 USD. A user
    # whose id equals that session id is someone else.
    ev.add(None, 5, session="s-h", touch=FACEBOOK, campaign="fall")
    ev.add("s-h", 5.5, touch=GOOGLE, campaign="collide")
    ev.add(None, 6, session="s-h", conversion=True, value=50, currency="USD")
    return ev


CONVERSIONS = 7  # A, B (day 6), C, D, E, F, H


def as_tuples(rows: list[AttributionRow]) -> list[tuple[str, float, dict[str, float]]]:
    return [(r.campaign_id, r.conversions, r.value) for r in rows]


def assert_rows(got: list[AttributionRow], want: list[tuple[str, float, dict[str, float]]]) -> None:
    assert [r.campaign_id for r in got] == [w[0] for w in want]
    for row, (campaign, credit, value) in zip(got, want, strict=True):
        assert row.conversions == pytest.approx(credit, abs=1e-9), campaign
        assert row.value.keys() == value.keys(), campaign
        for currency, amount in value.items():
            assert row.value[currency] == pytest.approx(amount, abs=0.005), (campaign, currency)


def run(pipeline: Pipeline, model: Any, lookback_days: int = 30) -> list[AttributionRow]:
    con = connect(pipeline.lake)
    try:
        return attribute(con, model, FROM, TO, lookback_days)
    finally:
        con.close()


@pytest.fixture
def lake(pipeline: Pipeline) -> Pipeline:
    journeys().flush_into(pipeline)
    return pipeline


# Journeys in FROM..TO (oldest touch first):
#   A: spring (day 0), fall (day 3), news (day 5) -> 900 USD on day 6
#   B: spring (day 4) -> 500 EUR          C: none -> 100 USD (direct)
#   D: none in 30 days -> 300 USD         E: fall (day 4), news (day 6, itself) -> 200 USD
#   F: edge (day -24) -> no value         H: fall (day 5) -> 50 USD


def test_last_touch(lake: Pipeline) -> None:
    # A -> news, B -> spring, C, D -> (direct), E -> news, F -> edge, H -> fall.
    assert_rows(
        run(lake, "last_touch"),
        [
            ("(direct)", 2, {"USD": 400}),
            ("news", 2, {"USD": 1100}),
            ("edge", 1, {}),
            ("fall", 1, {"USD": 50}),
            ("spring", 1, {"EUR": 500}),
        ],
    )


def test_first_touch(lake: Pipeline) -> None:
    # A -> spring, B -> spring, C, D -> (direct), E -> fall, F -> edge, H -> fall.
    assert_rows(
        run(lake, "first_touch"),
        [
            ("(direct)", 2, {"USD": 400}),
            ("fall", 2, {"USD": 250}),
            ("spring", 2, {"USD": 900, "EUR": 500}),
            ("edge", 1, {}),
        ],
    )


def test_linear(lake: Pipeline) -> None:
    # A: 1/3 each of spring, fall, news (300 USD each); E: 1/2 fall, 1/2 news (100 each).
    assert_rows(
        run(lake, "linear"),
        [
            ("(direct)", 2, {"USD": 400}),
            ("fall", 1 / 3 + 1 / 2 + 1, {"USD": 300 + 100 + 50}),  # A, E, H
            ("spring", 1 / 3 + 1, {"USD": 300, "EUR": 500}),  # A, B
            ("edge", 1, {}),
            ("news", 1 / 3 + 1 / 2, {"USD": 300 + 100}),  # A, E
        ],
    )


def test_position_based(lake: Pipeline) -> None:
    # A (3 touches): 0.4 spring, 0.2 fall (the middle one), 0.4 news: 360, 180, 360 USD.
    # E (2 touches): 0.5 fall, 0.5 news: 100 USD each. B, F, H (1 touch): 1.
    assert_rows(
        run(lake, "position_based"),
        [
            ("(direct)", 2, {"USD": 400}),
            ("fall", 0.2 + 0.5 + 1, {"USD": 180 + 100 + 50}),  # A, E, H
            ("spring", 0.4 + 1, {"USD": 360, "EUR": 500}),  # A, B
            ("edge", 1, {}),
            ("news", 0.4 + 0.5, {"USD": 360 + 100}),  # A, E
        ],
    )


def test_time_decay(lake: Pipeline) -> None:
    # Weight 2^(-age/7) with the age in days before the conversion, normalized per conversion.
    # A: ages 6, 3, 1 -> 2^(-6/7) = 0.55204, 2^(-3/7) = 0.74300, 2^(-1/7) = 0.90572;
    #    sum 2.20076 -> spring 0.25084, fall 0.33761, news 0.41155 (x 900 USD).
    a_spring, a_fall, a_news = 2 ** (-6 / 7), 2 ** (-3 / 7), 2 ** (-1 / 7)
    a_sum = a_spring + a_fall + a_news
    assert (round(a_spring / a_sum, 5), round(a_fall / a_sum, 5), round(a_news / a_sum, 5)) == (
        0.25084,
        0.33761,
        0.41155,
    )
    # E: ages 2, 0 -> 2^(-2/7) = 0.82034 and 2^0 = 1; sum 1.82034 -> fall 0.45065, news 0.54935.
    e_fall, e_news = 2 ** (-2 / 7), 1.0
    e_sum = e_fall + e_news
    assert (round(e_fall / e_sum, 5), round(e_news / e_sum, 5)) == (0.45065, 0.54935)
    fall = a_fall / a_sum + e_fall / e_sum + 1  # + H   = 1.78826
    spring = a_spring / a_sum + 1  # + B                 = 1.25084
    news = a_news / a_sum + e_news / e_sum  #            = 0.96090
    assert_rows(
        run(lake, "time_decay"),
        [
            ("(direct)", 2, {"USD": 400}),
            ("fall", fall, {"USD": 900 * a_fall / a_sum + 200 * e_fall / e_sum + 50}),
            ("spring", spring, {"USD": 900 * a_spring / a_sum, "EUR": 500}),
            ("edge", 1, {}),
            ("news", news, {"USD": 900 * a_news / a_sum + 200 * e_news / e_sum}),
        ],
    )
    values = {r.campaign_id: r.value for r in run(lake, "time_decay")}
    assert values["spring"]["USD"] == round(900 * a_spring / a_sum, 2)  # 225.76: 2 decimals


def test_position_based_splits_the_middle_and_lookback_narrows_journeys(
    pipeline: Pipeline,
) -> None:
    ev = Events()
    for day, campaign in [(1, "p1"), (2, "p2"), (3, "p3"), (4, "p4")]:
        ev.add("U", day, touch=GOOGLE, campaign=campaign)
    ev.add("U", 6, conversion=True, value=1000, currency="USD")
    ev.flush_into(pipeline)
    # 0.4 first, 0.4 last, the 0.2 between p2 and p3: 0.1 each.
    assert as_tuples(run(pipeline, "position_based")) == [
        ("p1", 0.4, {"USD": 400.0}),
        ("p4", 0.4, {"USD": 400.0}),
        ("p2", 0.1, {"USD": 100.0}),
        ("p3", 0.1, {"USD": 100.0}),
    ]
    # A 3-day lookback keeps p3 (3 days before) and p4: 50/50.
    assert as_tuples(run(pipeline, "position_based", lookback_days=3)) == [
        ("p3", 0.5, {"USD": 500.0}),
        ("p4", 0.5, {"USD": 500.0}),
    ]
    assert as_tuples(run(pipeline, "first_touch", lookback_days=1)) == [
        ("(direct)", 1.0, {"USD": 1000.0})
    ]


def test_credit_sums_to_the_conversions_for_every_model(lake: Pipeline) -> None:
    con = connect(lake.lake)
    try:
        assert count_conversions(con, FROM, TO) == CONVERSIONS
    finally:
        con.close()
    for model in MODELS:
        rows = run(lake, model)
        assert sum(r.conversions for r in rows) == pytest.approx(CONVERSIONS, abs=1e-9), model
        assert sum(r.value.get("USD", 0) for r in rows) == pytest.approx(1550, abs=0.01), model
        assert sum(r.value.get("EUR", 0) for r in rows) == pytest.approx(500, abs=0.01), model


def test_credit_sums_to_the_conversions_on_random_journeys(pipeline: Pipeline) -> None:
    rng = random.Random(20261101)
    ev = Events()
    touches = [GOOGLE, FACEBOOK, EMAIL]
    for user in range(150):
        who = f"r{user}"
        for _ in range(rng.randrange(0, 7)):
            day = rng.uniform(-40, 7)
            campaign = rng.choice(["c1", "c2", "c3", "c4"])
            ev.add(who, day, touch=rng.choice(touches), campaign=campaign)
        for _ in range(rng.randrange(0, 3)):
            ev.add(who, rng.uniform(0, 7), conversion=True, value=rng.randrange(1, 10_000),
                   currency="USD", is_bot=rng.random() < 0.1,
                   touch=rng.choice([None, GOOGLE]), campaign="c5")  # fmt: skip
    ev.flush_into(pipeline)
    con = connect(pipeline.lake)
    try:
        expected = count_conversions(con, FROM, TO)
        total_value = con.execute(
            f"SELECT sum(value) FROM events WHERE {COUNTED} AND event_date BETWEEN ? AND ?",
            [FROM.isoformat(), TO.isoformat()],
        ).fetchone()
    finally:
        con.close()
    assert expected > 50 and total_value is not None
    for model in MODELS:
        for lookback in (1, 7, 30, 365):
            rows = run(pipeline, model, lookback)
            credit = sum(r.conversions for r in rows)
            assert credit == pytest.approx(expected, abs=1e-9), (model, lookback)
            value = sum(r.value.get("USD", 0) for r in rows)
            assert value == pytest.approx(total_value[0], abs=0.005 * len(rows)), (model, lookback)
            assert rows == sorted(rows, key=lambda r: (-round(r.conversions, 9), r.campaign_id))


def test_an_empty_range_and_an_empty_lake(pipeline: Pipeline) -> None:
    for model in MODELS:
        assert run(pipeline, model) == []
    journeys().flush_into(pipeline)
    con = connect(pipeline.lake)
    try:
        assert attribute(con, "linear", date(2026, 12, 1), date(2026, 12, 31)) == []
        with pytest.raises(ValueError):
            attribute(con, "u_shaped", FROM, TO)  # type: ignore[arg-type]
    finally:
        con.close()


# The HTTP endpoint.


def get(pipeline: Pipeline, query: str, key: str = SERVER_KEY) -> Any:
    return call(pipeline, "GET", "/v1/reports/attribution?" + query, key=key)


def test_the_endpoint_answers_the_same_rows(lake: Pipeline) -> None:
    response = get(lake, "model=linear&from=2026-11-03&to=2026-11-07")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: v for k, v in body.items() if k != "rows"} == {
        "model": "linear",
        "from": "2026-11-03",
        "to": "2026-11-07",
        "lookback_days": 30,
        "conversions": CONVERSIONS,
    }
    assert body["rows"] == [
        {"campaign_id": r.campaign_id, "conversions": r.conversions, "value": r.value}
        for r in run(lake, "linear")
    ]
    assert body["rows"][0] == {"campaign_id": "(direct)", "conversions": 2.0,
                               "value": {"USD": 400.0}}  # fmt: skip
    # A shorter lookback: A keeps news (1 day) only; E both (2 days and 0).
    body = get(lake, "model=first_touch&from=2026-11-03&to=2026-11-07&lookback_days=2").json()
    assert body["lookback_days"] == 2
    got = [(r["campaign_id"], r["conversions"], r["value"]) for r in body["rows"]]
    assert got == [
        ("(direct)", 3.0, {"USD": 400.0}),  # C, D and F (its touch is 30 days old)
        ("fall", 2.0, {"USD": 250.0}),  # E, H
        ("news", 1.0, {"USD": 900.0}),  # A
        ("spring", 1.0, {"EUR": 500.0}),  # B
    ]


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-11-03&to=2026-11-07",
        "model=&from=2026-11-03&to=2026-11-07",
        "model=u_shaped&from=2026-11-03&to=2026-11-07",
        "model=linear&to=2026-11-07",
        "model=linear&from=2026-11-03",
        "model=linear&from=2026-11-31&to=2026-12-07",
        "model=linear&from=20261103&to=20261107",
        "model=linear&from=2026-11-08&to=2026-11-07",
        "model=linear&from=2025-11-06&to=2026-11-07",  # 367 days
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=0",
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=366",
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=-1",
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=7.5",
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=",
        "model=linear&from=2026-11-03&to=2026-11-07&lookback_days=%D9%A3",  # Arabic-Indic 3
    ],
)
def test_bad_parameters_are_400(pipeline: Pipeline, query: str) -> None:
    response = get(pipeline, query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "query_invalid" and body["message"]


def test_limits_are_accepted(pipeline: Pipeline) -> None:
    for query in ("from=2025-11-07&to=2026-11-07", "from=2026-11-07&to=2026-11-07"):
        for lookback in (1, 365):
            response = get(pipeline, f"model=time_decay&{query}&lookback_days={lookback}")
            assert response.status_code == 200, response.text
            assert response.json()["rows"] == [] and response.json()["conversions"] == 0


def test_keys(pipeline: Pipeline) -> None:
    query = "model=linear&from=2026-11-03&to=2026-11-07"
    assert get(pipeline, query, key=WRITE_KEY).status_code == 403
    assert get(pipeline, query, key="not-a-known-key-0123456789").status_code == 401
    assert get(pipeline, query, key=ADMIN_KEY).status_code == 200


def test_an_unreadable_lake_is_503(lake: Pipeline) -> None:
    for path in Path(lake.lake.root, "events").rglob("*.parquet"):
        path.write_bytes(b"not parquet")
    response = get(lake, "model=linear&from=2026-11-03&to=2026-11-07")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert response.headers["retry-after"]


# The CLI.


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    return subprocess.run(
        [sys.executable, "-m", "convtrack", "attribution", *args],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_cli_prints_the_same_rows(lake: Pipeline) -> None:
    data_dir = str(lake.settings.data_dir)
    dates = ["--from", "2026-11-03", "--to", "2026-11-07", "--data-dir", data_dir]
    for model in MODELS:
        done = cli("--model", model, *dates, "--format", "json")
        assert done.returncode == 0, done.stderr
        want = [
            {"campaign_id": r.campaign_id, "conversions": r.conversions, "value": r.value}
            for r in run(lake, model)
        ]
        assert json.loads(done.stdout) == want
    done = cli("--model", "position_based", *dates, "--lookback-days", "7", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "campaign_id,conversions,value",
        "(direct),3.0,USD 4.00",  # C, D, F (major units: 400 cents)
        "fall,1.7,USD 3.30",  # 0.2 of A, 0.5 of E, H
        "spring,1.4,EUR 5.00 USD 3.60",  # 0.4 of A, B
        "news,0.9,USD 4.60",  # 0.4 of A, 0.5 of E
    ]
    done = cli("--model", "last_touch", *dates)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["campaign_id", "conversions", "value"]
    assert done.stdout.rstrip().endswith("(5 rows)")


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "u_shaped", "--from", "2026-11-03", "--to", "2026-11-07"],
        ["--model", "linear", "--from", "2026-11-3", "--to", "2026-11-07"],
        ["--model", "linear", "--from", "2026-11-08", "--to", "2026-11-07"],
        ["--model", "linear", "--from", "2026-11-03", "--to", "2026-11-07", "--lookback-days", "0"],
    ],
)
def test_the_cli_refuses_bad_options(tmp_path: Path, args: list[str]) -> None:
    done = cli(*args, "--data-dir", str(tmp_path))
    assert done.returncode == 2, (done.stdout, done.stderr)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline whose clock stands still: no per-user rate limit in the way."""
    clock = ManualClock(start_us=NOW_US)
    built = make_pipeline(tmp_path / "api", clock, limits={"user_events_per_sec": 100_000})
    yield built
    built.close()


def track(pipeline: Pipeline, hours_ago: float, body: dict[str, Any]) -> None:
    body = {**body, "timestamp": (NOW_US - round(hours_ago * HOUR_US)) // 1000}
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def visit(pipeline: Pipeline, who: str, hours_ago: float, query: str) -> None:
    page = f"https://shop.example/landing?{query}"
    track(pipeline, hours_ago, {"event_name": "page_view", "user_id": who,
                                "context": {"page_url": page}})  # fmt: skip


def buy(pipeline: Pipeline, who: str, hours_ago: float, value: int) -> None:
    track(pipeline, hours_ago, {"event_id": f"order-{who}", "event_name": "Purchase",
                                "user_id": who, "value": value, "currency": "USD"})  # fmt: skip


def test_journeys_from_page_urls_through_the_api(api: Pipeline) -> None:
    """Touches from utm parameters, as the session step records them, end to end."""
    visit(api, "x", 72, "utm_source=google&utm_medium=cpc&utm_campaign=spring")
    visit(api, "x", 48, "page=2")  # no campaign: not a touch
    visit(api, "x", 24, "utm_source=facebook&utm_medium=paid_social&utm_campaign=fall")
    buy(api, "x", 1, 600)
    visit(api, "y", 30, "utm_source=newsletter&utm_medium=email&utm_campaign=news")
    buy(api, "y", 2, 100)
    buy(api, "z", 2, 50)  # never came through a campaign
    process_all(api)
    api.cold.flush_all()
    body = get(api, "model=linear&from=2026-11-21&to=2026-11-21").json()  # NOW_US's date
    assert body["conversions"] == 3
    got = [(r["campaign_id"], r["conversions"], r["value"]) for r in body["rows"]]
    assert got == [
        ("(direct)", 1.0, {"USD": 50.0}),  # z
        ("news", 1.0, {"USD": 100.0}),  # y
        ("fall", 0.5, {"USD": 300.0}),  # half of x
        ("spring", 0.5, {"USD": 300.0}),
    ]
    body = get(api, "model=time_decay&from=2026-11-21&to=2026-11-21").json()
    x_fall, x_spring = 2 ** (-23 / 168), 2 ** (-71 / 168)  # 23 h and 71 h, half-life 168 h
    by_campaign = {r["campaign_id"]: r["conversions"] for r in body["rows"]}
    assert by_campaign["fall"] == pytest.approx(x_fall / (x_fall + x_spring))  # 0.5493
    assert by_campaign["spring"] == pytest.approx(x_spring / (x_fall + x_spring))  # 0.4507
