"""STUN server arguments: ``HOST``, ``HOST:PORT``, ``[IPV6]:PORT``, optionally with a
``stun:`` scheme; and their resolution to one IPv4 and one IPv6 transport address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from client_sdk.netcheck.report import NetcheckError
from client_sdk.netcheck.stun import Address

STUN_PORT = 3478  # RFC 8489 §18.5 (5349 for STUN over TLS)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    text: str  # as given
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    spec: ServerSpec
    ipv4: Address | None
    ipv6: Address | None

    def address(self, family: socket.AddressFamily) -> Address | None:
        return self.ipv4 if family == socket.AF_INET else self.ipv6


def split_host_port(text: str, default_port: int, *, what: str) -> tuple[str, int]:
    """``host[:port]`` / ``[v6][:port]`` / a bare IPv6 address -> (host, port)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host:
            raise NetcheckError(f"{what} {text!r}: unbalanced '[' in an IPv6 address")
        if rest and not rest.startswith(":"):
            raise NetcheckError(f"{what} {text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise NetcheckError(f"{what} {text!r}: no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise NetcheckError(f"{what} {text!r}: the port must be 1-65535")
    return host, int(port_text)


def parse_server(text: str) -> ServerSpec:
    """One ``--stun`` argument; NetcheckError names what is wrong with it."""
    stripped = text.strip()
    if stripped.lower().startswith("stun:"):
        stripped = stripped[5:]
    if not stripped or any(c.isspace() for c in stripped) or "/" in stripped:
        raise NetcheckError(f"STUN server {text!r}: expected HOST:PORT")
    host, port = split_host_port(stripped, STUN_PORT, what="STUN server")
    return ServerSpec(text, host, port)


def format_address(address: Address) -> str:
    """``ip:port``, or ``[ip6]:port``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(spec: ServerSpec) -> ResolvedServer:
    """The first IPv4 and the first IPv6 address of ``spec`` (an IP literal resolves to
    itself); NetcheckError when it has neither."""
    try:
        literal = ipaddress.ip_address(spec.host)
    except ValueError:
        literal = None
    if literal is not None:
        address = (str(literal), spec.port)
        if literal.version == 4:
            return ResolvedServer(spec, address, None)
        return ResolvedServer(spec, None, address)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(spec.host, spec.port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise NetcheckError(f"cannot resolve STUN server {spec.text!r}: {exc}") from exc
    ipv4 = ipv6 = None
    for family, _, _, _, sockaddr in infos:
        host, port = str(sockaddr[0]), int(sockaddr[1])
        if family == socket.AF_INET and ipv4 is None:
            ipv4 = (host, port)
        elif family == socket.AF_INET6 and ipv6 is None:
            ipv6 = (host, port)
    if ipv4 is None and ipv6 is None:
        raise NetcheckError(f"STUN server {spec.text!r} has no IPv4 or IPv6 address")
    return ResolvedServer(spec, ipv4, ipv6)
