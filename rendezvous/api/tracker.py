"""The BitTorrent HTTP tracker on the API port: ``/announce`` (BEP 3, compact BEP 23,
``peers6`` BEP 7) and ``/scrape`` (BEP 48), answered by ``rendezvous.http_tracker``'s core
(which ``--http-tracker`` also serves on a port of its own, faster). Errors are answered
the BitTorrent way, HTTP 200 with a bencoded ``failure reason``, which every client shows
its user."""

from __future__ import annotations

from aiohttp import web

from rendezvous import keys, torrents

routes = web.RouteTableDef()

BENCODE = "text/plain"  # what trackers conventionally send; clients do not look


def _bencoded(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=BENCODE)


@routes.get("/announce")
async def announce(request: web.Request) -> web.Response:
    app = request.app
    tracker = app[keys.TRACKER]
    # The raw query: info_hash and peer_id are binary, percent-encoded.
    prepared = tracker.announce_call(request.rel_url.raw_query_string, request.remote)
    if isinstance(prepared, bytes):
        return _bencoded(prepared)
    parsed, call = prepared
    announced = await torrents.announce(app[keys.STORE], call, app[keys.CLOCK]())
    return _bencoded(tracker.answer_announce(parsed, announced))


@routes.get("/scrape")
async def scrape(request: web.Request) -> web.Response:
    app = request.app
    tracker = app[keys.TRACKER]
    hashes = tracker.scrape_hashes(request.rel_url.raw_query_string)
    if isinstance(hashes, bytes):
        return _bencoded(hashes)
    swarms = [torrents.swarm_of(h) for h in hashes]
    stats = await app[keys.STORE].stats(swarms, now=app[keys.CLOCK]())
    return _bencoded(tracker.answer_scrape(hashes, stats))
