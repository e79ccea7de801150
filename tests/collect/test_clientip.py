"""The client IP: the socket's, or X-Forwarded-For only from configured trusted proxies."""

from __future__ import annotations

from convtrack.collect.clientip import ClientIpResolver


def test_without_trusted_proxies_the_socket_address_wins() -> None:
    assert ClientIpResolver([]).resolve("127.0.0.1", "203.0.113.9") == "127.0.0.1"


def test_a_trusted_proxy_passes_the_nearest_untrusted_hop() -> None:
    resolver = ClientIpResolver(["10.0.0.0/8", "127.0.0.1/32"])
    assert resolver.resolve("10.1.2.3", "198.51.100.7, 203.0.113.9, 10.0.0.5") == "203.0.113.9"
    assert resolver.resolve("10.1.2.3", None) == "10.1.2.3"
    assert resolver.resolve("192.0.2.1", "203.0.113.9") == "192.0.2.1"  # not a trusted proxy
    assert resolver.resolve("10.1.2.3", "not-an-ip") == "10.1.2.3"
    assert resolver.resolve("10.1.2.3", "10.0.0.9") == "10.0.0.9"  # only trusted hops
