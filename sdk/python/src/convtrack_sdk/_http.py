"""One HTTP/1.1 connection, kept alive, on the standard library's ``http.client``.

Not thread-safe: each worker (and the token call) has its own ``HttpTransport``.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import ssl
import time
import urllib.parse
from typing import NamedTuple

from convtrack_sdk._errors import ApiError, TransportError
from convtrack_sdk._version import VERSION

USER_AGENT = f"convtrack-sdk-python/{VERSION}"
# What a kept-alive connection the server closed meanwhile fails with.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Answer(NamedTuple):
    status: int
    body: bytes
    retry_after_secs: float | None


def parse_retry_after(header: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def error_name(answer: Answer) -> str:
    """The ``error`` field of a JSON error body, else the status line's meaning."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"http_{answer.status}"


class HttpTransport:
    def __init__(
        self, endpoint: str, key: str, *, timeout_secs: float, gzip_bodies: bool = False
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http:// or https:// URL: {endpoint!r}")
        if not isinstance(key, str) or not key.strip():
            raise ValueError("a write key or server key is required")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout_secs
        self._gzip = gzip_bodies
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout,
                context=ssl.create_default_context(),
            )  # fmt: skip
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, path: str, body: bytes) -> Answer:
        """POST ``body``; raises TransportError when no answer came."""
        headers = dict(self._headers)
        if self._gzip:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        # A kept-alive connection the server has since closed fails at once: one
        # fresh try then, which is safe because every event carries its event_id.
        for fresh in (self._conn is None, True):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request("POST", self._prefix + path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, _STALE)
                if fresh or not stale:
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                continue
            if response.will_close:
                self.close()
            retry_after = parse_retry_after(response.getheader("Retry-After"), time.time())
            return Answer(response.status, data, retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def post_json(self, path: str, body: bytes) -> object:
        """POST and return the decoded JSON of a 2xx answer; raises ApiError otherwise."""
        answer = self.post(path, body)
        if not 200 <= answer.status < 300:
            raise ApiError(
                answer.status, error_name(answer), answer.body.decode("utf-8", "replace")
            )
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            raise ApiError(answer.status, "not_json", answer.body[:200].decode()) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def forget(self) -> None:
        """Drop the connection without closing it: after a fork, the socket is the parent's."""
        self._conn = None
