"""The BitTorrent HTTP tracker on the rendezvous store: ``/announce`` (BEP 3, compact
BEP 23, ``peers6`` BEP 7) and ``/scrape`` (BEP 48).

A torrent is the swarm ``bt:<info_hash hex>``; a peer is keyed by its peer_id (hex) and
stored as peer_id (20 bytes) + its compact address (6 or 18 bytes). The address is the one
the request came from: a client-supplied ``ip`` is not trusted (anyone could point a swarm
at a victim). Errors are answered the BitTorrent way, HTTP 200 with a bencoded
``failure reason``, which every client shows to its user.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from rendezvous import keys
from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.announce import (
    AnnounceResponse,
    Event,
    ScrapeEntry,
    TrackerPeer,
    compact_peer,
    encode_scrape,
    failure,
    parse_announce,
    parse_compact_peers,
    parse_scrape,
)
from rendezvous.store import PeerRecord, Registration

routes = web.RouteTableDef()

BENCODE = "text/plain"  # what trackers conventionally send; clients do not look


def swarm_of(info_hash: bytes) -> str:
    """The store's swarm of a torrent (the /v1 API's swarms are ``p:<name>``)."""
    return "bt:" + info_hash.hex()


def _bencoded(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=BENCODE)


def _source_ip(request: web.Request) -> str | None:
    remote = request.remote
    if remote is None:
        return None
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's IPv4 client
    return str(address)


def _peer(record: PeerRecord) -> TrackerPeer:
    data = record.data
    [(ip, port)] = parse_compact_peers(data[20:], 4 if len(data) == 26 else 6)
    return TrackerPeer(ip, port, data[:20])


@routes.get("/announce")
async def announce(request: web.Request) -> web.Response:
    try:
        req = parse_announce(request.rel_url.raw_query_string)
    except TrackerError as exc:
        return _bencoded(failure(str(exc)))
    ip = _source_ip(request)
    if ip is None:
        return _bencoded(failure("cannot tell your address"))
    settings = request.app[keys.SETTINGS]
    interval = settings.announce_interval
    peer_key = req.peer_id.hex()
    stopped = req.event == Event.STOPPED
    register = None
    if not stopped:
        data = req.peer_id + compact_peer(ip, req.port)
        # Two intervals: a client that misses one announce stays listed.
        ttl = float(min(settings.max_ttl, 2 * interval))
        register = Registration(peer_key, data, ttl, seeder=req.left == 0)
    want = (
        0
        if stopped
        else min(
            settings.max_numwant, settings.default_numwant if req.numwant is None else req.numwant
        )
    )
    announced = await request.app[keys.STORE].announce(
        swarm_of(req.info_hash),
        now=request.app[keys.CLOCK](),
        register=register,
        leave=peer_key if stopped else None,
        completed=req.event == Event.COMPLETED,
        want=want,
        exclude=peer_key,
        capacity=settings.swarm_capacity,
    )
    if announced.full:
        return _bencoded(failure("this torrent has too many peers"))
    response = AnnounceResponse(
        interval=interval,
        min_interval=settings.announce_min_interval,
        complete=announced.stats.seeders,
        incomplete=announced.stats.leechers,
        peers=tuple(_peer(record) for record in announced.peers),
    )
    return _bencoded(response.encode(compact=req.compact, no_peer_id=req.no_peer_id))


@routes.get("/scrape")
async def scrape(request: web.Request) -> web.Response:
    try:
        hashes = parse_scrape(request.rel_url.raw_query_string)
    except TrackerError as exc:
        return _bencoded(failure(str(exc)))
    if not hashes:
        return _bencoded(failure("full scrape is not supported: name the info_hash"))
    stats = await request.app[keys.STORE].stats(
        [swarm_of(h) for h in hashes], now=request.app[keys.CLOCK]()
    )
    files = {
        h: ScrapeEntry(s.seeders, s.downloaded, s.leechers)
        for h, s in zip(hashes, stats, strict=True)
    }
    return _bencoded(encode_scrape(files))
