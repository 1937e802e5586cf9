"""``/livez`` (the process answers) and ``/readyz`` (and its store does)."""

from __future__ import annotations

from aiohttp import web

from rendezvous import keys
from rendezvous.api.errors import error_response
from rendezvous.store import StoreError

routes = web.RouteTableDef()


@routes.get("/livez")
async def livez(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[keys.STORE].ping()
    except StoreError as exc:
        return error_response(503, "store_unavailable", str(exc))
    return web.json_response({"status": "ok"})
