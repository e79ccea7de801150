"""Countries of real addresses from the shipped registry data, offline."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from convtrack.process.enrich import geo
from convtrack.process.enrich.geo import country_of

# Long-standing allocations whose registry country is unambiguous.
PUBLIC = {
    "8.8.8.8": "US",  # Google Public DNS (ARIN)
    "9.9.9.9": "US",  # Quad9
    "80.128.0.1": "DE",  # Deutsche Telekom, 80.128.0.0/11 (RIPE)
    "217.0.0.1": "DE",  # Deutsche Telekom, 217.0.0.0/13
    "193.0.6.139": "NL",  # RIPE NCC's own
    "81.2.69.142": "GB",
    "210.130.0.1": "JP",  # IIJ (APNIC via JPNIC)
    "200.160.2.3": "BR",  # NIC.br (LACNIC)
    "2001:4860:4860::8888": "US",  # Google Public DNS, IPv6
    "2003::1": "DE",  # Deutsche Telekom, 2003::/19
    "2001:67c:2e8::1": "NL",  # RIPE NCC, IPv6
    "2001:200::1": "JP",  # WIDE project
    "::ffff:8.8.8.8": "US",  # IPv4-mapped: looked up as IPv4
    " 8.8.8.8 ": "US",  # surrounding blanks
}
NOT_PUBLIC = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "0.0.0.0",
    "169.254.1.1",  # link-local
    "100.64.0.1",  # carrier-grade NAT
    "203.0.113.5",  # documentation
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "::ffff:10.0.0.1",  # IPv4-mapped private
    "fc00::1",  # unique local
    "2001:db8::1",  # documentation
    "ff02::1",  # multicast
]
INVALID = ["not an ip", "", "8.8.8", "8.8.8.8:443", "256.1.1.1", "[2001:4860::8888]", "x" * 500]


@pytest.mark.parametrize(("ip", "country"), PUBLIC.items())
def test_public_addresses_have_their_registry_country(ip: str, country: str) -> None:
    assert country_of(ip) == country


@pytest.mark.parametrize("ip", NOT_PUBLIC)
def test_addresses_off_the_public_internet_are_unknown(ip: str) -> None:
    assert country_of(ip) == "ZZ"


@pytest.mark.parametrize("ip", [*INVALID, None])
def test_invalid_or_missing_addresses_are_unknown(ip: str | None) -> None:
    assert country_of(ip) == "ZZ"


def test_registry_codes_that_are_not_countries_are_unknown() -> None:
    # RIPE delegates some blocks to "EU"; ISO 3166-1 has no such country.
    import iptocc

    assert iptocc.country_code("145.218.1.91") == "EU"
    assert country_of("145.218.1.91") == "ZZ"


def test_every_code_is_an_iso_country_or_zz() -> None:
    codes = {country_of(f"{a}.{b}.7.9") for a in range(1, 224, 3) for b in range(0, 256, 17)}
    assert codes <= geo.iso3166_alpha2() | {"ZZ"}
    assert len(codes) > 20


def test_the_database_loads_on_a_first_use_from_many_threads_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(geo, "_lookup", None)
    geo._country.cache_clear()
    start = threading.Barrier(8)

    def first(ip: str) -> str:
        start.wait()
        return country_of(ip)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(first, ["8.8.8.8", "80.128.0.1"] * 4))
    assert results == ["US", "DE"] * 4
    assert geo._lookup is not None


def test_lookups_need_no_network() -> None:
    """In a fresh interpreter whose sockets all fail, the data still loads and answers."""
    code = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network used")
socket.socket = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from convtrack.process.enrich.geo import country_of
print(country_of("8.8.8.8"), country_of("2003::1"), country_of("10.0.0.1"))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["US", "DE", "ZZ"]
