"""Torrents on the rendezvous store: what the HTTP (``rendezvous.api.tracker``) and the UDP
(``rendezvous.udp_tracker``) BitTorrent trackers both do with an announce or a scrape.

A torrent is the store swarm ``bt:<info_hash hex>`` (the ``/v1`` swarms are ``p:<name>``);
a peer is keyed by its peer_id (hex) and stored as its compact address (6 or 18 bytes),
so a compact answer is one join of stored bytes. The address is the one the request came
from: a client-supplied IP is never trusted (anyone could point a swarm at a third party).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Final, NamedTuple

from rendezvous.bittorrent.addresses import packed_ip
from rendezvous.bittorrent.announce import (
    Event,
    ScrapeEntry,
    TrackerPeer,
    parse_compact_peers,
)
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, PeerRecord, Registration, Store, SwarmStats
from rendezvous.store.memory import MemoryStore


def swarm_of(info_hash: bytes) -> str:
    return "bt:" + info_hash.hex()


def source_address(remote: str | None) -> bytes | None:
    """The packed IP of a request's source (IPv4 for an IPv4-mapped IPv6 address)."""
    return None if remote is None else packed_ip(remote)


def compact_peers(announced: Announced) -> tuple[bytes, bytes]:
    """(IPv4, IPv6) compact entries of the sampled peers, straight from the stored bytes."""
    records, packed = announced.peers, announced.packed
    if packed is not None and announced.width in (6, 18):
        return (packed, b"") if announced.width == 6 else (b"", packed)
    joined = b"".join(map(_DATA, records))
    if len(joined) == 6 * len(records):  # all IPv4 (a 6-byte entry is IPv4, 18 IPv6)
        return joined, b""
    if len(joined) == 18 * len(records):
        return b"", joined
    v4 = b"".join([r.data for r in records if len(r.data) == 6])
    return v4, b"".join([r.data for r in records if len(r.data) == 18])


_DATA: Final = attrgetter("data")


def tracker_peer(record: PeerRecord) -> TrackerPeer:
    data = record.data
    [(ip, port)] = parse_compact_peers(data, 4 if len(data) == 6 else 6)
    return TrackerPeer(ip, port, bytes.fromhex(record.peer_id))


class StoreAnnounce(NamedTuple):
    """The ``Store.announce`` call one tracker announce makes (``plan``)."""

    swarm: str
    register: Registration | None
    leave: str | None
    completed: bool
    want: int
    exclude: str
    capacity: int
    records: bool  # False: compact answers, the peers' stored bytes are all it needs


class Planner:
    """Makes the store call of each announce (``plan``), with the settings' numbers
    worked out once: both trackers call it for every request."""

    __slots__ = ("capacity", "default_want", "max_want", "ttl")

    def __init__(self, settings: RendezvousSettings) -> None:
        # Two intervals: a client that misses one announce stays listed.
        self.ttl = float(min(settings.max_ttl, 2 * settings.announce_interval))
        self.default_want = settings.default_numwant
        self.max_want = settings.max_numwant
        self.capacity = settings.swarm_capacity

    def plan(
        self,
        info_hash: bytes,
        peer_id: bytes,
        address: bytes,
        port: int,
        left: int,
        event: Event,
        numwant: int | None,
        compact: bool = True,
    ) -> StoreAnnounce:
        """Register (or, on ``stopped``, remove) the peer at ``address`` (packed, from
        ``source_address``) and ``port`` and sample the others (``numwant`` None: the
        tracker's default)."""
        peer_key = peer_id.hex()
        if event == Event.STOPPED:
            return StoreAnnounce(
                swarm_of(info_hash), None, peer_key, False, 0, peer_key, self.capacity, False
            )
        data = address + port.to_bytes(2, "big")
        wanted = self.default_want if numwant is None else min(self.max_want, numwant)
        return StoreAnnounce(
            swarm_of(info_hash),
            Registration(peer_key, data, self.ttl, left == 0),
            None,
            event == Event.COMPLETED,
            wanted,
            peer_key,
            self.capacity,
            not compact,
        )


async def announce(store: Store, call: StoreAnnounce, now: float) -> Announced:
    """Run a ``plan`` on any store."""
    return await store.announce(
        call.swarm,
        now=now,
        register=call.register,
        leave=call.leave,
        completed=call.completed,
        want=call.want,
        exclude=call.exclude,
        capacity=call.capacity,
        records=call.records,
    )


def announce_now(store: MemoryStore, call: StoreAnnounce, now: float) -> Announced:
    """Run a ``plan`` on the in-process store, without a coroutine (positional: this is
    the UDP tracker's hot path)."""
    swarm, register, leave, completed, want, exclude, capacity, records = call
    return store.announce_now(
        swarm, now, register, leave, completed, want, exclude, capacity, records
    )


def scrape_entry(stats: SwarmStats) -> ScrapeEntry:
    return ScrapeEntry(stats.seeders, stats.downloaded, stats.leechers)
