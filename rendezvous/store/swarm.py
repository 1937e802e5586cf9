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

MIXED = -1  # ``width``/``ttl`` once the swarm's data lengths/TTLs differ


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
            # Inside-out Fisher-Yates: the newcomer swaps places with a uniformly chosen
            # entry (itself included), so ``order`` stays a uniformly random permutation.
            order = self.order
            slot = int(random.random() * (len(order) + 1))
            peer = self.peers[peer_id] = _Peer(record, False, slot)
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

    def sample(self, want: int, exclude: str | None) -> tuple[tuple[PeerRecord, ...], bytes | None]:
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
