"""Segment-spec messages (what Segment's and RudderStack's libraries send) as native events.

Pure: a message, the request's facts and the batch's shared members in; an
Envelope or field errors out, through the one native validation
(``validate_event``), so a Segment message is held to the same rules. The
mapping is the table in docs/http-api.md ("Segment spec").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from convtrack.model import codes
from convtrack.model.currency import minor_digits
from convtrack.model.event import Envelope
from convtrack.model.scrub import contact_digest
from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.validate import (
    CAMPAIGN_FIELDS,
    KNOWN_FIELDS,
    MAX_VALUE,
    FieldError,
    IngestFacts,
    Rules,
    fingerprint,
    validate_event,
)

# A message is Segment's when it has none of our ``event_name`` and one of these.
MARKERS = ("type", "messageId", "userId", "anonymousId", "event")
# The types a message may have; each maps to an event name (a track's is its ``event``).
TYPE_NAMES = {"track": None, "identify": "identify", "page": "page_view", "screen": "page_view"}
# Members of the Segment envelope that the mapping reads or that mean nothing here.
SEGMENT_FIELDS = frozenset(
    {
        "type", "event", "messageId", "userId", "anonymousId", "properties", "context",
        "traits", "timestamp", "originalTimestamp", "sentAt", "receivedAt", "integrations",
        "_metadata", "writeKey", "channel", "version", "name", "category", "options",
    }
)  # fmt: skip
# Native members a Segment message may also carry (Segment has no word for them).
PASSED_THROUGH = ("campaign_id", "conversion_token", "consent", "click_ids", "session_id")
# Segment context members kept as they are (device facts; no contact data).
KEPT_CONTEXT = ("library", "locale", "timezone", "app", "os", "screen")
# Contact traits, in Segment's (and its snake_case) spelling, to our ``user`` fields.
TRAIT_FIELDS = {
    "email": "email", "phone": "phone", "firstName": "first_name", "first_name": "first_name",
    "lastName": "last_name", "last_name": "last_name", "city": "city", "state": "state",
    "postalCode": "zip", "postal_code": "zip", "zip": "zip", "country": "country",
}  # fmt: skip
MONEY_FIELDS = ("revenue", "value", "total")
# Native error fields named as the sender wrote them.
_FIELD_NAMES = {
    "event_id": "messageId",
    "event_name": "event",
    "user_id": "userId",
    "session_id": "anonymousId",
    "user": "traits",
    "currency": "properties.currency",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Numbers as their decimal text: money is converted from what was sent, not a float.
_exact = msgspec.json.Decoder(float_hook=Decimal)


class BatchShared(msgspec.Struct, frozen=True):
    """A batch body's top-level ``sentAt`` and ``context``: they apply to every message."""

    sent_at: Any = None
    context: Any = None


NO_SHARED = BatchShared()


def is_segment(body: dict[str, Any]) -> bool:
    """Told apart per event by its keys: one dict lookup for a native event."""
    if "event_name" in body:
        return False
    return any(marker in body for marker in MARKERS)


def _err(field: str, code: str) -> FieldError:
    return FieldError(field, code, codes.message(code))


def to_minor_units(amount: object, digits: int) -> int | str:
    """A major-unit amount (an int, or a Decimal holding the sent text) as integer minor
    units, or the error code. Exact: only the digits are shifted, nothing is rounded."""
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        return codes.VALUE_NOT_NUMBER
    if isinstance(amount, int):
        if amount < 0:
            return codes.VALUE_NEGATIVE
        if amount > MAX_VALUE:  # before multiplying: a huge integer stays cheap
            return codes.VALUE_TOO_LARGE
        minor = int(amount * 10**digits)
        return codes.VALUE_TOO_LARGE if minor > MAX_VALUE else minor
    if not amount.is_finite():
        return codes.VALUE_NOT_NUMBER
    sign, figures, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    # Trailing zeros are not precision (19.990 is 19.99); no Decimal context rounds here.
    significant = len(figures)
    while significant > 0 and figures[significant - 1] == 0:
        significant -= 1
    if significant == 0:
        return 0  # 0, -0, 0.000, 0e-999
    exponent += len(figures) - significant
    if sign:
        return codes.VALUE_NEGATIVE
    shift = exponent + digits
    if shift < 0:
        return codes.VALUE_TOO_PRECISE
    if significant + shift > len(str(MAX_VALUE)):  # before multiplying: 1e999999 stays cheap
        return codes.VALUE_TOO_LARGE
    minor = int("".join(map(str, figures[:significant]))) * int(10**shift)
    return codes.VALUE_TOO_LARGE if minor > MAX_VALUE else minor


def _exact_amount(raw: bytes | None, which: str, decoded: object) -> object:
    """The amount as sent: a float re-read from the message's JSON text as a Decimal."""
    if not isinstance(decoded, float):
        return decoded
    if raw is not None:
        try:
            exact = _exact.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            exact = None
        if isinstance(exact, dict):
            props = exact.get("properties")
            if isinstance(props, dict) and isinstance(props.get(which), Decimal):
                return props[which]
    return Decimal(repr(decoded))  # no text: the shortest decimal that is this float


def _money(
    props: dict[str, Any],
    raw: bytes | None,
    default_currency: str | None,
    native: dict[str, Any],
    errors: list[FieldError],
) -> str | None:
    """Fill native value and currency from properties; the amount's field, if any."""
    which = next((name for name in MONEY_FIELDS if props.get(name) is not None), None)
    if which is None:
        return None  # a price without a total (Product Viewed) is no value
    currency = props.get("currency")
    if currency is None:
        currency = default_currency
        if currency is None:
            errors.append(_err("properties.currency", codes.CURRENCY_MISSING))
    if isinstance(currency, str):
        currency = currency.strip().upper()
    native["currency"] = currency
    digits = minor_digits(currency) if isinstance(currency, str) else 2
    minor = to_minor_units(_exact_amount(raw, which, props[which]), digits)
    if isinstance(minor, str):
        errors.append(_err(f"properties.{which}", minor))
        minor = 0  # a stand-in that keeps the currency checked; the error rejects the message
    native["value"] = minor
    return which


def _rfc3339_us(epoch_us: int) -> str:
    return (_EPOCH + timedelta(microseconds=epoch_us)).isoformat().replace("+00:00", "Z")


def _event_time(
    message: dict[str, Any],
    shared: BatchShared,
    received_us: int,
    native: dict[str, Any],
    errors: list[FieldError],
) -> None:
    """Segment's clock-skew correction: received - sentAt + (original) timestamp."""
    field = "originalTimestamp" if "originalTimestamp" in message else "timestamp"
    base = message.get(field)
    if base is None:
        return  # the time received
    base_us = parse_timestamp_us(base)
    sent = message.get("sentAt", shared.sent_at)
    if base_us is None or sent is None:
        native["timestamp"] = base  # as sent: native validation judges it
        return
    sent_us = parse_timestamp_us(sent)
    if sent_us is None:
        errors.append(_err("sentAt", codes.TIMESTAMP_INVALID))
        return
    native["timestamp"] = _rfc3339_us(received_us - sent_us + base_us)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def contact_fields(traits: dict[str, Any]) -> dict[str, str]:
    """Traits to raw ``user`` fields (hashed next, by native validation); others dropped."""
    user: dict[str, str] = {}
    address = traits.get("address")
    for source in (address if isinstance(address, dict) else {}, traits):
        for name, field in TRAIT_FIELDS.items():
            text = _text(source.get(name))
            if text is not None:
                user[field] = text
    full_name = _text(traits.get("name"))
    if full_name is not None and "first_name" not in user and "last_name" not in user:
        first, _, last = full_name.partition(" ")
        user["first_name"] = first
        if last.strip():
            user["last_name"] = last.strip()
    return user


def traits_hidden(message: dict[str, Any]) -> dict[str, Any]:
    """A message as kept with the rejects: each trait's value (an identify's and the
    context's) a digest, since traits hold names and addresses under spellings that no
    scrub rule knows (``name``, ``address.street``). The scrub of model/scrub.py follows."""
    out = dict(message)
    if isinstance(out.get("context"), dict):
        out["context"] = traits_hidden(out["context"])  # the same rule, one level down
    traits = out.get("traits")
    if isinstance(traits, dict):
        out["traits"] = {k: contact_digest(v) for k, v in traits.items()}
    return out


def _context(
    message: dict[str, Any],
    kind: str,
    shared: BatchShared,
    props: dict[str, Any],
    errors: list[FieldError],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The native context, and the traits it carried."""
    raw = message.get("context")
    if raw is not None and not isinstance(raw, dict):
        errors.append(_err("context", codes.CONTEXT_INVALID))
        raw = None
    merged = {**(shared.context if isinstance(shared.context, dict) else {}), **(raw or {})}
    context: dict[str, Any] = {name: merged[name] for name in KEPT_CONTEXT if name in merged}
    for ours, theirs in (("ip", "ip"), ("user_agent", "userAgent")):
        item = merged.get(theirs, merged.get(ours))
        if item is not None:
            context[ours] = item
    page = merged.get("page")
    if page is not None and not isinstance(page, dict):
        errors.append(_err("context.page", codes.CONTEXT_INVALID))
        page = None
    page = page or {}
    fallback = props if kind in ("page", "screen") else {}
    for ours, theirs in (("page_url", "url"), ("referrer", "referrer")):
        item = page.get(theirs, fallback.get(theirs))
        if item is not None:
            context[ours] = item
    campaign = merged.get("campaign")
    if campaign is not None:
        if isinstance(campaign, dict):
            # Segment's campaign may hold any utm_ name; ours are the five UTM fields.
            context["campaign"] = {k: v for k, v in campaign.items() if k in CAMPAIGN_FIELDS}
        else:
            errors.append(_err("context.campaign", codes.CONTEXT_INVALID))
    traits = merged.get("traits")
    return context, traits if isinstance(traits, dict) else {}


def to_native(
    message: dict[str, Any],
    facts: IngestFacts,
    *,
    raw: bytes | None = None,
    shared: BatchShared = NO_SHARED,
    default_type: str = "track",
    default_currency: str | None = None,
) -> tuple[dict[str, Any], list[FieldError], str | None]:
    """The native body of a Segment message, the errors only Segment's shape can have,
    and the properties member the value came from."""
    errors: list[FieldError] = []
    native: dict[str, Any] = {}
    kind = message.get("type")
    kind = default_type if kind is None else kind.lower() if isinstance(kind, str) else None
    if kind not in TYPE_NAMES:
        return native, [_err("type", codes.TYPE_UNSUPPORTED)], None  # nothing else applies
    name = TYPE_NAMES[kind]
    native["event_name"] = message.get("event") if name is None else name
    if message.get("messageId") is not None:
        native["event_id"] = message["messageId"]
    if message.get("userId") is not None:
        native["user_id"] = message["userId"]
    for field in PASSED_THROUGH:
        if field in message:
            native[field] = message[field]
    raw_props = message.get("properties")
    props: dict[str, Any] = dict(raw_props) if isinstance(raw_props, dict) else {}
    # Not an object: passed on as it is, for native validation to name.
    native["properties"] = props if raw_props is None or isinstance(raw_props, dict) else raw_props
    if kind in ("page", "screen"):
        for field in ("name", "category"):
            if message.get(field) is not None:
                props.setdefault(field, message[field])
    context, traits = _context(message, kind, shared, props, errors)
    native["context"] = context
    if "session_id" not in native:
        raw_ctx = message.get("context")
        # RudderStack's browser session when there is one, else the anonymous id.
        session = raw_ctx.get("sessionId") if isinstance(raw_ctx, dict) else None
        if session is None:
            session = message.get("anonymousId")
        if session is not None:
            native["session_id"] = session
    if kind == "identify" and isinstance(message.get("traits"), dict):
        traits = {**traits, **message["traits"]}
    user = contact_fields(traits)
    if user:
        native["user"] = user
    _event_time(message, shared, facts.received_at_us, native, errors)
    which = _money(props, raw, default_currency, native, errors)
    for key, item in message.items():
        if key not in SEGMENT_FIELDS and key not in KNOWN_FIELDS:
            native[key] = item  # unknown members stay, as a native event's do
    return native, errors, which


def validate_segment(
    message: dict[str, Any],
    facts: IngestFacts,
    rules: Rules,
    *,
    raw: bytes | None = None,
    shared: BatchShared = NO_SHARED,
    default_type: str = "track",
    default_currency: str | None = None,
) -> Envelope | list[FieldError]:
    """Map a Segment message and validate it as a native event; errors name its fields."""
    native, errors, which = to_native(
        message, facts, raw=raw, shared=shared, default_type=default_type,
        default_currency=default_currency,
    )  # fmt: skip
    if not native:
        return errors  # type_unsupported: the rest of the message means nothing here
    derived = "event_id" not in native and facts.query_event_id is None
    if derived:
        # Over the message as sent, less its send time: a retried message dedupes.
        resent = {k: v for k, v in message.items() if k != "sentAt"}
        native["event_id"] = fingerprint(resent, facts.source)
    outcome = validate_event(native, facts, rules)
    if isinstance(outcome, Envelope) and not errors:
        return msgspec.structs.replace(outcome, event_id_derived=True) if derived else outcome
    names = {**_FIELD_NAMES, "value": f"properties.{which or 'revenue'}"}
    if "sessionId" in (message.get("context") or {}):
        names["session_id"] = "context.sessionId"
    native_errors = outcome if isinstance(outcome, list) else []
    seen = {(e.field, e.code) for e in errors}
    for e in native_errors:
        field = names.get(e.field, e.field)
        if (field, e.code) not in seen:
            errors.append(FieldError(field, e.code, e.message))
    return errors
