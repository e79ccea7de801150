"""The country of an IP address, offline: ISO 3166-1 alpha-2, "ZZ" when unknown.

The data is ``iptocc``'s: the five Regional Internet Registries' delegation
files, rebuilt nightly and embedded in the package's Rust extension, so a
lookup reads no file and opens no socket. It is the country a registry
*assigned* the block to, which agrees with commercial geolocation for about
95% of IPv4 addresses. Registry codes that are not ISO 3166-1 countries
(RIPE's "EU") count as unknown.

Addresses that are not on the public internet (private, loopback,
link-local, multicast, reserved, shared, documentation) are "ZZ" before any
lookup; an IPv4-mapped IPv6 address is looked up as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from functools import cache, lru_cache

UNKNOWN = "ZZ"
CACHE_SIZE = 16384
MAX_ADDRESS_CHARS = 64  # the longest IPv6 text with a scope id fits well within

_lookup: Callable[[str], str | None] | None = None
_lookup_lock = threading.Lock()


def _database() -> Callable[[str], str | None]:
    """The lookup function, its data loaded on first use (once, whichever thread asks)."""
    global _lookup
    if _lookup is None:
        with _lookup_lock:
            if _lookup is None:
                import iptocc

                def lookup(address: str) -> str | None:
                    return iptocc.country_code(address)

                lookup("8.8.8.8")  # the first lookup builds the tables: pay it here
                _lookup = lookup
    return _lookup


@cache
def iso3166_alpha2() -> frozenset[str]:
    import pycountry

    return frozenset(str(country.alpha_2) for country in pycountry.countries)


def country_of(ip: str | None) -> str:
    """The country ``ip`` was assigned to, else "ZZ" (never raises)."""
    if not ip or len(ip) > MAX_ADDRESS_CHARS:
        return UNKNOWN
    return _country(ip.strip())


@lru_cache(maxsize=CACHE_SIZE)
def _country(text: str) -> str:
    address = parse_address(text)
    if address is None or not is_public(address):
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        text = str(address.ipv4_mapped)
    code = _database()(text)
    return code if code in iso3166_alpha2() else UNKNOWN


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address written in ``text`` (strict: no blanks, zone or leading zeros), else None.

    The C parser: ``ipaddress.ip_address`` takes 30 us for an IPv6 address, this 1 us.
    """
    try:
        if ":" in text:
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """On the public internet, judged by the ``ipaddress`` properties.

    ``is_global`` is false for private, loopback, link-local, unspecified,
    shared (100.64.0.0/10), documentation and benchmarking addresses; it
    leaves multicast and reserved to their own properties. An IPv4-mapped
    IPv6 address is judged as its IPv4 address.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast and not address.is_reserved
