"""Client address lists: the networks a source or the admin UI accepts, and which
address a request came from behind trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = ["Network", "address_allowed", "client_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[Any]) -> tuple[list[Network], list[str]]:
    """CIDRs (or single addresses) parsed, and the values that are not."""
    networks, bad = [], []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            bad.append(str(value))
    return networks, bad


def _in(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Iterable[Network]
) -> str | None:
    """The client's address: X-Forwarded-For is believed only from trusted proxies,
    and then the rightmost address that is not itself a trusted proxy."""
    trusted = list(trusted)
    if peer is None or not forwarded_for or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


def address_allowed(address: str | None, allowed: Iterable[Network]) -> bool:
    return address is not None and _in(address, allowed)
