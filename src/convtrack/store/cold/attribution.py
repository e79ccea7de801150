"""Multi-touch attribution over the lake: SQL on a DuckDB connection from ``query.connect``.

Definitions (also in docs/http-api.md):

- A **conversion** is a counted one (``counted.COUNTED``: the verdict the
  hot counters counted, bots included only under ``conversions.count_bots``)
  whose ``event_date`` is between ``from`` and ``to`` inclusive.
- A **touch** is a row with ``touch_source`` not null: the event carried its
  own campaign facts (utm parameters, click ids, referrer). Its campaign is
  ``touch_campaign``, else the row's ``campaign_id``. Touches may be older
  than ``from``.
- A conversion's **journey** is the touches of the same person: the same
  ``source`` and the same ``user_id``, or, for rows without a ``user_id``,
  the same ``session_id`` (a user id never matches a session id). A touch is
  in the journey when its ``event_time`` is at or before the conversion's and
  at most ``lookback_days`` before it (a touch exactly ``lookback_days`` old
  counts). The conversion row itself is a touch of its own journey when it
  has a ``touch_source``. Touches at the same ``event_time`` are ordered by
  their position in the event log.
- A conversion without any touch in its journey is credited to the campaign
  ``(direct)``.

Models, the credit of each touch of a journey of ``n`` touches:

- ``last_touch``: 1 to the last touch.
- ``first_touch``: 1 to the first touch.
- ``linear``: ``1/n`` to each.
- ``position_based``: 0.4 to the first and 0.4 to the last, 0.2 split
  equally among the ones between; with 2 touches 0.5 each; with 1 touch 1.
- ``time_decay``: weight ``2^(-(t_conversion - t_touch) / 7 days)``,
  normalized so a conversion's weights sum to 1.

Each campaign (of the touch) gets ``conversions``, the sum of its credits
(a float), and per currency ``value``, the sum of credit times the conversion's
value in minor units, rounded to 2 decimals (a float: 1/3 of 1000 cents is
333.33). Credits of every conversion sum to 1, so the campaigns'
``conversions`` sum to the number of conversions (up to float rounding).

Everything per event is done in SQL (a join of conversions to touches,
window functions over each journey); Python only reads the per-campaign rows.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Final, Literal, get_args

import msgspec

from convtrack.store.cold.counted import COUNTED

if TYPE_CHECKING:  # the CLI imports MODELS without paying for DuckDB
    import duckdb

Model = Literal["last_touch", "first_touch", "linear", "position_based", "time_decay"]
MODELS: Final[tuple[Model, ...]] = get_args(Model)

DIRECT: Final = "(direct)"
DEFAULT_LOOKBACK_DAYS: Final = 30
HALF_LIFE_DAYS: Final = 7
_DAY_US: Final = 86_400_000_000

# The credit of one journey row as a SQL expression, per model: the only text
# put into the SQL. ``pos`` is the touch's 1-based position in its journey,
# ``n`` the journey's number of touches (0 for a conversion without any: its
# single row, campaign (direct), gets 1), ``decay`` the time-decay weight.
_CREDIT: Final[dict[Model, str]] = {
    "last_touch": "CASE WHEN n = 0 OR pos = n THEN 1.0 ELSE 0.0 END",
    "first_touch": "CASE WHEN pos = 1 THEN 1.0 ELSE 0.0 END",
    "linear": "CASE WHEN n = 0 THEN 1.0 ELSE 1.0 / n END",
    "position_based": (
        "CASE WHEN n <= 1 THEN 1.0 WHEN n = 2 THEN 0.5"
        " WHEN pos = 1 OR pos = n THEN 0.4 ELSE 0.2 / (n - 2) END"
    ),
    "time_decay": "CASE WHEN n = 0 THEN 1.0 ELSE decay / sum(decay) OVER journey END",
}

_SQL: Final = """
WITH conversion AS (
    SELECT source_partition AS cp, source_offset AS co, source, event_time AS t,
           CASE WHEN user_id IS NOT NULL THEN 'u' ELSE 's' END AS who_kind,
           coalesce(user_id, session_id) AS who, value, currency
    FROM events
    WHERE {counted} AND event_date BETWEEN $first AND $last
),
touch AS (
    SELECT source_partition AS tp, source_offset AS tpo, source, event_time AS t,
           CASE WHEN user_id IS NOT NULL THEN 'u' ELSE 's' END AS who_kind,
           coalesce(user_id, session_id) AS who,
           coalesce(touch_campaign, campaign_id) AS campaign
    FROM events
    WHERE touch_source IS NOT NULL
      -- Only to skip files and row groups early, with a day to spare either
      -- side (event_date is the UTC date of event_time); the join decides.
      AND event_time >= CAST($first AS DATE) - to_days($lookback_days + 1)
      AND event_time < CAST($last AS DATE) + to_days(2)
),
journey AS (
    SELECT c.cp, c.co, c.value, c.currency, t.campaign,
           -- 1 for the last touch, less for older ones: the same ratios as
           -- 2^(-age/half_life) from the conversion, and never all zero.
           pow(2.0, -(epoch_us(max(t.t) OVER journey) - epoch_us(t.t)) / $half_life_us)
               AS decay,
           row_number() OVER (journey ORDER BY t.t, t.tp, t.tpo) AS pos,
           count(t.t) OVER journey AS n
    FROM conversion AS c
    LEFT JOIN touch AS t
      ON t.source = c.source AND t.who_kind = c.who_kind AND t.who = c.who
     AND t.t <= c.t AND epoch_us(c.t) - epoch_us(t.t) <= $lookback_us
    WINDOW journey AS (PARTITION BY c.cp, c.co)
),
credited AS (
    SELECT coalesce(campaign, '{direct}') AS campaign, value, currency, {credit} AS credit
    FROM journey
    WINDOW journey AS (PARTITION BY cp, co)
),
per_currency AS (
    SELECT campaign, currency, sum(credit) AS credit, round(sum(credit * value), 2) AS amount
    FROM credited
    WHERE credit > 0  -- a touch a model gives nothing is no row of its campaign
    GROUP BY campaign, currency
)
SELECT campaign, sum(credit) AS conversions,
       list(currency ORDER BY currency)
           FILTER (WHERE currency IS NOT NULL AND amount IS NOT NULL) AS currencies,
       list(amount ORDER BY currency)
           FILTER (WHERE currency IS NOT NULL AND amount IS NOT NULL) AS amounts
FROM per_currency
GROUP BY campaign
-- Rounded so credits that are equal but summed in another order tie.
ORDER BY round(conversions, 9) DESC, campaign
"""


class AttributionRow(msgspec.Struct, frozen=True):
    campaign_id: str
    conversions: float  # the sum of this campaign's credits
    value: dict[str, float]  # currency -> credited value, minor units, 2 decimals


def attribute(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    date_from: date,
    date_to: date,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> list[AttributionRow]:
    """Credit per campaign of the conversions with event dates ``date_from`` to ``date_to``.

    Sorted by conversions (most first), then campaign. ``lookback_days``
    must not be negative; an unknown model is a ``ValueError``.
    """
    if model not in _CREDIT:
        raise ValueError(f"model must be one of {', '.join(MODELS)}")
    if lookback_days < 0:
        raise ValueError("lookback_days must not be negative")
    sql = _SQL.format(credit=_CREDIT[model], direct=DIRECT, counted=COUNTED)
    params = {
        "first": date_from.isoformat(),
        "last": date_to.isoformat(),
        "lookback_days": lookback_days,
        "lookback_us": lookback_days * _DAY_US,
        "half_life_us": HALF_LIFE_DAYS * _DAY_US,
    }
    rows = con.execute(sql, params).fetchall()
    return [
        AttributionRow(
            campaign_id=str(campaign),
            conversions=float(credit),
            value=dict(zip(currencies or [], (float(a) for a in amounts or []), strict=True)),
        )
        for campaign, credit, currencies, amounts in rows
    ]


def count_conversions(con: duckdb.DuckDBPyConnection, date_from: date, date_to: date) -> int:
    """The number of conversions ``attribute`` credits over the same dates."""
    row = con.execute(
        f"SELECT count(*) FROM events WHERE {COUNTED} AND event_date BETWEEN ? AND ?",
        [date_from.isoformat(), date_to.isoformat()],
    ).fetchone()
    return int(row[0]) if row else 0
