"""Abuse limits: registration caps per IP and per network (/24 for IPv4, /64 for IPv6)
against Sybil floods of peer identities. (Request rate limits, per IP or per credential,
are applied with the credential, in ``rendezvous.api.access``.)
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from rendezvous import keys
from rendezvous.api.errors import ApiError
from rendezvous.bittorrent.addresses import packed_ip, unpacked_ip

EXEMPT = frozenset({"/livez", "/readyz", "/metrics"})


def client_ip(request: web.Request) -> str:
    """The canonical IP of the request's source (``canonical_ip``)."""
    return canonical_ip(request.remote or "")


def canonical_ip(remote: str) -> str:
    """IPv4 for an IPv4-mapped IPv6 address, an IP as it prints, or the raw remote when it
    is not an IP (a unix socket)."""
    packed = packed_ip(remote)
    return remote if packed is None else unpacked_ip(packed)


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


async def admit(request: web.Request, peer_id: str, ttl: float) -> None:
    """Count ``peer_id`` against its IP's and network's caps; 429 when over."""
    settings = request.app[keys.SETTINGS]
    ip = client_ip(request)
    try:
        network = network_of(ip)
    except ValueError:
        return  # not an IP (a unix socket): nothing to count
    admitted = await request.app[keys.STORE].admit(
        network,
        ip,
        peer_id,
        per_ip=settings.peers_per_ip,
        per_network=settings.peers_per_network,
        ttl=ttl,
        now=request.app[keys.CLOCK](),
    )
    if not admitted:
        raise ApiError(
            429,
            "too_many_peers",
            f"your address or network already holds the most peers this server allows "
            f"({settings.peers_per_ip} per IP, {settings.peers_per_network} per {network})",
        )
