"""``/v1`` swarm routes: join (signed), leave (signed), list peers, swarm stats, challenge."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from client_sdk.identity import b64encode
from rendezvous import keys
from rendezvous.api.access import store_swarm
from rendezvous.api.auth import signed_peer
from rendezvous.api.errors import ApiError
from rendezvous.api.limits import admit
from rendezvous.api.models import JoinBody, check_peer_id, check_swarm
from rendezvous.store import PeerRecord, Registration

routes = web.RouteTableDef()


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, "invalid", f"{name}: an integer from {low} to {high}")
    return int(text)


def _peer_json(record: PeerRecord, now: float) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(record.data)
    entry["expires_in"] = max(0, round(record.expires - now))
    return entry


def _swarm(request: web.Request) -> tuple[str, str]:
    """The path's swarm and its store name; 400 or 403 before anything is read or
    written."""
    swarm = check_swarm(request.match_info["swarm"])
    return swarm, store_swarm(request, swarm)


async def _own_entry(request: web.Request, verb: str) -> tuple[str, str, str, bytes]:
    """(swarm, store name, peer_id, public key) of a signed request about the signer's
    own entry: a peer can only ``verb`` itself (403)."""
    swarm, name = _swarm(request)
    peer_id = check_peer_id(request.match_info["peer_id"])
    signer, public_key = await signed_peer(request)
    if signer != peer_id:
        raise ApiError(403, "forbidden", f"a peer can only {verb} itself")
    return swarm, name, peer_id, public_key


@routes.get("/v1/challenge")
async def challenge(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(
        {
            "challenge": app[keys.CHALLENGES].issue(app[keys.CLOCK]()),
            "expires_in": app[keys.CHALLENGES].lifetime,
        }
    )


@routes.put("/v1/swarms/{swarm:[^/]+}/peers/{peer_id:[^/]+}")
async def join(request: web.Request) -> web.Response:
    swarm, name, peer_id, public_key = await _own_entry(request, "register")
    try:
        raw = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid", f"body is not JSON: {exc}") from exc
    body = JoinBody.model_validate(raw)
    settings = request.app[keys.SETTINGS]
    ttl = settings.default_ttl if body.ttl is None else body.ttl
    if not settings.min_ttl <= ttl <= settings.max_ttl:
        raise ApiError(
            400, "invalid", f"ttl: from {settings.min_ttl} to {settings.max_ttl} seconds"
        )
    await admit(request, peer_id, float(ttl))
    record = {
        "peer_id": peer_id,
        "public_key": b64encode(public_key),
        "candidates": [c.model_dump() for c in body.candidates],
        "nat": body.nat,
        "metadata": body.metadata,
    }
    data = json.dumps(record, separators=(",", ":")).encode()
    now = request.app[keys.CLOCK]()
    announced = await request.app[keys.STORE].announce(
        name,
        now=now,
        register=Registration(peer_id, data, float(ttl), body.seeder),
        capacity=settings.swarm_capacity,
    )
    if announced.full:
        raise ApiError(503, "swarm_full", f"swarm {swarm} holds {announced.stats.peers} peers")
    return web.json_response(
        {"joined": announced.joined, "ttl": ttl, "peers": announced.stats.peers},
        status=201 if announced.joined else 200,
    )


@routes.delete("/v1/swarms/{swarm:[^/]+}/peers/{peer_id:[^/]+}")
async def leave(request: web.Request) -> web.Response:
    _, name, peer_id, _ = await _own_entry(request, "remove")
    now = request.app[keys.CLOCK]()
    await request.app[keys.STORE].announce(name, now=now, leave=peer_id)
    return web.Response(status=204)


@routes.get("/v1/swarms/{swarm:[^/]+}/peers")
async def peers(request: web.Request) -> web.Response:
    """A random sample (``numwant``, ``exclude``), or with ``cookie`` the registrations
    since the cookie, oldest first (libp2p rendezvous DISCOVER paging)."""
    _, name = _swarm(request)
    settings = request.app[keys.SETTINGS]
    store = request.app[keys.STORE]
    now = request.app[keys.CLOCK]()
    if "cookie" in request.query:
        cookie = request.query["cookie"]
        if cookie and not cookie.isdigit():
            raise ApiError(400, "invalid", "cookie: pass back the cookie of the last answer")
        limit = _int_param(request, "limit", settings.default_numwant, 1, settings.max_numwant)
        page = await store.page(name, cookie=cookie, limit=limit, now=now)
        return web.json_response(
            {"peers": [_peer_json(p, now) for p in page.peers], "cookie": page.cookie}
        )
    want = _int_param(request, "numwant", settings.default_numwant, 0, settings.max_numwant)
    exclude = request.query.get("exclude")
    if exclude is not None:
        check_peer_id(exclude, "exclude")
    announced = await store.announce(name, now=now, want=want, exclude=exclude)
    return web.json_response(
        {"peers": [_peer_json(p, now) for p in announced.peers], "total": announced.stats.peers}
    )


@routes.get("/v1/swarms/{swarm:[^/]+}")
async def stats(request: web.Request) -> web.Response:
    swarm, name = _swarm(request)
    now = request.app[keys.CLOCK]()
    [found] = await request.app[keys.STORE].stats([name], now=now)
    return web.json_response(
        {"swarm": swarm, "peers": found.peers, "seeders": found.seeders, "leechers": found.leechers}
    )
