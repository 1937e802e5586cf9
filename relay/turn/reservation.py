"""EVEN-PORT reservations that any worker process can honour (RFC 8656 §7.2, §14.9).

An Allocate with EVEN-PORT and the R bit gets an even relayed port, and the next port is
held for the client's second allocation, named by an 8-byte RESERVATION-TOKEN. That
second Allocate usually comes from another client socket, which SO_REUSEPORT may hash to
another worker process. So the token carries what is needed to claim the port anywhere,
protected by a MAC under a key every worker shares::

    port (16 bits) | IPv6 flag (1 bit) + issue time (15 low bits of seconds) | MAC (32 bits)

The port is held by a "holder" socket: SO_REUSEPORT and connected to itself, so the kernel
delivers it nothing (a connected socket in a reuseport group only matches its own peer).
The claiming worker binds the port with SO_REUSEPORT too, then turns the option off, which
makes any further bind of that port fail: a token is good once, whichever worker sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

RESERVATION_LIFETIME = 30.0  # RFC 8656 §7.2: a reservation is held for about 30 s
_TOKEN = struct.Struct("!HH4s")
_TIME_BITS = 0x7FFF
_IPV6_FLAG = 0x8000


class ReservationTokens:
    """Mints and checks RESERVATION-TOKENs under a key shared by the workers."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, port: int, flags_time: int, issued: int) -> bytes:
        message = struct.pack("!HHQ", port, flags_time, issued)
        return hmac.new(self._key, message, hashlib.sha256).digest()[:4]

    def mint(self, family: socket.AddressFamily, port: int, now: float) -> bytes:
        issued = int(now)
        flags_time = (issued & _TIME_BITS) | (_IPV6_FLAG if family == socket.AF_INET6 else 0)
        return _TOKEN.pack(port, flags_time, self._mac(port, flags_time, issued))

    def verify(self, token: bytes, now: float) -> tuple[socket.AddressFamily, int] | None:
        """(family, port) of a genuine token less than 30 s old, else ``None``."""
        if len(token) != _TOKEN.size:
            return None
        port, flags_time, mac = _TOKEN.unpack(token)
        # Rebuild the full issue time from its low 15 bits: the latest time <= now.
        current = int(now)
        issued = current - ((current - flags_time) & _TIME_BITS)
        if current - issued > RESERVATION_LIFETIME:
            return None
        if not hmac.compare_digest(mac, self._mac(port, flags_time, issued)):
            return None
        family = socket.AF_INET6 if flags_time & _IPV6_FLAG else socket.AF_INET
        return family, port
