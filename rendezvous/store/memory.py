"""The embedded store: everything in this process's memory (``natkit up``, one instance).

Each operation runs without awaiting, so on one event loop it is atomic like the Redis
scripts. Each swarm is a ``rendezvous.store.swarm.Swarm``: random samples cost O(want),
no answer reads the whole swarm.
"""

from __future__ import annotations

from rendezvous.store.base import (
    Announced,
    Page,
    Registration,
    RelayRecord,
    SwarmStats,
)
from rendezvous.store.swarm import Swarm, TableSwarm, new_swarm, refit

MAX_BUCKETS = 100_000  # idle full buckets are forgotten beyond this


class MemoryStore:
    """``Store`` in this process's memory. Its operations never wait, so besides the
    ``Store`` coroutines it offers them as plain calls (``announce_now``, ``stats_now``)
    for hot paths that would otherwise pay for a coroutine (the UDP tracker)."""

    def __init__(self, *, keep: float = 3600.0) -> None:
        self._keep = keep
        self._swarms: dict[str, Swarm | TableSwarm] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, updated)
        self._relays: dict[str, tuple[bytes, float]] = {}
        # network -> member -> (ip, expiry): registration caps per IP and per /24 or /64
        self._admitted: dict[str, dict[str, tuple[str, float]]] = {}

    def _live(self, swarm: str, now: float) -> Swarm | TableSwarm | None:
        state = self._swarms.get(swarm)
        if state is not None:
            state.prune(now)
            if not len(state) and (not state.downloaded or now >= state.keep_until):
                del self._swarms[swarm]
                return None
        return state

    async def announce(
        self,
        swarm: str,
        *,
        now: float,
        register: Registration | None = None,
        leave: str | None = None,
        completed: bool = False,
        want: int = 0,
        exclude: str | None = None,
        capacity: int = 0,
        records: bool = True,
    ) -> Announced:
        return self.announce_now(
            swarm, now, register, leave, completed, want, exclude, capacity, records
        )

    def announce_now(
        self,
        swarm: str,
        now: float,
        register: Registration | None = None,
        leave: str | None = None,
        completed: bool = False,
        want: int = 0,
        exclude: str | None = None,
        capacity: int = 0,
        records: bool = True,
    ) -> Announced:
        state = self._swarms.get(swarm)
        if (
            type(state) is TableSwarm
            and register is not None
            and leave is None
            and not completed
            and want > 0
            and state.accepts(register)
            and (not capacity or len(state) < capacity or register.peer_id in state)
        ):
            # A tracker's announce, all in C: prune, register, sample.
            new, sampled, data = state.announce(register, now, want, exclude, records)
            state.keep_until = now + self._keep
            return Announced(sampled, state.stats(), new, False, data, state.width)
        state = self._live(swarm, now)
        joined = full = False
        if register is not None or completed:
            if state is None:
                state = self._swarms[swarm] = new_swarm(register)
            if register is not None:
                if capacity and register.peer_id not in state and len(state) >= capacity:
                    full = True
                else:
                    if not state.accepts(register):  # another width or TTL
                        state = self._swarms[swarm] = refit(state, register)
                    joined = state.put(register, now)
                    state.keep_until = now + self._keep
            if completed:
                state.downloaded += 1
                state.keep_until = now + self._keep
        if leave is not None and state is not None:
            state.remove(leave)
        if state is None:
            return Announced(full=full)
        peers, packed = state.sample(want, exclude, records=records) if want > 0 else ((), None)
        width = state.width if packed is not None else 0
        announced = Announced(peers, state.stats(), joined, full, packed, width)
        if not len(state):
            self._live(swarm, now)  # an emptied swarm goes
        return announced

    async def page(self, swarm: str, *, cookie: str, limit: int, now: float) -> Page:
        after = int(cookie) if cookie.isdigit() else 0
        state = self._live(swarm, now)
        if state is None:
            return Page((), str(after))
        chosen = state.page(after, limit)
        peers = tuple(record for record, _ in chosen)
        return Page(peers, str(chosen[-1][1] if chosen else max(after, 0)))

    async def stats(self, swarms: list[str], *, now: float) -> list[SwarmStats]:
        return self.stats_now(swarms, now=now)

    def stats_now(self, swarms: list[str], *, now: float) -> list[SwarmStats]:
        result = []
        for swarm in swarms:
            state = self._live(swarm, now)
            result.append(state.stats() if state is not None else SwarmStats())
        return result

    async def take(
        self, bucket: str, *, rate: float, burst: float, now: float, cost: float = 1.0
    ) -> bool:
        return self.take_now(bucket, rate=rate, burst=burst, now=now, cost=cost)

    def take_now(
        self, bucket: str, *, rate: float, burst: float, now: float, cost: float = 1.0
    ) -> bool:
        """``take``, for callers that must not suspend (the lean HTTP listener)."""
        tokens, updated = self._buckets.get(bucket, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - updated) * rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        if len(self._buckets) >= MAX_BUCKETS and bucket not in self._buckets:
            self._forget_full_buckets(rate, burst, now)
        self._buckets[bucket] = (tokens, now)
        return allowed

    def _forget_full_buckets(self, rate: float, burst: float, now: float) -> None:
        refill = burst / rate if rate > 0 else float("inf")
        for name in [n for n, (_, t) in self._buckets.items() if now - t >= refill]:
            del self._buckets[name]

    async def admit(
        self,
        network: str,
        ip: str,
        member: str,
        *,
        per_ip: int,
        per_network: int,
        ttl: float,
        now: float,
    ) -> bool:
        members = self._admitted.setdefault(network, {})
        for name in [m for m, (_, expires) in members.items() if expires <= now]:
            del members[name]
        if member not in members:
            on_ip = sum(1 for member_ip, _ in members.values() if member_ip == ip)
            if on_ip >= per_ip or len(members) >= per_network:
                if not members:
                    del self._admitted[network]
                return False
        members[member] = (ip, now + ttl)
        return True

    async def heartbeat_relay(self, relay_id: str, data: bytes, *, ttl: float, now: float) -> None:
        self._relays[relay_id] = (data, now + ttl)

    async def relays(self, *, now: float) -> list[RelayRecord]:
        for relay_id in [r for r, (_, expires) in self._relays.items() if expires <= now]:
            del self._relays[relay_id]
        return [RelayRecord(r, data, expires) for r, (data, expires) in self._relays.items()]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._swarms.clear()
