"""Sending one request safely: a timeout, a capped answer, no redirects, no metadata hosts.

An endpoint is refused when its host is (or resolves to) a link-local or
cloud-metadata address, unless the destination sets ``allow_private_network``:
a configured URL must not be able to reach the instance's credentials service.
Loopback stays allowed (local stand-ins and sidecar proxies). The check runs at
start and before each send, because a name can resolve elsewhere later.

httpx stays in here: a request that gets no whole answer raises our
``TransportError`` (``TransportTimeout`` for a timeout), raised from httpx's error.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from convtrack.deliver.base import OutboundRequest
from convtrack.errors import TransportError, TransportTimeout

MAX_ANSWER_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECS = 5.0
RESOLVE_CACHE_SECS = 30.0
DEFAULT_CONNECTIONS = 100  # httpx's own defaults, kept as floors
DEFAULT_KEEPALIVE = 20

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
REASON_CHARS = 500

# Errors raised once the whole request had left, while waiting for or reading the
# answer: the platform may have taken it. A write error or timeout means the request
# never fully left (a platform acts on no half request), so it is retried like a
# refused connection.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)

Answer = tuple[int, dict[str, str], bytes]
Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to (empty when it does not resolve now)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def forbidden_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in _METADATA_ADDRESSES or any(address in net for net in _LINK_LOCAL)


class EndpointGuard:
    """Says why a URL must not be called, or None; caches resolutions briefly."""

    def __init__(self, *, allow_private_network: bool, resolver: Resolver = resolve) -> None:
        self._allow = allow_private_network
        self._resolver = resolver
        self._cache: dict[str, tuple[float, str | None]] = {}

    def refusal(self, url: str) -> str | None:
        """Why ``url`` is refused (names the host, never the path: it may hold a secret)."""
        if self._allow:
            return None
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        if not host:
            return "endpoint has no host"
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and now - cached[0] < RESOLVE_CACHE_SECS:
            return cached[1]
        reason = self._check(host)
        self._cache[host] = (now, reason)
        return reason

    def _check(self, host: str) -> str | None:
        if host in _METADATA_HOSTS:
            return f"endpoint host {host} is a cloud metadata service (allow_private_network)"
        addresses = [host] if _is_address(host) else self._resolver(host)
        for address in addresses:
            if forbidden_address(address):
                return (
                    f"endpoint host {host} resolves to {address}, a link-local or cloud "
                    "metadata address (set allow_private_network to allow it)"
                )
        return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_of(url: str) -> str:
    return urlsplit(url).hostname or "?"


def transport_error(exc: httpx.HTTPError, url: str) -> TransportError:
    """httpx's error as ours; its text without the URL's path or query (they may hold a
    secret: Slack, GA4), naming the host instead."""
    text = f"{type(exc).__name__}: {exc}".replace(url, host_of(url))
    message = f"{text} ({host_of(url)})"[:REASON_CHARS]
    kind = TransportTimeout if isinstance(exc, httpx.TimeoutException) else TransportError
    return kind(message, maybe_sent=isinstance(exc, _MAYBE_SENT))


class Sender:
    """Sends one request: never follows redirects, reads at most ``MAX_ANSWER_BYTES``."""

    def __init__(
        self,
        *,
        timeout_secs: float = 20.0,
        connections: int = 1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``connections``: requests that may be out at once (thread-safe: httpx's pool);
        as many connections are kept alive for the next ones."""
        self._timeout_secs = timeout_secs
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_secs, connect=min(CONNECT_TIMEOUT_SECS, timeout_secs)),
            limits=httpx.Limits(
                max_connections=max(connections, DEFAULT_CONNECTIONS),
                max_keepalive_connections=max(connections, DEFAULT_KEEPALIVE),
            ),
            follow_redirects=False,
            transport=transport,
        )

    def send(self, request: OutboundRequest) -> Answer:
        """Status, headers (lower-case names) and the start of the body; raises
        ``TransportError`` when no whole answer came (``TransportTimeout`` also when a
        slow body outlasts the whole timeout)."""
        try:
            return self._send(request)
        except httpx.HTTPError as exc:
            raise transport_error(exc, request.url) from exc

    def _send(self, request: OutboundRequest) -> Answer:
        deadline = time.monotonic() + self._timeout_secs
        with self._client.stream(
            request.method, request.url, headers=request.headers, content=request.body
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_ANSWER_BYTES:
                    break  # the rest is not read: closing the stream drops it
                if time.monotonic() > deadline:  # httpx's read timeout is per chunk
                    raise httpx.ReadTimeout("the answer took longer than the timeout")
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, headers, b"".join(chunks)[:MAX_ANSWER_BYTES]

    def close(self) -> None:
        self._client.close()
