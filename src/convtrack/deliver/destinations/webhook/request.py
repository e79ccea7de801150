"""Events to a signed webhook request (Standard Webhooks v1), pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest

# "sorted": the payload's fields by name, as the keys of the dict it once was ("deterministic"
# would keep a struct's fields in their declared order): the body's bytes are unchanged.
_encoder = msgspec.json.Encoder(order="sorted")


def message_id(destination: str, events: Sequence[Forwarded]) -> str:
    """Stable across retries: named by the batch's first and last source positions."""
    first, last = events[0], events[-1]
    seed = (
        f"{destination}:{first.source_partition}:{first.source_offset}:"
        f"{last.source_partition}:{last.source_offset}:{len(events)}"
    )
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def build_request(
    *, destination: str, endpoint: str, secret: bytes, events: Sequence[Forwarded], now_us: int
) -> OutboundRequest:
    if not events:
        raise ValueError("a webhook batch needs at least one event")
    body = _encoder.encode({"events": [event.payload for event in events]})
    msg_id = message_id(destination, events)
    timestamp = now_us // 1_000_000
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    return OutboundRequest(method="POST", url=endpoint, headers=headers, body=body)
