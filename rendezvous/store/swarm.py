"""One swarm of the memory store: its peers, their expiry, and random samples of them.

Large swarms are the hot case (a popular torrent holds 10^5 peers, every announce adds or
refreshes one and samples 30 others), and at that size a Python object touched is a cache
miss. So a swarm keeps:

* ``order``: its records as a uniformly random permutation -- a newcomer swaps places with
  a uniformly chosen entry (inside-out Fisher-Yates), a leaver is replaced by the last
  entry. Any run of consecutive entries is then a uniformly random subset: a sample is the
  run from a random start (wrapping), two list slices however large the swarm.
* ``blob``: while every record's data has one length (``width``: a BitTorrent swarm's
  6-byte IPv4 or 18-byte IPv6 compact addresses), the data of ``order[i]`` inline at
  ``blob[i * width:(i + 1) * width]``. A sample's data is then one slice of it: no record
  is read to answer a tracker.
* expiry: while every registration had one TTL (``ttl``; a tracker gives every peer the
  same), expiries are handed out in refresh order (never below the latest one, should the
  clock step back) and ``joined`` -- the refresh order, kept anyway for paging -- is the
  expiry queue. Once TTLs differ, a heap of (expiry, peer) takes over, lazily checked.

An emptied swarm starts afresh (any width, any TTL). Expired peers are removed before any
answer, so none is ever listed.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field

from rendezvous.store.base import PeerRecord, Registration, SwarmStats

try:
    from rendezvous.store._peertable import PeerTable
except ImportError:  # not built (no C compiler at install time): Swarm serves alone
    PeerTable = None  # type: ignore[assignment,misc]

MIXED = -1  # ``width``/``ttl`` once the swarm's data lengths/TTLs differ
MAX_TABLE_WIDTH = 4096  # longer data (a /v1 registration's JSON can be) stays in Python


@dataclass(slots=True)
class _Peer:
    record: PeerRecord  # what answers hand out, as is (immutable: no copy per answer)
    seeder: bool
    slot: int  # index in Swarm.order


@dataclass(slots=True)
class Swarm:
    peers: dict[str, _Peer] = field(default_factory=dict)
    order: list[PeerRecord] = field(default_factory=list)  # a uniformly random permutation
    blob: bytearray = field(default_factory=bytearray)  # width > 0: order's data, inline
    width: int = 0  # the length of every record's data (0: no peer yet; MIXED)
    ttl: float = 0.0  # the TTL of every registration (0: no peer yet; MIXED: heap)
    latest: float = -math.inf  # the latest expiry handed out (one-TTL mode)
    expiries: list[tuple[float, str]] = field(default_factory=list)  # heap (MIXED ttl)
    joined: OrderedDict[str, int] = field(default_factory=OrderedDict)  # peer -> sequence
    sequence: int = 0
    seeders: int = 0
    downloaded: int = 0
    keep_until: float = 0.0  # an empty swarm (and its download count) lasts until then

    def remove(self, peer_id: str) -> bool:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        order, width, slot = self.order, self.width, peer.slot
        last = order.pop()
        if last.peer_id != peer_id:  # swap the last one into the hole
            order[slot] = last
            self.peers[last.peer_id].slot = slot
            if width > 0:
                self.blob[slot * width : (slot + 1) * width] = self.blob[-width:]
        if width > 0:
            del self.blob[-width:]
        self.joined.pop(peer_id, None)
        self.seeders -= peer.seeder
        return True

    def prune(self, now: float) -> None:
        """Remove every peer whose expiry is ``now`` or earlier."""
        if self.ttl != MIXED:
            joined, peers = self.joined, self.peers
            while joined:
                first = next(iter(joined))
                if peers[first].record.expires > now:
                    return
                self.remove(first)
            return
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
        """Add or refresh a peer; True if it is new."""
        peer_id, data, ttl = registration.peer_id, registration.data, registration.ttl
        if not self.peers:  # start afresh
            self.width, self.ttl, self.latest = len(data), ttl, -math.inf
            self.blob.clear()
            self.expiries.clear()
        if self.width > 0 and len(data) != self.width:
            self.width = MIXED
            self.blob = bytearray()
        if self.ttl != MIXED and ttl != self.ttl:
            self.ttl = MIXED
            self.expiries = [(p.record.expires, p.record.peer_id) for p in self.peers.values()]
            heapq.heapify(self.expiries)
        expires = now + ttl
        if self.ttl != MIXED:
            expires = self.latest = max(expires, self.latest)
        record = PeerRecord(peer_id, data, expires)
        width = self.width
        peer = self.peers.get(peer_id)
        new = peer is None
        if peer is None:
            peer = self._insert(record)
        else:
            peer.record = self.order[peer.slot] = record
            if width > 0:
                self.blob[peer.slot * width : (peer.slot + 1) * width] = data
        self.seeders += registration.seeder - peer.seeder
        peer.seeder = registration.seeder
        if self.ttl == MIXED:
            heapq.heappush(self.expiries, (expires, peer_id))
        self.sequence += 1
        self.joined[peer_id] = self.sequence
        self.joined.move_to_end(peer_id)
        return new

    def _insert(self, record: PeerRecord) -> _Peer:
        """A new peer. Inside-out Fisher-Yates: it swaps places with a uniformly chosen
        entry (itself included), so ``order`` stays a uniformly random permutation."""
        order, width, data = self.order, self.width, record.data
        slot = int(random.random() * (len(order) + 1))
        peer = self.peers[record.peer_id] = _Peer(record, False, slot)
        if slot == len(order):
            order.append(record)
            if width > 0:
                self.blob += data
        else:
            moved = order[slot]
            order.append(moved)
            self.peers[moved.peer_id].slot = len(order) - 1
            order[slot] = record
            if width > 0:
                blob = self.blob
                blob += blob[slot * width : (slot + 1) * width]
                blob[slot * width : (slot + 1) * width] = data
        return peer

    def adopt(self, record: PeerRecord, seeder: bool, sequence: int, ttl: float) -> None:
        """Take over a peer from a ``TableSwarm`` as it was: its expiry and sequence
        (peers come oldest refresh first, all of one width and TTL)."""
        if not self.peers:
            self.width, self.ttl, self.latest = len(record.data), ttl, -math.inf
            self.blob.clear()
            self.expiries.clear()
        self._insert(record).seeder = seeder
        self.seeders += seeder
        self.latest = max(self.latest, record.expires)
        self.joined[record.peer_id] = sequence
        self.sequence = max(self.sequence, sequence)

    def sample(
        self, want: int, exclude: str | None, *, records: bool = True
    ) -> tuple[tuple[PeerRecord, ...], bytes | None]:
        """Up to ``want`` distinct peers other than ``exclude``, a uniformly random set,
        and (while the swarm's data have one width) their data concatenated.

        (opentracker answers evenly spaced entries from a random start in its
        address-sorted list; a run of a random permutation is closer to a true sample:
        two runs share peers only when their starts are close.)
        """
        order, blob, width = self.order, self.blob, max(self.width, 0)
        size = len(order)
        asker = self.peers.get(exclude) if exclude is not None else None
        if size <= want or (size == want + 1 and asker is not None):  # all of them
            start, count = 0, size
        else:
            start, count = int(random.random() * size), want + 1  # one more than wanted
        end = start + count
        run = order[start:end]
        data = blob[start * width : end * width]
        if end > size:  # wrap around
            run += order[: end - size]
            data += blob[: (end - size) * width]
        if asker is not None and (offset := (asker.slot - start) % size) < count:
            del run[offset]
            del data[offset * width : (offset + 1) * width]
        else:
            del run[want:]
            del data[want * width :]
        return tuple(run), bytes(data) if width else None

    def stats(self) -> SwarmStats:
        return SwarmStats(len(self.peers), self.seeders, self.downloaded)

    def __len__(self) -> int:
        return len(self.peers)

    def __contains__(self, peer_id: str) -> bool:
        return peer_id in self.peers

    def accepts(self, registration: Registration) -> bool:
        return True  # any width, any TTL

    def page(self, after: int, limit: int) -> list[tuple[PeerRecord, int]]:
        """(record, sequence) of the peers refreshed after sequence ``after``, oldest
        first, at most ``limit``."""
        newer: list[tuple[str, int]] = []
        for peer_id in reversed(self.joined):  # newest first, back to the cookie
            sequence = self.joined[peer_id]
            if sequence <= after:
                break
            newer.append((peer_id, sequence))
        newer.reverse()
        return [(self.peers[p].record, sequence) for p, sequence in newer[:limit]]


class TableSwarm:
    """A swarm on the C ``PeerTable`` (``_peertable.c``): the same behaviour as ``Swarm``
    for the common case -- every peer's data one length, every registration one TTL --
    in flat arrays. ``accepts`` says whether a registration keeps it in that case;
    ``general`` moves its peers into a ``Swarm`` when one does not."""

    __slots__ = ("downloaded", "keep_until", "table")

    def __init__(self, width: int, ttl: float) -> None:
        if PeerTable is None:
            raise RuntimeError("rendezvous.store._peertable is not built")
        self.table = PeerTable(width, ttl)
        self.downloaded = 0
        self.keep_until = 0.0

    def __len__(self) -> int:
        return len(self.table)

    @property
    def width(self) -> int:
        return self.table.width

    def __contains__(self, peer_id: str) -> bool:
        return peer_id in self.table

    def accepts(self, registration: Registration) -> bool:
        table = self.table
        return len(registration.data) == table.width and registration.ttl == table.ttl

    def put(self, registration: Registration, now: float) -> bool:
        return self.table.put(
            registration.peer_id, registration.data, registration.seeder, now, random.random()
        )

    def remove(self, peer_id: str) -> bool:
        return self.table.remove(peer_id)

    def announce(
        self,
        registration: Registration,
        now: float,
        want: int,
        exclude: str | None,
        records: bool = True,
    ) -> tuple[bool, tuple[PeerRecord, ...], bytes]:
        """``prune(now)``, ``put``, ``sample`` in one call (an accepted registration):
        whether the peer is new, and the sample."""
        new, found, packed = self.table.announce(
            registration.peer_id,
            registration.data,
            registration.seeder,
            now,
            random.random(),
            want,
            exclude,
            random.random(),
            records,
        )
        if found is None:
            return new, (), packed
        return new, tuple([PeerRecord(*entry) for entry in found]), packed

    def prune(self, now: float) -> None:
        self.table.prune(now)

    def sample(
        self, want: int, exclude: str | None, *, records: bool = True
    ) -> tuple[tuple[PeerRecord, ...], bytes | None]:
        found, packed = self.table.sample(want, exclude, random.random(), records)
        if found is None:
            return (), packed
        return tuple([PeerRecord(*entry) for entry in found]), packed

    def stats(self) -> SwarmStats:
        return SwarmStats(len(self.table), self.table.seeders, self.downloaded)

    def page(self, after: int, limit: int) -> list[tuple[PeerRecord, int]]:
        return [
            (PeerRecord(peer_id, data, expires), sequence)
            for peer_id, data, expires, _, sequence in self.table.page(after, max(limit, 0))
        ]

    def general(self) -> Swarm:
        """The same peers, expiries, sequences and counts in a ``Swarm`` (which takes any
        width and TTL)."""
        swarm = Swarm()
        ttl = self.table.ttl
        for peer_id, data, expires, seeder, sequence in self.table.entries():
            swarm.adopt(PeerRecord(peer_id, data, expires), seeder, sequence, ttl)
        swarm.sequence = self.table.sequence
        swarm.downloaded, swarm.keep_until = self.downloaded, self.keep_until
        return swarm


def new_swarm(registration: Registration | None) -> Swarm | TableSwarm:
    """An empty swarm for ``registration``'s case: in C where it is built and fits."""
    if (
        PeerTable is not None
        and registration is not None
        and 0 < len(registration.data) <= MAX_TABLE_WIDTH
        and registration.ttl > 0
    ):
        return TableSwarm(len(registration.data), registration.ttl)
    return Swarm()


def refit(swarm: TableSwarm | Swarm, registration: Registration) -> Swarm | TableSwarm:
    """A swarm holding ``swarm``'s peers and counts that accepts ``registration``: an
    empty one starts afresh for it, a populated one moves into a ``Swarm``."""
    if isinstance(swarm, Swarm):
        return swarm
    if len(swarm):
        return swarm.general()
    fresh = new_swarm(registration)
    fresh.downloaded, fresh.keep_until = swarm.downloaded, swarm.keep_until
    if isinstance(fresh, TableSwarm):
        fresh.table.sequence = swarm.table.sequence  # paging cookies stay valid
    else:
        fresh.sequence = swarm.table.sequence
    return fresh
