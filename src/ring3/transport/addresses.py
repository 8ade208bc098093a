"""Sets of networks that a client address is checked against once per connection: the sources a PROXY
listener accepts (server.proxy_protocol_from) and the trusted proxies (server.trusted_proxies)."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MEMO_ENTRIES = 4096  # addresses whose verdict is remembered


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, IPv4-mapped IPv6 ones as IPv4 (a dual-stack listener's peers); None if invalid."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressSet:
    """Networks; `host in networks` for an address in text, remembered for the next connection."""

    __slots__ = ("_memo", "_networks")

    def __init__(self, values: tuple[str, ...]) -> None:
        self._networks: list[Network] = [ipaddress.ip_network(value, strict=False) for value in values]
        self._memo: dict[str, bool] = {}

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        verdict = self._memo.get(host)
        if verdict is None:
            address = parse_address(host)
            verdict = address is not None and any(address in network for network in self._networks)
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict
