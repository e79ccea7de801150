"""``POST /v1/conversion-tokens``: a server key asks for a signed token for one transaction."""

from __future__ import annotations

from typing import Any

from convtrack.clock import Clock
from convtrack.collect.auth import ApiKey
from convtrack.collect.http import (
    Request,
    Response,
    json_response,
    read_json,
)
from convtrack.model import codes
from convtrack.model.identifiers import identifier_text
from convtrack.model.timeparse import format_us
from convtrack.model.tokens import issue_token

MAX_ORDER_ID_CHARS = 256
# Room for 256 characters even when every one is sent as a JSON surrogate-pair escape.
MAX_BODY_BYTES = 8192
_NO_STORE = [(b"cache-control", b"no-store")]


def _failed(field: str, code: str) -> Response:
    errors = [{"field": field, "code": code, "message": codes.message(code)}]
    return json_response(400, {"error": codes.ERR_VALIDATION, "errors": errors})


def valid_order_id(value: object) -> str | None:
    """The order id in NFC, by the rule every identifier follows (model/identifiers.py)."""
    return identifier_text(value, MAX_ORDER_ID_CHARS, integers=False)


class ConversionTokens:
    """Issues tokens bound to the issuing key's source; the first secret signs."""

    def __init__(self, *, secrets: tuple[bytes, ...], ttl_secs: int, clock: Clock) -> None:
        if not secrets:
            raise ValueError("conversion tokens need at least one secret")
        self._secret = secrets[0]
        self._ttl_secs = ttl_secs
        self._clock = clock

    async def issue(self, request: Request, key: ApiKey, route: str) -> Response:
        read = await read_json(request, MAX_BODY_BYTES)
        if isinstance(read, Response):
            return read
        if read.code is not None:
            return _failed("body", read.code)
        body: Any = read.value
        if not isinstance(body, dict):
            return _failed("body", codes.BODY_NOT_OBJECT)
        order_id = valid_order_id(body.get("order_id"))
        if order_id is None:
            return _failed("order_id", codes.ORDER_ID_INVALID)
        # Whole milliseconds, so that expires_at (RFC 3339 with ms) is the exact expiry.
        now_us = self._clock.now_us() // 1000 * 1000
        issued = issue_token(self._secret, order_id, key.source, now_us, self._ttl_secs)
        content = {"conversion_token": issued.token, "expires_at": format_us(issued.expires_at_us)}
        return json_response(200, content, _NO_STORE)
