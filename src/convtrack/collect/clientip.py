"""The end user's IP: the socket's, or X-Forwarded-For only when a trusted proxy sent it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: list[Network] = [
            ipaddress.ip_network(cidr.strip(), strict=False) for cidr in trusted_proxies
        ]

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def resolve(self, socket_host: str | None, forwarded_for: str | None) -> str | None:
        if socket_host is None or not self._trusted or not self._is_trusted(socket_host):
            return socket_host
        if not forwarded_for:
            return socket_host
        # Walk from the nearest hop back; the first address we do not trust is the client.
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return socket_host
        return hops[0] if hops else socket_host
