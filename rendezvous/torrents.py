"""Torrents on the rendezvous store: what the HTTP (``rendezvous.api.tracker``) and the UDP
(``rendezvous.udp_tracker``) BitTorrent trackers both do with an announce or a scrape.

A torrent is the store swarm ``bt:<info_hash hex>`` (the ``/v1`` swarms are ``p:<name>``);
a peer is keyed by its peer_id (hex) and stored as peer_id (20 bytes) + its compact
address (6 or 18 bytes). The address is the one the request came from: a client-supplied
IP is never trusted (anyone could point a swarm at a third party).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rendezvous.bittorrent.announce import (
    Event,
    ScrapeEntry,
    TrackerPeer,
    compact_peer,
    parse_compact_peers,
)
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, PeerRecord, Registration, Store


def swarm_of(info_hash: bytes) -> str:
    return "bt:" + info_hash.hex()


def source_ip(remote: str | None) -> str | None:
    """The canonical IP of a request's source (IPv4 for an IPv4-mapped IPv6 address)."""
    if remote is None:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # a dual-stack socket's IPv4 client
    return str(address)


def compact_peers(records: tuple[PeerRecord, ...]) -> tuple[bytes, bytes]:
    """(IPv4, IPv6) compact entries of ``records``, straight from the stored bytes."""
    v4 = b"".join(r.data[20:] for r in records if len(r.data) == 26)
    v6 = b"".join(r.data[20:] for r in records if len(r.data) == 38)
    return v4, v6


def tracker_peer(record: PeerRecord) -> TrackerPeer:
    data = record.data
    [(ip, port)] = parse_compact_peers(data[20:], 4 if len(data) == 26 else 6)
    return TrackerPeer(ip, port, data[:20])


@dataclass(frozen=True, slots=True)
class Announce:
    """One announce, whichever tracker it came through."""

    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    left: int
    event: Event
    numwant: int | None  # None: the tracker's default


async def announce(
    store: Store, settings: RendezvousSettings, request: Announce, now: float
) -> Announced:
    """Register (or, on ``stopped``, remove) the peer and sample the others."""
    peer_key = request.peer_id.hex()
    stopped = request.event == Event.STOPPED
    register = None
    if not stopped:
        data = request.peer_id + compact_peer(request.ip, request.port)
        # Two intervals: a client that misses one announce stays listed.
        ttl = float(min(settings.max_ttl, 2 * settings.announce_interval))
        register = Registration(peer_key, data, ttl, seeder=request.left == 0)
    wanted = settings.default_numwant if request.numwant is None else request.numwant
    return await store.announce(
        swarm_of(request.info_hash),
        now=now,
        register=register,
        leave=peer_key if stopped else None,
        completed=request.event == Event.COMPLETED,
        want=0 if stopped else min(settings.max_numwant, wanted),
        exclude=peer_key,
        capacity=settings.swarm_capacity,
    )


async def scrape(store: Store, info_hashes: tuple[bytes, ...], now: float) -> list[ScrapeEntry]:
    stats = await store.stats([swarm_of(h) for h in info_hashes], now=now)
    return [ScrapeEntry(s.seeders, s.downloaded, s.leechers) for s in stats]
