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
from collections.abc import Callable
from typing import NamedTuple

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


class Admission(NamedTuple):
    """Who a request acts as, and the rate it spends from which bucket."""

    who: Access
    bucket: str | None  # None: the client IP's (named only if it is limited)
    rate: float  # requests/s; 0: no limit
    burst: float
    keyed: bool  # the request carried a credential


def bearer_token(authorization: str | None, path: str, query_token: str | None) -> str | None:
    """The credential of a request with these headers: ``Authorization: Bearer``, or on
    ``/v1/ws`` the ``token`` query parameter."""
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthenticated",
                "Authorization: use the Bearer scheme with an API key or token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
            )
        return token.strip()
    if path == WEBSOCKET_PATH:
        return query_token
    return None


def identify(
    app: web.Application, path: str, authorization: str | None, query_token: str | None
) -> Admission:
    """The namespace and rate of a request (401: a bad credential, or none where the
    server has no public namespace). Waits for nothing: ``charge`` spends the rate."""
    settings = app[keys.SETTINGS]
    token = bearer_token(authorization, path, query_token)
    if token is None:
        if not settings.public and not path.startswith(OPEN_PREFIXES):
            raise ApiError(
                401,
                "unauthenticated",
                "this server has no public namespace: send Authorization: Bearer "
                "<API key or token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Admission(PUBLIC, None, settings.rate_limit, settings.rate_burst, False)
    try:
        grant = app[keys.TENANTS].authenticate(token, app[keys.CLOCK]())
    except AccessError as exc:
        raise ApiError(
            401,
            "unauthenticated",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    rate = settings.rate_limit if grant.rate is None else grant.rate
    burst = settings.rate_burst if grant.burst is None else grant.burst
    return Admission(Access(grant.tenant, grant), grant.bucket, rate, burst, True)


def bucket_of(admission: Admission, ip: Callable[[], str]) -> str:
    """The token bucket a request spends from: its credential's, else its client IP's."""
    return admission.bucket if admission.bucket is not None else f"ip:{ip()}"


def rate_limited(admission: Admission) -> ApiError:
    limited = "your key" if admission.keyed else "your address"
    return ApiError(
        429,
        "rate_limited",
        f"more than {admission.rate:g} requests/s from {limited}",
        headers={"Retry-After": str(max(1, math.ceil(1 / admission.rate)))},
    )


async def charge(app: web.Application, admission: Admission, ip: Callable[[], str]) -> None:
    """Spend one request from the admission's bucket (``ip()`` names the client IP's);
    429 when it is empty. One store round trip, none without a rate."""
    if admission.rate <= 0:
        return
    store, now = app[keys.STORE], app[keys.CLOCK]()
    bucket = bucket_of(admission, ip)
    if not await store.take(bucket, rate=admission.rate, burst=admission.burst, now=now):
        raise rate_limited(admission)


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in EXEMPT:
        return await handler(request)
    path = request.path
    query_token = request.query.get("token") if path == WEBSOCKET_PATH else None
    admission = identify(request.app, path, request.headers.get("Authorization"), query_token)
    await charge(request.app, admission, lambda: client_ip(request))
    request[keys.ACCESS] = admission.who
    return await handler(request)


def store_swarm(request: web.Request, swarm: str) -> str:
    """The store's name of ``swarm`` in the request's namespace; 403 when the request's
    token does not open it."""
    who = request[keys.ACCESS]
    if not who.allows(swarm):
        raise ApiError(403, "forbidden", f"your token does not open swarm {swarm}")
    return who.store_swarm(swarm)
