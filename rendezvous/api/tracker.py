"""The BitTorrent HTTP tracker: ``/announce`` (BEP 3, compact BEP 23, ``peers6`` BEP 7)
and ``/scrape`` (BEP 48), on ``rendezvous.torrents``. Errors are answered the BitTorrent
way, HTTP 200 with a bencoded ``failure reason``, which every client shows its user."""

from __future__ import annotations

from aiohttp import web

from rendezvous import keys, torrents
from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.announce import (
    AnnounceResponse,
    encode_scrape,
    failure,
    parse_announce,
    parse_scrape,
)

routes = web.RouteTableDef()

BENCODE = "text/plain"  # what trackers conventionally send; clients do not look


def _bencoded(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=BENCODE)


@routes.get("/announce")
async def announce(request: web.Request) -> web.Response:
    # The raw query: info_hash and peer_id are binary, percent-encoded.
    try:
        req = parse_announce(request.rel_url.raw_query_string)
    except TrackerError as exc:
        return _bencoded(failure(str(exc)))
    address = torrents.source_address(request.remote)
    if address is None:
        return _bencoded(failure("cannot tell your address"))
    app = request.app
    settings = app[keys.SETTINGS]
    call = torrents.plan(
        settings,
        info_hash=req.info_hash,
        peer_id=req.peer_id,
        address=address,
        port=req.port,
        left=req.left,
        event=req.event,
        numwant=req.numwant,
        compact=req.compact,
    )
    announced = await torrents.announce(app[keys.STORE], call, app[keys.CLOCK]())
    if announced.full:
        return _bencoded(failure("this torrent has too many peers"))
    compact4, compact6 = torrents.compact_peers(announced) if req.compact else (b"", b"")
    response = AnnounceResponse(
        interval=settings.announce_interval,
        min_interval=settings.announce_min_interval,
        complete=announced.stats.seeders,
        incomplete=announced.stats.leechers,
        # Compact answers copy the stored entries; the others need each peer's id.
        peers=() if req.compact else tuple(map(torrents.tracker_peer, announced.peers)),
        compact4=compact4,
        compact6=compact6,
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
    entries = await torrents.scrape(request.app[keys.STORE], hashes, request.app[keys.CLOCK]())
    return _bencoded(encode_scrape(dict(zip(hashes, entries, strict=True))))
