"""Stateless connection ids for the UDP tracker protocol (BEP 15), SYN-cookie style.

BEP 15: "Connection IDs should not be guessable by the client" and "Trackers should
accept the connection ID until two minutes after it has been send". Instead of storing
issued ids, the tracker derives them from a secret, so validating one costs one HMAC.

Layout of the 64-bit id::

    bits 63..56  slot mod 256, where slot = floor(now / lifetime)
    bits 55..0   the first 7 bytes of HMAC-SHA256(secret,
                     slot (8 bytes, signed) || packed IP (4 or 16 bytes))

(IPv4-mapped IPv6 addresses are packed as the IPv4 address they map.) The id is bound to
the client's IP, not its port: libtorrent shares one connection id among all its sockets
(a process-wide cache per tracker), and a NAT may move a client to another source port
between two packets; opentracker binds its ids to the IP alone too. The slot bits
only select which slot to recompute; the full slot number is inside the MAC, so an id
does not come back to life 256 slots later.

Validity: an id issued at time ``t`` (in slot ``s``) is accepted at ``now`` exactly when
``slot(now)`` is ``s`` or ``s + 1``. Therefore it is

* always accepted for ``t <= now <= t + lifetime`` (``now``'s slot is at most ``s + 1``);
* never accepted for ``now >= t + 2 * lifetime`` (slot ``s + 2`` or later);
* accepted in between until slot ``s + 1`` ends, and refused before slot ``s`` started
  (a clock that went backwards).

With the default ``lifetime`` of 120 s an id is thus accepted for at least the two
minutes BEP 15 asks, and never for four minutes or more. ``now`` is whatever clock the
caller uses (``time.monotonic()`` is fine within one process; a tracker restarted with
the same secret needs ``time.time()``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Final, TypeAlias

from .addresses import packed_ip
from .errors import TrackerError

__all__ = ["MIN_SECRET_LENGTH", "ConnectionIds", "SocketAddress"]

MIN_SECRET_LENGTH: Final = 16

SocketAddress: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
"""An address as the socket module reports it (IPv6 adds flowinfo and scope id)."""

_MAC_BYTES: Final = 7
_SLOT_SHIFT: Final = 8 * _MAC_BYTES  # the slot byte sits above the MAC
_MAX_SLOT: Final = 2**63 - 1
_CACHE_SIZE: Final = 65536


class ConnectionIds:
    """Issues and checks BEP 15 connection ids without storing them."""

    __slots__ = ("_cache", "_lifetime", "_mac")

    def __init__(self, secret: bytes, lifetime: float = 120.0) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise TrackerError(
                f"secret must be at least {MIN_SECRET_LENGTH} bytes, got {len(secret)}"
            )
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise TrackerError(f"lifetime must be a positive number of seconds, got {lifetime}")
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._lifetime = lifetime
        # (slot, packed IP) -> id: a client announces many times a slot, and an HMAC
        # costs more than the rest of the check. Bounded; cleared when full.
        self._cache: dict[tuple[int, bytes], int] = {}

    def __repr__(self) -> str:  # never show the secret
        return f"ConnectionIds(lifetime={self._lifetime})"

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def issue(self, address: SocketAddress, now: float) -> int:
        """The connection id for a client at ``address`` (bound to its IP)."""
        slot = self._slot(now)
        return self._connection_id(slot, _pack_address(address))

    def valid(self, connection_id: int, address: SocketAddress, now: float) -> bool:
        """Whether ``connection_id`` was issued to ``address`` in the current or the
        previous slot (see the module docstring for the exact guarantee)."""
        if not 0 <= connection_id < 2**64:
            return False
        current = self._slot(now)
        age = (current - (connection_id >> _SLOT_SHIFT)) % 2**8
        if age > 1:
            return False
        expected = self._connection_id(current - age, _pack_address(address))
        return hmac.compare_digest(expected.to_bytes(8, "big"), connection_id.to_bytes(8, "big"))

    def _slot(self, now: float) -> int:
        if not math.isfinite(now):
            raise TrackerError(f"now must be a finite time, got {now}")
        slot = int(now // self._lifetime)
        if not -_MAX_SLOT <= slot <= _MAX_SLOT:
            raise TrackerError(f"now {now} is out of range for a lifetime of {self._lifetime}")
        return slot

    def _connection_id(self, slot: int, packed_address: bytes) -> int:
        key = (slot, packed_address)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        connection_id = self._cache[key] = self._mac_id(slot, packed_address)
        return connection_id

    def _mac_id(self, slot: int, packed_address: bytes) -> int:
        mac = self._mac.copy()
        mac.update(slot.to_bytes(8, "big", signed=True))
        mac.update(packed_address)
        tag = int.from_bytes(mac.digest()[:_MAC_BYTES], "big")
        return (slot % 2**8) << _SLOT_SHIFT | tag


def _pack_address(address: SocketAddress) -> bytes:
    """The packed IP (the port is checked, not bound); IPv4-mapped IPv6 count as IPv4."""
    host, port = address[0], address[1]
    packed = packed_ip(host)
    if packed is None:
        raise TrackerError(f"address ip must be an IP address, got {host[:64]!r}")
    if not 0 <= port <= 0xFFFF:
        raise TrackerError(f"address port must be in 0..65535, got {port}")
    return packed
