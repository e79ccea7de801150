"""The envelope: one accepted event as it travels through the log and beyond."""

from __future__ import annotations

from typing import Any

import msgspec

# Session events open or refresh sessions; everything else is a conversion
# unless ``conversions.event_names`` says otherwise (CONTRACT.md).
SESSION_EVENT_NAMES = frozenset({"page_view", "identify"})


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A validated, normalized event. Contact fields are already hashed.

    Times are epoch microseconds, UTC. ``received_at_us`` is the collector's
    receive time; later stages add their own stamps beside the envelope
    (the log entry's ``logged_at_us``, the processor's processed time).
    """

    event_id: str
    source: str
    event_name: str
    event_time_us: int
    received_at_us: int
    user_id: str | None = None
    session_id: str | None = None
    value: int | None = None
    currency: str | None = None
    campaign_id: str | None = None
    conversion_token: str | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    user: dict[str, str] = msgspec.field(default_factory=dict)
    click_ids: dict[str, str] = msgspec.field(default_factory=dict)
    consent: dict[str, bool] = msgspec.field(default_factory=dict)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    event_id_derived: bool = False
    key_role: str = "write"

    @property
    def partition_key(self) -> str:
        """Events of one user (or session) share a key so they stay in order."""
        return self.user_id or self.session_id or self.event_id


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes) -> Envelope:
    return _decoder.decode(payload)


def text(value: object) -> str | None:
    """A non-empty string as given, else None: for the free-form values of
    ``context`` and ``properties``, which are not checked on arrival."""
    return value if isinstance(value, str) and value else None
