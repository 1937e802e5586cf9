"""The embedded store: everything in this process's memory (``natkit up``, one instance).

Each operation runs without awaiting, so on one event loop it is atomic like the Redis
scripts. Random samples cost O(want): peers sit in a list (swap-remove on leave) next to
the dict that indexes them, so no answer reads the whole swarm.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from rendezvous.store.base import (
    Announced,
    Page,
    PeerRecord,
    Registration,
    RelayRecord,
    SwarmStats,
)

MAX_BUCKETS = 100_000  # idle full buckets are forgotten beyond this


@dataclass(slots=True)
class _Peer:
    record: PeerRecord  # what answers hand out, as is (immutable: no copy per answer)
    seeder: bool
    slot: int  # index in _Swarm.order


@dataclass(slots=True)
class _Swarm:
    peers: dict[str, _Peer] = field(default_factory=dict)
    order: list[PeerRecord] = field(default_factory=list)  # for O(1) random picks
    expiries: list[tuple[float, str]] = field(default_factory=list)  # heap, lazily checked
    joined: OrderedDict[str, int] = field(default_factory=OrderedDict)  # peer -> sequence
    sequence: int = 0
    seeders: int = 0
    downloaded: int = 0
    keep_until: float = 0.0  # an empty swarm (and its download count) lasts until then

    def remove(self, peer_id: str) -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        last = self.order.pop()
        if last.peer_id != peer_id:  # swap the last one into the hole
            self.order[peer.slot] = last
            self.peers[last.peer_id].slot = peer.slot
        self.joined.pop(peer_id, None)
        self.seeders -= peer.seeder
        return True

    def prune(self, now: float) -> None:
        heap = self.expiries
        while heap and heap[0][0] <= now:
            expires, peer_id = heapq.heappop(heap)
            peer = self.peers.get(peer_id)
            if peer is not None and peer.record.expires == expires:
                self.remove(peer_id)
        if len(heap) > 2 * len(self.peers) + 64:  # drop entries of refreshed peers
            self.expiries = [(p.record.expires, p.record.peer_id) for p in self.peers.values()]
            heapq.heapify(self.expiries)

    def put(self, registration: Registration, now: float) -> bool:
        peer_id = registration.peer_id
        record = PeerRecord(peer_id, registration.data, now + registration.ttl)
        peer = self.peers.get(peer_id)
        new = peer is None
        if peer is None:
            # Inside-out Fisher-Yates: the newcomer swaps places with a uniformly chosen
            # entry (itself included), so ``order`` stays a uniformly random permutation
            # (swap-remove in ``remove`` keeps it one too).
            order = self.order
            slot = int(random.random() * (len(order) + 1))
            peer = self.peers[peer_id] = _Peer(record, False, slot)
            if slot == len(order):
                order.append(record)
            else:
                moved = order[slot]
                order.append(moved)
                self.peers[moved.peer_id].slot = len(order) - 1
                order[slot] = record
        else:
            peer.record = self.order[peer.slot] = record
        self.seeders += registration.seeder - peer.seeder
        peer.seeder = registration.seeder
        heapq.heappush(self.expiries, (record.expires, peer_id))
        self.sequence += 1
        self.joined[peer_id] = self.sequence
        self.joined.move_to_end(peer_id)
        return new

    def sample(self, want: int, exclude: str | None) -> tuple[PeerRecord, ...]:
        """Up to ``want`` distinct peers other than ``exclude``, a uniformly random set.

        ``order`` is a uniformly random permutation, so any run of consecutive entries
        in it is a uniformly random subset: the answer is the run (wrapping around)
        from a random start. Picking ``want`` random indices instead costs a Python-level
        step per peer; a run costs two list slices. (opentracker answers evenly spaced
        entries from a random start in its address-sorted list; this is closer to a true
        sample: consecutive runs share peers only when their starts are close.)
        """
        order = self.order
        size = len(order)
        if size <= want or (size == want + 1 and exclude in self.peers):  # all of them
            return tuple([r for r in order if r.peer_id != exclude])
        count = want + 1  # one more, in case the asker is among them
        start = int(random.random() * size)
        run = order[start : start + count]
        if len(run) < count:
            run += order[: count - len(run)]
        if exclude is not None and exclude in self.peers:
            slot = self.peers[exclude].slot
            if (slot - start) % size < count:
                run.pop((slot - start) % size)
                return tuple(run)
        return tuple(run[:want])

    def stats(self) -> SwarmStats:
        return SwarmStats(len(self.peers), self.seeders, self.downloaded)


class MemoryStore:
    """``Store`` in this process's memory. Its operations never wait, so besides the
    ``Store`` coroutines it offers them as plain calls (``announce_now``, ``stats_now``)
    for hot paths that would otherwise pay for a coroutine (the UDP tracker)."""

    def __init__(self, *, keep: float = 3600.0) -> None:
        self._keep = keep
        self._swarms: dict[str, _Swarm] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, updated)
        self._relays: dict[str, tuple[bytes, float]] = {}
        # network -> member -> (ip, expiry): registration caps per IP and per /24 or /64
        self._admitted: dict[str, dict[str, tuple[str, float]]] = {}

    def _live(self, swarm: str, now: float) -> _Swarm | None:
        state = self._swarms.get(swarm)
        if state is not None:
            state.prune(now)
            if not state.peers and (not state.downloaded or now >= state.keep_until):
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
    ) -> Announced:
        return self.announce_now(
            swarm,
            now=now,
            register=register,
            leave=leave,
            completed=completed,
            want=want,
            exclude=exclude,
            capacity=capacity,
        )

    def announce_now(
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
    ) -> Announced:
        state = self._live(swarm, now)
        joined = full = False
        if register is not None or completed:
            if state is None:
                state = self._swarms[swarm] = _Swarm()
            if register is not None:
                if (
                    capacity
                    and register.peer_id not in state.peers
                    and len(state.peers) >= capacity
                ):
                    full = True
                else:
                    joined = state.put(register, now)
                    state.keep_until = now + self._keep
            if completed:
                state.downloaded += 1
                state.keep_until = now + self._keep
        if leave is not None and state is not None:
            state.remove(leave)
        if state is None:
            return Announced(full=full)
        peers = state.sample(want, exclude) if want > 0 else ()
        announced = Announced(peers, state.stats(), joined, full)
        self._live(swarm, now)  # an emptied swarm goes
        return announced

    async def page(self, swarm: str, *, cookie: str, limit: int, now: float) -> Page:
        after = int(cookie) if cookie.isdigit() else 0
        state = self._live(swarm, now)
        if state is None:
            return Page((), str(after))
        newer: list[tuple[str, int]] = []
        for peer_id in reversed(state.joined):  # newest first, back to the cookie
            sequence = state.joined[peer_id]
            if sequence <= after:
                break
            newer.append((peer_id, sequence))
        newer.reverse()
        chosen = newer[:limit]
        peers = tuple(state.peers[p].record for p, _ in chosen)
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
