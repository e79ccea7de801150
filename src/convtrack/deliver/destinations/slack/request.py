"""Conversions and operator alerts to Slack incoming-webhook messages, pure.

A message has ``text`` (the notification fallback) and ``blocks`` (what the
channel shows), both in Slack's mrkdwn. Lines show what a marketer reads:
event name, value in major units after its currency (``EUR 12.50``), campaign, country,
device. Nothing that identifies a person is shown: no user ids, no hashes, no
IP or user agent. Values we did not write (names, campaigns) are escaped, so
``<!channel>`` in a campaign name cannot ping anyone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from convtrack.deliver.base import OutboundRequest
from convtrack.deliver.payload import Payload
from convtrack.model.currency import format_money

SECTION_CHARS = 3000  # Slack's limit for a section's text
FIELD_CHARS = 60
ALERT_CHARS = 2800
UNKNOWN_COUNTRY = "ZZ"
NO_CAMPAIGN = "(none)"

_encoder = msgspec.json.Encoder(order="deterministic")
_SPACES = re.compile(r"\s+")
_LEADING_EMOJI = re.compile(r"^(:[a-z0-9_+-]+:)\s+(.+)$", re.DOTALL)
DEFAULT_ALERT_EMOJI = ":warning:"


def escape(text: str) -> str:
    """Slack's three control characters, as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def field(value: object, limit: int = FIELD_CHARS) -> str:
    """One value on one line, cut to ``limit`` characters and escaped."""
    text = _SPACES.sub(" ", str(value)).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text)


def utc_time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def value_text(payload: Payload) -> str | None:
    value, currency = payload.value, payload.currency
    if value is None or not currency:
        return None
    return field(format_money(value, currency))


def conversion_line(payload: Payload) -> str:
    """``*Purchase* · EUR 12.50 · campaign spring · DE · mobile``"""
    parts = [f"*{field(payload.event_name or '?')}*"]
    value = value_text(payload)
    if value is not None:
        parts.append(value)
    campaign = payload.campaign_id
    if campaign and campaign != NO_CAMPAIGN:
        parts.append(f"campaign {field(campaign)}")
    country = payload.country_code
    if country and country != UNKNOWN_COUNTRY:
        parts.append(field(country))
    if payload.device_type:
        parts.append(field(payload.device_type))
    return " · ".join(parts)


def totals(payloads: Sequence[Payload]) -> str:
    """The batch's value per currency in major units: ``EUR 37.50 + USD 10.00``."""
    sums: dict[str, int] = {}
    for payload in payloads:
        currency, value = payload.currency, payload.value
        if currency is not None and value is not None:
            sums[currency] = sums.get(currency, 0) + value
    return " + ".join(field(format_money(v, c)) for c, v in sorted(sums.items()))


def time_span(payloads: Sequence[Payload]) -> str:
    times = [p.event_time_us for p in payloads]
    first, last = utc_time(min(times)), utc_time(max(times))
    return first if first == last else f"{first} to {last}"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def conversions_message(payloads: Sequence[Payload], max_lines: int) -> dict[str, Any]:
    if not payloads:
        raise ValueError("a Slack message needs at least one conversion")
    count = len(payloads)
    total = totals(payloads)
    footer = context(f"convtrack · {time_span(payloads)}")
    if count == 1:
        line = conversion_line(payloads[0])
        return {"text": f"New conversion: {line}",
                "blocks": [section(f":moneybag: {line}"), footer]}  # fmt: skip
    lines = [f"• {conversion_line(p)}" for p in payloads[:max_lines]]
    if count > max_lines:
        lines.append(f"_…and {count - max_lines} more_")
    blocks = [section(f":moneybag: *{count} conversions*" + (f" · {total}" if total else ""))]
    blocks += [section(text) for text in sections_of(lines)]
    blocks.append(footer)
    return {"text": f"{count} conversions" + (f": {total}" if total else ""), "blocks": blocks}


def sections_of(lines: Sequence[str]) -> list[str]:
    """Lines joined into as few section texts as Slack's size limit allows.

    Escaping can make a line several times longer than its values, so the
    split is by characters, not by a count of lines.
    """
    texts: list[str] = []
    for line in lines:
        if texts and len(texts[-1]) + 1 + len(line) <= SECTION_CHARS:
            texts[-1] += "\n" + line
        else:
            texts.append(line)
    return texts


def alert_message(destination: str, text: str, now_us: int) -> dict[str, Any]:
    """An operator alert: a sign, a bold title, the alert, and when it was raised.

    The sign is ``:warning:`` unless the text starts with its own emoji code
    (the runner's ``:white_check_mark:`` for a resolved alert), which then
    takes its place instead of showing two.
    """
    emoji, body = DEFAULT_ALERT_EMOJI, text.strip()
    own = _LEADING_EMOJI.match(body)
    if own is not None:
        emoji, body = own.group(1), own.group(2)
    body = escape(body)
    if len(body) > ALERT_CHARS:
        body = body[: ALERT_CHARS - 1] + "…"
    return {
        "text": f"{emoji} convtrack alert: {body}",
        "blocks": [
            section(f"{emoji} *convtrack alert*\n{body}"),
            context(f"convtrack · {field(destination)} · {utc_time(now_us)}"),
        ],
    }


def post(url: str, message: dict[str, Any]) -> OutboundRequest:
    return OutboundRequest(method="POST", url=url,
                           headers={"Content-Type": "application/json"},
                           body=_encoder.encode(message))  # fmt: skip
