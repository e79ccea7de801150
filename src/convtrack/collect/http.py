"""A thin layer over raw ASGI: requests in, JSON answers out.

No framework: the ingest path is hot, and a plain ASGI callable keeps our
rate close to a bare stub on the same server.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import msgspec

from convtrack.model import codes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_json = msgspec.json.Encoder()
JSON_HEADERS = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    """The body is (or decompresses to) more than the limit."""


class BadEncoding(Exception):
    """The body's Content-Encoding is unsupported or the compressed data is corrupt."""


class Request:
    __slots__ = ("_query", "headers", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = parse_qs(raw, keep_blank_values=True) if raw else {}
        return self._query

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def client_host(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    async def body(self, limit: int) -> bytes:
        """Read the whole body, refusing more than ``limit`` bytes (after decompression)."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        encoding = content_coding(self.headers.get("content-encoding", ""))
        if encoding is None:
            raise BadEncoding
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise BodyTooLarge if size > limit else ConnectionAbortedError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if encoding in ("gzip", "deflate"):
            return _inflate(raw, encoding, limit)
        return raw


_CODINGS = {"identity": "identity", "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def content_coding(header: str) -> str | None:
    """The one coding a Content-Encoding field names: identity, gzip or deflate; None if other.

    RFC 9110 8.4: the field is a list (``#content-coding``) whose empty elements
    are ignored, so an empty field names no coding (identity); codings are
    case-insensitive, ``x-gzip`` is ``gzip`` (8.4.1.3). A list of more than one
    coding (``gzip, gzip``) is not supported here."""
    named = [item.strip(" \t").lower() for item in header.split(",")]
    named = [item for item in named if item]
    if not named:
        return "identity"
    if len(named) > 1:
        return None
    return _CODINGS.get(named[0])


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadEncoding from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    return out


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else list(JSON_HEADERS)

    async def send(self, send: Send) -> None:
        headers = self.headers
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    status: int, content: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    all_headers = list(JSON_HEADERS)
    if headers:
        all_headers.extend(headers)
    return Response(status, _json.encode(content), all_headers)


def error(status: int, code: str, **extra: Any) -> Response:
    headers: list[tuple[bytes, bytes]] = []
    retry_after = extra.pop("retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return json_response(status, {"error": code, **extra}, headers)


# What a body may be sent as; text/plain is what navigator.sendBeacon sends, and a body
# without Content-Type is read as JSON too.
JSON_MEDIA_TYPES = ("application/json", "text/plain")
# curl -d's default, and what some old browsers' beacons send: read when it is JSON text.
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_ACCEPT_POST = ", ".join(JSON_MEDIA_TYPES).encode()
_ACCEPT_ENCODING = b"gzip, deflate"  # and x-gzip, identity (see content_coding)
_SEND_JSON = 'send JSON with "Content-Type: application/json" (or text/plain)'


class JsonBody(msgspec.Struct, frozen=True):
    """A body that was read: its bytes, the decoded value, or why it is not JSON."""

    raw: bytes
    value: Any = None
    code: str | None = None  # body_empty, json_invalid or json_too_deep


def unsupported_media_type(message: str) -> Response:
    """415 ``unsupported_media_type``; ``Accept-Post`` lists what would have been read."""
    refused = error(415, codes.ERR_UNSUPPORTED_MEDIA_TYPE, message=message)
    refused.headers.append((b"accept-post", _ACCEPT_POST))
    return refused


def unsupported_encoding(message: str) -> Response:
    """415 ``unsupported_content_encoding``, with ``Accept-Encoding`` (RFC 9110, 15.5.16)."""
    refused = error(415, codes.ERR_UNSUPPORTED_ENCODING, message=message)
    refused.headers.append((b"accept-encoding", _ACCEPT_ENCODING))
    return refused


async def read_json(
    request: Request,
    limit: int,
    decode: Callable[[bytes], Any] = msgspec.json.decode,
    form_json: bool = False,
) -> JsonBody | Response:
    """Read and decode a JSON body; a Response is the refusal (413 or 415) to send.

    ``decode`` may shape the value (a route's own faster reading); it raises what
    ``msgspec.json.decode`` raises for text that is not JSON or nests too deep.
    ``form_json``: a body sent as application/x-www-form-urlencoded is read too, and
    refused 415 unless it is JSON text (the ingest routes, for curl -d and old beacons)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    as_form = form_json and media_type == FORM_MEDIA_TYPE
    if media_type and media_type not in JSON_MEDIA_TYPES and not as_form:
        shown = content_type.strip()[:100]
        return unsupported_media_type(f"Content-Type {shown!r} is not read here: {_SEND_JSON}")
    try:
        raw = await request.body(limit)
    except BodyTooLarge:
        return error(413, codes.ERR_BODY_TOO_LARGE, limit_bytes=limit)
    except BadEncoding:
        shown = request.headers.get("content-encoding", "").strip()[:100]
        return unsupported_encoding(
            f"Content-Encoding {shown!r} is not read here, or the body is not in that coding:"
            " send one of gzip, x-gzip, deflate or identity (or none)"
        )
    if not raw.strip():
        return JsonBody(raw, code=codes.BODY_EMPTY)
    try:
        return JsonBody(raw, decode(raw))
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
        if as_form:  # a real form (a=b&c=d), not JSON sent with curl -d's default type
            return unsupported_media_type(
                f"the body was sent as {FORM_MEDIA_TYPE} (curl -d's default) and is not JSON"
                f" text: {_SEND_JSON}"
            )
        return JsonBody(raw, code=codes.JSON_INVALID)
    except RecursionError:
        return JsonBody(raw, code=codes.JSON_TOO_DEEP)
