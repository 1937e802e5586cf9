"""TURN allocations (RFC 8656 §2.2, §7-§12): what one client holds on the relay.

An ``Allocation`` is keyed by its 5-tuple -- the client transport (the listening UDP
socket's index, or a TCP/TLS connection object) and the client's address -- and owns its
relayed sockets (one per address family, two for a dual allocation, RFC 8656 §7.2),
permissions (peer IP -> expiry, §9) and channels (number <-> peer, §12). The
``AllocationManager`` indexes allocations, enforces the quotas and expires allocations on
a timer heap; permissions and channels are checked lazily on use and swept periodically.
Everything is driven by the ``now`` the caller passes in: no clock reads, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from relay.server.types import Address, Transport
from relay.turn.reservation import RESERVATION_LIFETIME

# RFC 8656 §3.3/§7.2/§9/§12: lifetimes in seconds.
DEFAULT_ALLOCATION_LIFETIME = 600.0
PERMISSION_LIFETIME = 300.0
CHANNEL_LIFETIME = 600.0
# RFC 8656 §12: after a channel binding expires, its number and peer stay unusable for
# another 5 minutes ("cool-down"), so that late ChannelData is not misdelivered.
CHANNEL_COOLDOWN = 300.0


class RelaySocket(Protocol):
    """A bound UDP socket relaying one allocation's traffic to and from peers."""

    family: socket.AddressFamily
    address: tuple[str, int]  # the relayed transport address advertised to the client
    allocation: Allocation | None

    def send(self, data: bytes, addr: Address) -> object: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class Closable(Protocol):
    def close(self) -> None: ...


class RelayPorts(Protocol):
    """Binds relayed sockets: ``port=None`` for any port in range, else that port.

    Each returns ``None`` when it cannot (no free port, family not configured)."""

    def bind(self, family: socket.AddressFamily, port: int | None) -> RelaySocket | None: ...

    def hold(self, family: socket.AddressFamily, port: int) -> Closable | None:
        """Keep ``port`` for a reservation (see ``relay.turn.reservation``)."""

    def claim(self, family: socket.AddressFamily, port: int) -> RelaySocket | None:
        """Bind a held port, in any worker; only once."""

    def families(self) -> frozenset[socket.AddressFamily]: ...


@dataclass(slots=True, eq=False)
class Channel:
    number: int
    peer: Address
    expiry: float
    relay: RelaySocket  # the allocation's relayed socket of the peer's family


@dataclass(slots=True, eq=False)
class Allocation:
    """One client's allocation. Identity semantics (``eq=False``): it is a live object."""

    key: tuple[Transport, Address]
    client: Transport  # a listener index or a connection
    client_addr: Address
    username: str  # the USERNAME that created it: later requests must match (441)
    user: str  # the account it counts against for quotas
    relays: dict[socket.AddressFamily, RelaySocket]
    expiry: float
    transaction_id: bytes  # of the Allocate that created it (retransmissions, §7.2)
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, Channel] = field(default_factory=dict)
    cooldown: dict[int | Address, float] = field(default_factory=dict)  # expired channels
    reservation_token: bytes | None = None
    alive: bool = True
    # Traffic of this allocation, logged when it ends (as coturn's session statistics).
    # Token bucket for --max-bps: bytes available now, and when it was last refilled.
    tokens: float = 0.0
    refilled: float = 0.0
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0

    def take(self, size: int, now: float, rate: int) -> bool:
        """Spend ``size`` bytes of a ``rate`` bytes/s budget (burst: one second's worth);
        ``False`` when the budget is spent: the datagram is dropped, as a full link would."""
        tokens = min(float(rate), self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if tokens < size:
            self.tokens = tokens
            return False
        self.tokens = tokens - size
        return True

    def has_permission(self, ip: str, now: float) -> bool:
        expiry = self.permissions.get(ip)
        return expiry is not None and expiry > now

    def channel_for_number(self, number: int, now: float) -> Channel | None:
        channel = self.channels.get(number)
        return channel if channel is not None and channel.expiry > now else None

    def drop_family(self, family: socket.AddressFamily) -> None:
        """Delete one family's relayed address of a dual allocation (RFC 8656 §8), with
        the permissions and channels that went through it."""
        relay = self.relays.pop(family)
        relay.allocation = None
        relay.close()
        six = family == socket.AF_INET6
        for ip in [ip for ip in self.permissions if (":" in ip) == six]:
            del self.permissions[ip]
        for number, channel in list(self.channels.items()):
            if channel.relay is relay:
                del self.channels[number]
                self.peer_channels.pop(channel.peer, None)

    def sweep(self, now: float) -> bool:
        """Forget expired permissions and channels (checked lazily on use anyway);
        whether a channel went."""
        for ip in [ip for ip, expiry in self.permissions.items() if expiry <= now]:
            del self.permissions[ip]
        expired = [(n, c) for n, c in self.channels.items() if c.expiry <= now]
        for number, channel in expired:
            del self.channels[number]
            self.peer_channels.pop(channel.peer, None)
            cool = channel.expiry + CHANNEL_COOLDOWN
            self.cooldown[number] = cool
            self.cooldown[channel.peer] = cool
        for item in [k for k, until in self.cooldown.items() if until <= now]:
            del self.cooldown[item]
        return bool(expired)


class Routes(Protocol):
    """Where the channels of allocations are mirrored for fast relaying
    (``relay.turn.routes``); told of every change."""

    def sync(self, allocation: Allocation) -> None:
        """``allocation``'s channels or permissions changed."""

    def forget(self, allocation: Allocation) -> None:
        """``allocation`` is going."""

    def fold(self, allocation: Allocation) -> None:
        """Bring ``allocation``'s traffic counters up to date."""


class QuotaExceeded(Exception):
    """Raised by ``AllocationManager.add`` when a quota would be exceeded (486)."""


class AllocationManager:
    """All allocations of one relay process, by 5-tuple and by relayed socket."""

    def __init__(self, *, max_allocations: int, user_quota: int) -> None:
        self.max_allocations = max_allocations
        self.user_quota = user_quota  # 0: unlimited
        self.by_key: dict[tuple[Transport, Address], Allocation] = {}  # read-only outside
        self._per_user: dict[str, int] = {}
        self._expiries: list[tuple[float, int, Allocation]] = []
        self._sequence = itertools.count()
        # token -> (holder of the reserved port, expiry): EVEN-PORT with R (RFC 8656 §7.2)
        self._reservations: dict[bytes, tuple[Closable, float]] = {}
        self._next_sweep = 0.0
        self.routes: Routes | None = None

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self) -> Iterator[Allocation]:
        return iter(list(self.by_key.values()))

    def get(self, key: tuple[Transport, Address]) -> Allocation | None:
        return self.by_key.get(key)

    def check_quota(self, user: str) -> str | None:
        """Why a new allocation for ``user`` would exceed a quota, or ``None``."""
        if len(self.by_key) >= self.max_allocations:
            return "total allocation quota reached"
        if self.user_quota and self._per_user.get(user, 0) >= self.user_quota:
            return "user allocation quota reached"
        return None

    def add(self, allocation: Allocation) -> None:
        reason = self.check_quota(allocation.user)
        if reason is not None:
            raise QuotaExceeded(reason)
        self.by_key[allocation.key] = allocation
        self._per_user[allocation.user] = self._per_user.get(allocation.user, 0) + 1
        for relay in allocation.relays.values():
            relay.allocation = allocation
        self.schedule(allocation)

    def schedule(self, allocation: Allocation) -> None:
        """(Re)arm the expiry timer after ``allocation.expiry`` changed."""
        heapq.heappush(self._expiries, (allocation.expiry, next(self._sequence), allocation))

    def sync(self, allocation: Allocation) -> None:
        """Call after changing ``allocation``'s channels or permissions."""
        if self.routes is not None:
            self.routes.sync(allocation)

    def fold(self, allocation: Allocation) -> None:
        """Bring ``allocation``'s traffic counters up to date (before reading them)."""
        if self.routes is not None:
            self.routes.fold(allocation)

    def remove(self, allocation: Allocation) -> None:
        if not allocation.alive:
            return
        if self.routes is not None:
            self.routes.forget(allocation)
        allocation.alive = False
        self.by_key.pop(allocation.key, None)
        remaining = self._per_user.get(allocation.user, 1) - 1
        if remaining:
            self._per_user[allocation.user] = remaining
        else:
            self._per_user.pop(allocation.user, None)
        for relay in allocation.relays.values():  # kept (closed) for the final log line
            relay.allocation = None
            relay.close()
        allocation.permissions.clear()
        allocation.channels.clear()
        allocation.peer_channels.clear()

    # ------------------------------------------------------------ reservations

    def reserve(self, token: bytes, holder: Closable, now: float) -> None:
        self._reservations[token] = (holder, now + RESERVATION_LIFETIME)

    def release(self, token: bytes) -> None:
        """The reservation was claimed (here or in another worker): drop its holder."""
        entry = self._reservations.pop(token, None)
        if entry is not None:
            entry[0].close()

    # ------------------------------------------------------------ timers

    def next_timer(self) -> float | None:
        """When ``expire`` next has work to do."""
        candidates = [self._expiries[0][0]] if self._expiries else []
        candidates += [expiry for _, expiry in self._reservations.values()]
        if self.by_key:
            candidates.append(self._next_sweep)
        return min(candidates) if candidates else None

    def expire(self, now: float, sweep_interval: float = 30.0) -> list[Allocation]:
        """Remove allocations whose lifetime ended; returns them."""
        expired = []
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, _, allocation = heapq.heappop(heap)
            if allocation.alive and allocation.expiry <= now:
                self.remove(allocation)
                expired.append(allocation)
        for token, (holder, expiry) in list(self._reservations.items()):
            if expiry <= now:
                del self._reservations[token]
                holder.close()
        if now >= self._next_sweep:
            self._next_sweep = now + sweep_interval
            for allocation in self.by_key.values():
                if allocation.sweep(now):
                    self.sync(allocation)
            # Drop stale heap entries of refreshed allocations so the heap stays O(n).
            if len(heap) > 2 * len(self.by_key) + 64:
                self._expiries = [e for e in heap if e[2].alive and e[0] == e[2].expiry]
                heapq.heapify(self._expiries)
        return expired

    def close(self) -> None:
        for allocation in list(self.by_key.values()):
            self.remove(allocation)
        for holder, _ in self._reservations.values():
            holder.close()
        self._reservations.clear()
