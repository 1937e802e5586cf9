"""Candidates: the addresses a peer offers for its connectivity socket, and the ones it
punches toward (issue #6, the direct path).

A peer has one UDP socket for connectivity (``client_sdk.connect.udp``), bound to
``0.0.0.0`` on a random high port. It offers, in this order:

* ``srflx``: the socket's own server-reflexive address, learned by a STUN Binding from
  that very socket (a mapping of another socket would be useless behind a NAT);
* ``host``: the socket's port on each local IPv4 address (not loopback, not link-local):
  what works between two peers on one LAN, or behind one NAT without hairpinning.

A reflexive address equal to a host candidate (no NAT) is offered once, as ``host``.
Every distinct reflexive address is offered: a NAT that maps per destination
("address-and-port-dependent mapping", RFC 4787 §4.1, the "symmetric" NAT) gives the
socket a different port toward each STUN server (or toward a server's RFC 5780
OTHER-ADDRESS), so its peer sees two ``srflx`` candidates on one IP with different ports
and knows, from the candidates alone, that this side is "hard" (``mapping_varies``; what
``client_sdk.connect.predict`` does about it).
``relay`` candidates (TURN) come with the relay fallback; IPv6 with a dual-stack socket.

``punch_targets`` is the other half -- pairing, with a single local socket, is just the
list of remote addresses to probe: the UDP IPv4 candidates a peer sent, checked (they
come from the network), without duplicates, at most ``MAX_TARGETS``. ``srflx_addresses``,
``mapping_varies`` and ``varying_ips`` read a peer's reflexive candidates the same way.
Pure functions, except ``local_ipv4_addresses`` (which reads the interfaces).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from client_sdk.rendezvous.http import Candidate

__all__ = [
    "MAX_OFFERED",
    "MAX_TARGETS",
    "Address",
    "addresses_of",
    "local_candidates",
    "local_ipv4_addresses",
    "mapping_varies",
    "punch_targets",
    "srflx_addresses",
    "usable_ipv4",
    "varying_ips",
]

Address = tuple[str, int]

MAX_OFFERED = 8  # what we send (the server takes at most 16)
MAX_TARGETS = 16  # what we probe, whatever the peer sends
PUNCHABLE_TYPES = ("host", "srflx", "prflx")


def usable_ipv4(ip: str) -> ipaddress.IPv4Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if not isinstance(address, ipaddress.IPv4Address):
        return None
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return None
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return address


def local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses that another host could reach: not loopback, not
    link-local (``ifaddr``, which aioice already depends on)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):  # IPv6 entries are tuples
                continue
            address = usable_ipv4(ip.ip)
            if address is None or address.is_loopback or address.is_link_local:
                continue
            if ip.ip not in found:
                found.append(ip.ip)
    return found


def local_candidates(
    port: int, host_ips: Iterable[str], reflexive: Iterable[Address] = ()
) -> list[Candidate]:
    """What to offer for a socket on ``port``: its reflexive addresses first (what works
    across NATs), then its host addresses; at most ``MAX_OFFERED``."""
    hosts = [ip for ip in dict.fromkeys(host_ips) if usable_ipv4(ip) is not None]
    offered: list[Candidate] = []
    seen: set[Address] = set()
    for ip, mapped_port in reflexive:
        if (ip, mapped_port) in seen or usable_ipv4(ip) is None:
            continue
        if mapped_port == port and ip in hosts:
            continue  # no NAT: it is a host candidate
        seen.add((ip, mapped_port))
        offered.append(Candidate(ip, mapped_port, "udp", "srflx"))
    for ip in hosts:
        if (ip, port) not in seen:
            seen.add((ip, port))
            offered.append(Candidate(ip, port, "udp", "host"))
    return offered[:MAX_OFFERED]


def _checked(candidate: Any, types: Sequence[str]) -> Address | None:
    """A peer's candidate (from the network) as an address: a ``Candidate`` of one of
    ``types``, UDP, a usable IPv4 address and a port in 1-65535; None otherwise."""
    if not isinstance(candidate, Candidate):
        return None
    if candidate.protocol != "udp" or candidate.type not in types:
        return None
    port = candidate.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return None
    address = usable_ipv4(candidate.ip) if isinstance(candidate.ip, str) else None
    if address is None:
        return None
    return (str(address), port)


def addresses_of(
    candidates: Sequence[Any], types: Sequence[str], limit: int = MAX_TARGETS
) -> tuple[Address, ...]:
    """The addresses of a peer's ``candidates`` (``Candidate``s, from the network) of one
    of ``types``: UDP, a usable IPv4 address and a port in 1-65535; order kept,
    duplicates dropped, at most ``limit``."""
    found: list[Address] = []
    for candidate in candidates:
        address = _checked(candidate, types)
        if address is not None and address not in found:
            found.append(address)
            if len(found) == limit:
                break
    return tuple(found)


def punch_targets(candidates: Sequence[Any]) -> tuple[Address, ...]:
    """The addresses to probe among a peer's ``candidates``: its host, reflexive and
    peer-reflexive ones (``addresses_of``)."""
    return addresses_of(candidates, PUNCHABLE_TYPES)


def srflx_addresses(candidates: Sequence[Any]) -> tuple[Address, ...]:
    """A peer's server-reflexive addresses among ``candidates`` (``addresses_of``)."""
    return addresses_of(candidates, ("srflx",))


def varying_ips(candidates: Sequence[Any]) -> tuple[str, ...]:
    """The IPs for which a peer offered two or more ``srflx`` candidates with different
    ports: its NAT gave its one socket a new public port per destination (RFC 4787
    §4.1 "address and port-dependent mapping"). In order of first appearance."""
    ports: dict[str, set[int]] = {}
    for ip, port in srflx_addresses(candidates):
        ports.setdefault(ip, set()).add(port)
    return tuple(ip for ip, seen in ports.items() if len(seen) > 1)


def mapping_varies(candidates: Sequence[Any]) -> bool:
    """Whether the peer that offered ``candidates`` is "hard": its NAT maps its socket
    per destination (see ``varying_ips``). Never raises on what the network sends."""
    return bool(varying_ips(candidates))
