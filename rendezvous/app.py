"""``create_app(settings)``: the rendezvous aiohttp application, and ``serve`` to run it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from rendezvous import keys
from rendezvous.api import health, openapi, relays, swarms, tracker, ws
from rendezvous.api.access import access
from rendezvous.api.errors import json_errors
from rendezvous.bittorrent.connection_ids import ConnectionIds
from rendezvous.challenges import Challenges
from rendezvous.front_door import FrontDoorSite
from rendezvous.http_tracker import HttpTracker, open_http_tracker
from rendezvous.metrics import RendezvousMetrics, TrackerCounts
from rendezvous.settings import RendezvousSettings
from rendezvous.signaling.bus import open_bus
from rendezvous.signaling.hub import Hub
from rendezvous.signaling.session import Signaling
from rendezvous.store import open_store
from rendezvous.tenants import load_tenants
from rendezvous.udp_tracker import open_udp_tracker

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # every JSON body is small; the models cap each field further


def create_app(
    settings: RendezvousSettings, *, clock: Callable[[], float] = time.time
) -> web.Application:
    metrics = RendezvousMetrics()
    # Metrics outermost: they see the status json_errors turned an exception into.
    app = web.Application(
        middlewares=[metrics.middleware(), json_errors, access], client_max_size=MAX_BODY
    )
    app[keys.METRICS] = metrics
    # The HTTP tracker's answers on either port (the API port's front door, and
    # --http-tracker); the UDP tracker adds its own when it runs.
    metrics.trackers["http"] = TrackerCounts()
    app.router.add_get("/metrics", metrics.handler)
    app[keys.SETTINGS] = settings
    app[keys.TENANTS] = load_tenants(settings.tenants_file)  # ValueError naming the problem
    app[keys.TRACKER] = HttpTracker(settings)
    app[keys.CLOCK] = clock
    secret = settings.secret.encode() if settings.secret else os.urandom(32)
    if not settings.secret and settings.store != "memory":
        log.warning("no RENDEZVOUS_SECRET: challenges work on this instance only")
    app[keys.CHALLENGES] = Challenges(secret, settings.challenge_lifetime)
    app[keys.CONNECTION_IDS] = ConnectionIds(
        hashlib.sha256(b"natkit udp tracker\n" + secret).digest()
    )
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_udp_tracker)
    app.cleanup_ctx.append(_http_tracker)
    app.cleanup_ctx.append(_signaling)
    app.on_shutdown.append(_close_websockets)
    app.router.add_routes(health.routes)
    app.router.add_routes(swarms.routes)
    app.router.add_routes(tracker.routes)
    app.router.add_routes(relays.routes)
    app.router.add_routes(ws.routes)
    app.router.add_routes(openapi.routes)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    store = open_store(settings.store, keep=float(settings.max_ttl))
    app[keys.STORE] = store
    try:
        yield
    finally:
        await store.close()


async def _signaling(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[keys.SETTINGS], app[keys.METRICS]
    hub = Hub(open_bus(settings.store))
    await hub.start()
    app[keys.HUB] = hub
    app[keys.SIGNALING] = Signaling(
        hub,
        app[keys.CHALLENGES],
        app[keys.CLOCK],
        metrics.signals,
        settings.signal_queue,
        settings.ping_interval,
    )
    metrics.sockets.set_function(lambda: len(hub.local))
    try:
        yield
    finally:
        await hub.bus.close()


async def _close_websockets(app: web.Application) -> None:
    """On shutdown every signaling socket is closed with 1001 (going away)."""
    await app[keys.SIGNALING].close_all()


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) of a listener setting."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def _udp_tracker(app: web.Application) -> AsyncIterator[None]:
    """The BEP 15 tracker on ``--udp-tracker HOST:PORT``, when configured."""
    settings = app[keys.SETTINGS]
    if not settings.udp_tracker:
        yield
        return
    host, port = _host_port(settings.udp_tracker)
    protocol = await open_udp_tracker(
        host,
        port,
        settings,
        app[keys.CONNECTION_IDS],
        app[keys.STORE],
        app[keys.CLOCK],
        batched=settings.udp_batch_io,
    )
    app[keys.UDP_TRACKER] = protocol
    app[keys.METRICS].trackers["udp"] = protocol.counts
    log.info("udp tracker on %s", settings.udp_tracker)
    try:
        yield
    finally:
        await protocol.close()


async def _http_tracker(app: web.Application) -> AsyncIterator[None]:
    """The HTTP tracker on a port of its own, ``--http-tracker HOST:PORT``, when set."""
    settings = app[keys.SETTINGS]
    if not settings.http_tracker:
        yield
        return
    host, port = _host_port(settings.http_tracker)
    counts = app[keys.METRICS].trackers["http"]
    server = await open_http_tracker(
        host, port, app[keys.TRACKER], app[keys.STORE], app[keys.CLOCK], counts
    )
    app[keys.HTTP_TRACKER] = server
    log.info("http tracker on %s", settings.http_tracker)
    try:
        yield
    finally:
        await server.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``; IPv6 for a v6 host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(
    settings: RendezvousSettings,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``ready(port)`` once listening."""
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    await runner.setup()
    try:
        site = FrontDoorSite(runner, listening_socket(settings.host, settings.port))
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        log.info(
            "rendezvous listening on http://%s:%d (store: %s)",
            settings.host,
            port,
            settings.store.split("@")[-1],
        )
        if ready is not None:
            ready(port)
        await stop.wait()
    finally:
        await runner.cleanup()
