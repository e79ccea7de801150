"""Validate one decoded event body into an Envelope, or a list of typed field errors.

Pure: the receive time, the key's source and role, and the request's IP and
user agent come in as ``IngestFacts``; nothing here reads a clock or a socket.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from convtrack.model import codes
from convtrack.model.currency import iso4217_codes
from convtrack.model.event import Envelope
from convtrack.model.identifiers import identifier_text, is_blank
from convtrack.model.pii import USER_FIELDS, hash_user
from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.tokens import verify_token

KNOWN_FIELDS = frozenset(
    {
        "event_id", "event_name", "user_id", "session_id", "timestamp", "value",
        "currency", "campaign_id", "conversion_token", "properties", "context",
        "user", "click_ids", "consent",
    }
)  # fmt: skip
CLICK_ID_FIELDS = frozenset(
    {"gclid", "gbraid", "wbraid", "fbclid", "fbc", "fbp", "ttclid", "li_fat_id", "msclkid"}
)
CONSENT_FIELDS = frozenset({"ad_user_data", "ad_personalization", "analytics"})
CONTEXT_STRING_FIELDS = ("page_url", "referrer", "user_agent", "ip")
CAMPAIGN_FIELDS = frozenset({"source", "medium", "name", "term", "content"})
# Lengths, in code points after NFC normalization (see model/identifiers.py for the rule).
MAX_ID_CHARS = 128  # event_id, event_name, campaign_id
MAX_USER_ID_CHARS = 256  # user_id, session_id
MAX_MAP_TEXT_CHARS = 1024  # a context.campaign member, a click id
# The most one event may carry, in minor units (10^12 cents is 10 billion dollars). The hot
# stores sum values in signed 64-bit integers: at this bound a total still holds more than
# 9 million events at the maximum, so no plausible day of one campaign can overflow it.
MAX_VALUE = 10**12


class Rules(msgspec.Struct, frozen=True, kw_only=True):
    """The limits validation enforces (built from the ``limits`` settings)."""

    max_event_age_secs: int = 604_800
    max_future_secs: int = 600
    max_properties: int = 200
    max_depth: int = 8
    max_string_chars: int = 8192


class FieldError(msgspec.Struct, frozen=True):
    field: str
    code: str
    message: str


class IngestFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the collector knows about the request, besides its body."""

    source: str
    key_role: str
    received_at_us: int
    query_event_id: str | None = None
    client_ip: str | None = None
    client_user_agent: str | None = None
    # Conversion-token secrets, the signing one first; none: every token is invalid.
    token_secrets: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # every field, but never the secrets
        fields = [
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name != "token_secrets"
        ]
        fields.append(f"token_secrets=<{len(self.token_secrets)} hidden>")
        return f"IngestFacts({', '.join(fields)})"


def _err(field: str, code: str) -> FieldError:
    return FieldError(field, code, codes.message(code))


def _fits(value: object, rules: Rules) -> bool:
    """True when a JSON tree stays within the depth, node-count and string limits."""
    budget = rules.max_properties
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth >= rules.max_depth:
                return False
            budget -= len(node)
            for key, child in node.items():
                if len(key) > rules.max_string_chars:
                    return False
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth >= rules.max_depth:
                return False
            budget -= len(node)
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str) and len(node) > rules.max_string_chars:
            return False
        if budget < 0:
            return False
    return True


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"{[:,")


def within_limits(raw: bytes, rules: Rules) -> bool:
    """True when an event's JSON text is too small to break any ``_fits`` limit.

    Sufficient, not necessary: no string or key is longer than the whole text;
    every container node is a ``:`` (a dict entry) or a list element (at most one
    more than its list's commas); and no chain of nested containers is longer
    than the count of ``{`` and ``[``. Characters inside strings only add to the
    counts, so the bound holds for any text. A typical event passes in a few
    byte scans, instead of the tree walk ``_fits`` makes.
    """
    if len(raw) > rules.max_string_chars:
        return False
    structure = raw.translate(None, _NOT_STRUCTURE)  # one pass; what is left is short
    opened = structure.count(b"{")
    if opened + structure.count(b"[") > rules.max_depth:
        return False
    return len(structure) - opened <= rules.max_properties  # the ':', ',' and '['


def _string_map(
    value: object, allowed: frozenset[str], limit: int, *, names: bool = False
) -> dict[str, str] | None:
    """An object of strings (numbers taken as text); with ``names``, each non-empty
    member follows the identifier rule and is kept in NFC."""
    if not isinstance(value, dict):
        return None
    out: dict[str, str] = {}
    for key, item in value.items():
        if key not in allowed:
            return None
        text = str(item) if isinstance(item, int | float) and not isinstance(item, bool) else item
        if not isinstance(text, str) or len(text) > limit:
            return None
        if names and text:
            named = identifier_text(text, limit)
            if named is None:
                return None
            text = named
        out[key] = text
    return out


def fingerprint(body: dict[str, Any], source: str) -> str:
    """A deterministic event_id for a body sent without one: identical retries dedupe."""
    canonical = msgspec.json.encode(body, order="sorted")
    digest = hashlib.sha256(source.encode() + b"\x00" + canonical).hexdigest()
    return "fp-" + digest[:40]


def validate_event(
    body: dict[str, Any], facts: IngestFacts, rules: Rules, raw: bytes | None = None
) -> Envelope | list[FieldError]:
    """``raw``: the JSON text ``body`` was decoded from, when the caller has it; a
    small one spares the walks over properties, context and extra keys."""
    errors: list[FieldError] = []
    bounded = raw is not None and within_limits(raw, rules)

    # event_id: body, query string, or a fingerprint.
    event_id: str | None = None
    raw_id = body.get("event_id")
    if raw_id is not None:
        event_id = identifier_text(raw_id, MAX_ID_CHARS)
        if event_id is None:
            errors.append(_err("event_id", codes.EVENT_ID_INVALID))
    if facts.query_event_id is not None:
        query_id = identifier_text(facts.query_event_id, MAX_ID_CHARS)
        if query_id is None:
            errors.append(_err("event_id", codes.EVENT_ID_INVALID))
        elif event_id is not None and query_id != event_id:
            errors.append(_err("event_id", codes.EVENT_ID_MISMATCH))
        elif raw_id is None:
            event_id = query_id

    event_name = body.get("event_name")
    if event_name is None or is_blank(event_name):
        errors.append(_err("event_name", codes.EVENT_NAME_MISSING))
    else:
        event_name = identifier_text(event_name, MAX_ID_CHARS, integers=False)
        if event_name is None:
            errors.append(_err("event_name", codes.EVENT_NAME_INVALID))

    user_id = session_id = None
    if body.get("user_id") is not None:
        user_id = identifier_text(body["user_id"], MAX_USER_ID_CHARS)
        if user_id is None:
            errors.append(_err("user_id", codes.USER_ID_INVALID))
    if body.get("session_id") is not None:
        session_id = identifier_text(body["session_id"], MAX_USER_ID_CHARS)
        if session_id is None:
            errors.append(_err("session_id", codes.SESSION_ID_INVALID))
    if body.get("user_id") is None and body.get("session_id") is None:
        errors.append(_err("user_id", codes.USER_ID_MISSING))

    event_time_us = facts.received_at_us
    raw_ts = body.get("timestamp")
    if raw_ts is not None:
        parsed = parse_timestamp_us(raw_ts)
        if parsed is None:
            errors.append(_err("timestamp", codes.TIMESTAMP_INVALID))
        elif parsed - facts.received_at_us > rules.max_future_secs * 1_000_000:
            errors.append(_err("timestamp", codes.TIMESTAMP_IN_FUTURE))
        elif facts.received_at_us - parsed > rules.max_event_age_secs * 1_000_000:
            errors.append(_err("timestamp", codes.TIMESTAMP_TOO_OLD))
        else:
            event_time_us = parsed

    value, currency = _check_money(body, errors)

    campaign_id = body.get("campaign_id")
    properties = body.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict) or not (bounded or _fits(properties, rules)):
        errors.append(_err("properties", codes.PROPERTIES_INVALID))
        properties = {}
    if campaign_id is None:
        campaign_id = properties.get("campaign_id")
    if campaign_id is not None:
        campaign_id = identifier_text(campaign_id, MAX_ID_CHARS)
        if campaign_id is None:
            errors.append(_err("campaign_id", codes.CAMPAIGN_ID_INVALID))

    token = body.get("conversion_token")
    # Forged, tampered, malformed, another source's, or expired when received.
    if token is not None and (
        not isinstance(token, str)
        or verify_token(facts.token_secrets, token, facts.source, facts.received_at_us) is None
    ):
        errors.append(_err("conversion_token", codes.CONVERSION_TOKEN_INVALID))
        token = None

    context = _check_context(body.get("context"), facts, rules, errors, bounded)
    click_ids = _check_click_ids(body.get("click_ids"), context, errors)

    user: dict[str, str] = {}
    if body.get("user") is not None:
        raw_user = _string_map(body["user"], USER_FIELDS, rules.max_string_chars)
        if raw_user is None:
            errors.append(_err("user", codes.USER_INVALID))
        else:
            user = hash_user(raw_user)

    consent: dict[str, bool] = {}
    raw_consent = body.get("consent")
    if raw_consent is not None:
        if isinstance(raw_consent, dict) and all(
            k in CONSENT_FIELDS and isinstance(v, bool) for k, v in raw_consent.items()
        ):
            consent = raw_consent
        else:
            errors.append(_err("consent", codes.CONSENT_INVALID))

    extra = {k: v for k, v in body.items() if k not in KNOWN_FIELDS}
    if extra and not (bounded or _fits(extra, rules)):
        errors.append(_err("body", codes.PROPERTIES_INVALID))

    if errors:
        return errors
    assert isinstance(event_name, str)
    derived = event_id is None
    if event_id is None:
        event_id = fingerprint(body, facts.source)
    return Envelope(
        event_id=event_id,
        source=facts.source,
        event_name=event_name,
        event_time_us=event_time_us,
        received_at_us=facts.received_at_us,
        user_id=user_id,
        session_id=session_id,
        value=value,
        currency=currency,
        campaign_id=campaign_id,
        conversion_token=token,
        properties=properties,
        context=context,
        user=user,
        click_ids=click_ids,
        consent=consent,
        extra=extra,
        event_id_derived=derived,
        key_role=facts.key_role,
    )


def _check_money(body: dict[str, Any], errors: list[FieldError]) -> tuple[int | None, str | None]:
    value = body.get("value")
    currency = body.get("currency")
    good_value: int | None = None
    good_currency: str | None = None
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(_err("value", codes.VALUE_NOT_NUMBER))
        elif isinstance(value, float):
            errors.append(_err("value", codes.VALUE_NOT_INTEGER_MINOR_UNITS))
        elif value < 0:
            errors.append(_err("value", codes.VALUE_NEGATIVE))
        elif value > MAX_VALUE:
            errors.append(_err("value", codes.VALUE_TOO_LARGE))
        else:
            good_value = value
        if currency is None:
            errors.append(_err("currency", codes.CURRENCY_MISSING))
    if currency is not None:
        if not isinstance(currency, str) or not currency:
            errors.append(_err("currency", codes.CURRENCY_UNKNOWN))
        elif currency != currency.upper():
            errors.append(_err("currency", codes.CURRENCY_NOT_UPPERCASE))
        elif currency not in iso4217_codes():
            errors.append(_err("currency", codes.CURRENCY_UNKNOWN))
        else:
            good_currency = currency
        if value is None:
            errors.append(_err("value", codes.VALUE_MISSING))
    return good_value, good_currency


def _check_context(
    raw: object, facts: IngestFacts, rules: Rules, errors: list[FieldError], bounded: bool
) -> dict[str, Any]:
    if raw is None:
        context: dict[str, Any] = {}
    elif not isinstance(raw, dict) or not (bounded or _fits(raw, rules)):
        errors.append(_err("context", codes.CONTEXT_INVALID))
        return {}
    else:
        context = dict(raw)
    for name in CONTEXT_STRING_FIELDS:
        item = context.get(name)
        if item is not None and not isinstance(item, str):
            errors.append(_err(f"context.{name}", codes.CONTEXT_INVALID))
    if "campaign" in context:
        campaign = _string_map(context["campaign"], CAMPAIGN_FIELDS, MAX_MAP_TEXT_CHARS, names=True)
        if campaign is None:
            errors.append(_err("context.campaign", codes.CONTEXT_INVALID))
        else:
            context["campaign"] = campaign
    # A browser's request speaks for its user; a backend passes its user's own.
    if facts.key_role == "write":
        if not context.get("ip") and facts.client_ip:
            context["ip"] = facts.client_ip
        if not context.get("user_agent") and facts.client_user_agent:
            context["user_agent"] = facts.client_user_agent
    return context


def _check_click_ids(
    raw: object, context: dict[str, Any], errors: list[FieldError]
) -> dict[str, str]:
    merged: dict[str, str] = {}
    for field, source in (("context.click_ids", context.get("click_ids")), ("click_ids", raw)):
        if source is None:
            continue
        parsed = _string_map(source, CLICK_ID_FIELDS, MAX_MAP_TEXT_CHARS, names=True)
        if parsed is None:
            errors.append(_err(field, codes.CLICK_IDS_INVALID))
        else:
            merged.update(parsed)
    return merged
