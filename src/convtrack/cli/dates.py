"""UTC dates as the CLI takes them: ``YYYY-MM-DD``, or relative to today (UTC).

``today``, ``yesterday`` and ``Nd`` (N days ago: ``0d`` is today, ``7d`` a
week ago) let a command in a README or a cron line always name a day that
can hold data, whatever day it runs on.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import click

DATE_FORMS = "YYYY-MM-DD, today, yesterday or Nd (N days ago, UTC)"
_DAYS_AGO = re.compile(r"(\d{1,5})d")


def parse_day(text: str, today: date | None = None) -> date | None:
    """The UTC date ``text`` names, or None when it names none."""
    today = today or datetime.now(UTC).date()
    word = text.strip().lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - timedelta(days=1)
    ago = _DAYS_AGO.fullmatch(word)
    if ago is not None:
        return today - timedelta(days=int(ago.group(1)))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def day_option(text: str, param_hint: str) -> date:
    """``parse_day`` for a command-line option: a clear usage error when it names no date."""
    day = parse_day(text)
    if day is None:
        raise click.BadParameter(f"{text!r} is not a date: use {DATE_FORMS}", param_hint=param_hint)
    return day
