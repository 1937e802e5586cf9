"""Who is asking, and how often: the ``access`` middleware.

Every request except health and metrics gets an ``Access`` (``request[keys.ACCESS]``):

* with ``Authorization: Bearer <API key or JWT>`` (on ``/v1/ws`` also ``?token=``, since
  browsers cannot set headers on a WebSocket), the namespace of the tenant the credential
  belongs to (``rendezvous.tenants``), rate-limited per credential at the tenant's rate;
* without, the public namespace, rate-limited per client IP -- or a 401 when the server
  runs with ``--no-public`` (tenants only).

Rate limits are token buckets in the store, so every instance shares them: one store
round trip per request (``--rate-limit 0`` and no tenant rate: none).
"""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Handler

from rendezvous import keys
from rendezvous.api.errors import ApiError
from rendezvous.api.limits import client_ip
from rendezvous.tenants import PUBLIC, Access, AccessError

EXEMPT = frozenset({"/livez", "/readyz", "/metrics"})
# Open without credentials even with --no-public: the API description, and the relays'
# heartbeats (signed with the TURN secret instead).
OPEN_PREFIXES = ("/openapi.json", "/v1/relays/")
WEBSOCKET_PATH = "/v1/ws"


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthenticated",
                "Authorization: use the Bearer scheme with an API key or token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
            )
        return token.strip()
    if request.path == WEBSOCKET_PATH:
        return request.query.get("token")
    return None


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in EXEMPT:
        return await handler(request)
    app = request.app
    settings = app[keys.SETTINGS]
    now = app[keys.CLOCK]()
    token = bearer_token(request)
    if token is not None:
        try:
            grant = app[keys.TENANTS].authenticate(token, now)
        except AccessError as exc:
            raise ApiError(
                401,
                "unauthenticated",
                str(exc),
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        who = Access(grant.tenant, grant)
        bucket = grant.bucket
        rate = settings.rate_limit if grant.rate is None else grant.rate
        burst = settings.rate_burst if grant.burst is None else grant.burst
    else:
        if not settings.public and not request.path.startswith(OPEN_PREFIXES):
            raise ApiError(
                401,
                "unauthenticated",
                "this server has no public namespace: send Authorization: Bearer "
                "<API key or token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        who, bucket = PUBLIC, None  # the client IP's, named only if it is limited
        rate, burst = settings.rate_limit, settings.rate_burst
    if rate > 0:
        if bucket is None:
            bucket = f"ip:{client_ip(request)}"
        allowed = await app[keys.STORE].take(bucket, rate=rate, burst=burst, now=now)
        if not allowed:
            limited = "your key" if token is not None else "your address"
            raise ApiError(
                429,
                "rate_limited",
                f"more than {rate:g} requests/s from {limited}",
                headers={"Retry-After": str(max(1, math.ceil(1 / rate)))},
            )
    request[keys.ACCESS] = who
    return await handler(request)


def store_swarm(request: web.Request, swarm: str) -> str:
    """The store's name of ``swarm`` in the request's namespace; 403 when the request's
    token does not open it."""
    who = request[keys.ACCESS]
    if not who.allows(swarm):
        raise ApiError(403, "forbidden", f"your token does not open swarm {swarm}")
    return who.store_swarm(swarm)
