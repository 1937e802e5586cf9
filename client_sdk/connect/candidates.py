"""Candidates: the addresses a peer offers for its connectivity socket, and the ones it
punches toward (issue #6, the direct path).

A peer has one UDP socket for connectivity (``client_sdk.connect.udp``), bound to
``0.0.0.0`` on a random high port. It offers, in this order:

* ``srflx``: the socket's own server-reflexive address, learned by a STUN Binding from
  that very socket (a mapping of another socket would be useless behind a NAT);
* ``host``: the socket's port on each local IPv4 address (not loopback, not link-local):
  what works between two peers on one LAN, or behind one NAT without hairpinning.

A reflexive address equal to a host candidate (no NAT) is offered once, as ``host``.
``relay`` candidates (TURN) come with the relay fallback; IPv6 with a dual-stack socket.

``punch_targets`` is the other half -- pairing, with a single local socket, is just the
list of remote addresses to probe: the UDP IPv4 candidates a peer sent, checked (they
come from the network), without duplicates, at most ``MAX_TARGETS``. Pure functions,
except ``local_ipv4_addresses`` (which reads the interfaces).
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
    "local_candidates",
    "local_ipv4_addresses",
    "punch_targets",
]

Address = tuple[str, int]

MAX_OFFERED = 8  # what we send (the server takes at most 16)
MAX_TARGETS = 16  # what we probe, whatever the peer sends
PUNCHABLE_TYPES = ("host", "srflx", "prflx")


def _usable_ipv4(ip: str) -> ipaddress.IPv4Address | None:
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
            address = _usable_ipv4(ip.ip)
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
    hosts = [ip for ip in dict.fromkeys(host_ips) if _usable_ipv4(ip) is not None]
    offered: list[Candidate] = []
    seen: set[Address] = set()
    for ip, mapped_port in reflexive:
        if (ip, mapped_port) in seen or _usable_ipv4(ip) is None:
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


def punch_targets(candidates: Sequence[Any]) -> tuple[Address, ...]:
    """The addresses to probe among a peer's ``candidates`` (``Candidate``s, from the
    network): UDP, punchable types, a usable IPv4 address and a port in 1-65535; order
    kept, duplicates dropped, at most ``MAX_TARGETS``."""
    targets: list[Address] = []
    for candidate in candidates:
        if not isinstance(candidate, Candidate):
            continue
        if candidate.protocol != "udp" or candidate.type not in PUNCHABLE_TYPES:
            continue
        if not isinstance(candidate.port, int) or not 0 < candidate.port < 65536:
            continue
        address = _usable_ipv4(candidate.ip) if isinstance(candidate.ip, str) else None
        if address is None:
            continue
        target = (str(address), candidate.port)
        if target not in targets:
            targets.append(target)
        if len(targets) == MAX_TARGETS:
            break
    return tuple(targets)
