"""Packed peer addresses, parsed once per client IP.

A tracker sees the same client addresses again and again (every announce, every
connection id check), and ``ipaddress`` parses one in microseconds; ``packed_ip`` asks
the C library and remembers the last 64k answers. An IPv4-mapped IPv6 address (a
dual-stack socket's IPv4 client) packs as the IPv4 address it maps: that peer is an IPv4
peer (BEP 23 ``peers``), not an IPv6 one (BEP 7 ``peers6``).
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Final

__all__ = ["packed_ip", "unpacked_ip"]

_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


@lru_cache(maxsize=65536)
def packed_ip(host: str) -> bytes | None:
    """The 4- or 16-byte form of the IP address ``host``, or None when it is not one. A
    zone suffix (``fe80::1%eth0``) is ignored."""
    host = host.partition("%")[0]
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        return None
    return packed[12:] if packed[:12] == _V4_MAPPED else packed


@lru_cache(maxsize=65536)
def unpacked_ip(packed: bytes) -> str:
    """The canonical text of a 4- or 16-byte address."""
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed)
