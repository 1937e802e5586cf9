"""Abuse limits: a token bucket per client IP in the store (every instance shares it),
and registration caps per IP and per network (/24 for IPv4, /64 for IPv6) against
Sybil floods of peer identities.

The rate limit costs one more store round trip per request; ``--rate-limit 0`` turns it
off (e.g. behind a proxy that limits already, or for benchmarks).
"""

from __future__ import annotations

import ipaddress
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from rendezvous import keys
from rendezvous.api.errors import ApiError

EXEMPT = frozenset({"/livez", "/readyz", "/metrics"})


def client_ip(request: web.Request) -> str:
    remote = request.remote or ""
    try:
        address = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def network_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) an address belongs to."""
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[keys.SETTINGS]
    if settings.rate_limit > 0 and request.path not in EXEMPT:
        allowed = await request.app[keys.STORE].take(
            f"ip:{client_ip(request)}",
            rate=settings.rate_limit,
            burst=settings.rate_burst,
            now=request.app[keys.CLOCK](),
        )
        if not allowed:
            retry = max(1, math.ceil(1 / settings.rate_limit))
            raise ApiError(
                429,
                "rate_limited",
                f"more than {settings.rate_limit:g} requests/s from your address",
                headers={"Retry-After": str(retry)},
            )
    return await handler(request)


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
