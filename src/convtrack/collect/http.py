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


_ACCEPTED_TYPES = ("application/json", "text/plain", "")  # text/plain: what sendBeacon sends


class JsonBody(msgspec.Struct, frozen=True):
    """A body that was read: its bytes, the decoded value, or why it is not JSON."""

    raw: bytes
    value: Any = None
    code: str | None = None  # body_empty, json_invalid or json_too_deep


async def read_json(
    request: Request, limit: int, decode: Callable[[bytes], Any] = msgspec.json.decode
) -> JsonBody | Response:
    """Read and decode a JSON body; a Response is the refusal (413 or 415) to send.

    ``decode`` may shape the value (a route's own faster reading); it raises what
    ``msgspec.json.decode`` raises for text that is not JSON or nests too deep."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _ACCEPTED_TYPES:
        return error(415, codes.ERR_UNSUPPORTED_MEDIA_TYPE)
    try:
        raw = await request.body(limit)
    except BodyTooLarge:
        return error(413, codes.ERR_BODY_TOO_LARGE, limit_bytes=limit)
    except BadEncoding:
        return error(415, codes.ERR_UNSUPPORTED_ENCODING)
    if not raw.strip():
        return JsonBody(raw, code=codes.BODY_EMPTY)
    try:
        return JsonBody(raw, decode(raw))
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
        return JsonBody(raw, code=codes.JSON_INVALID)
    except RecursionError:
        return JsonBody(raw, code=codes.JSON_TOO_DEEP)
