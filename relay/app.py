"""Running the relay: bind the listeners (in-process or in worker processes), serve
metrics, stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.eventloop import loop_factory
from relay.heartbeat import heartbeats
from relay.metrics import RelayCollector, create_metrics_app
from relay.runtime import RelayCounters, RelayRuntime
from relay.server.listeners import Listener, plan_listeners
from relay.settings import RelaySettings
from relay.workers import WorkerPool

log = logging.getLogger("relay")


class _InProcess:
    """``--workers 1``: the relay runs in this process, on this loop."""

    def __init__(self, settings: RelaySettings, listeners: tuple[Listener, ...]) -> None:
        self._runtime = RelayRuntime(
            settings, listeners, nonce_secret=os.urandom(32), reuse_port=False
        )

    async def start(self) -> None:
        await self._runtime.start()

    async def stop(self) -> None:
        await self._runtime.stop()

    def totals(self) -> RelayCounters:
        return self._runtime.snapshot()

    def alive(self) -> int:
        return 1 if self._runtime.running else 0


async def _start_metrics(
    settings: RelaySettings, server: _InProcess | WorkerPool
) -> Callable[[], Awaitable[None]] | None:
    if settings.metrics_listen is None:
        return None
    registry = CollectorRegistry()
    registry.register(RelayCollector(server.totals, server.alive))
    app = create_metrics_app(registry, lambda: server.alive() == settings.workers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.metrics_listen.host, settings.metrics_listen.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("metrics on http://%s/metrics", settings.metrics_listen)
    return runner.cleanup


async def serve(
    settings: RelaySettings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set; ``ready`` is set once every socket is bound."""
    listeners = plan_listeners(settings)
    server: _InProcess | WorkerPool = (
        _InProcess(settings, listeners)
        if settings.workers == 1
        else WorkerPool(settings, listeners)
    )
    # Metrics first: once STUN answers, /metrics and /livez answer too.
    stop_metrics = await _start_metrics(settings, server)
    try:
        await server.start()
        try:
            for listener in listeners:
                extra = f" (RFC 5780 alternate {listener.other})" if listener.other else ""
                log.info("STUN listening on udp %s%s", listener.address, extra)
            log.info("relay ready: %d worker(s)", settings.workers)
            if ready is not None:
                ready.set()
            beating = (
                asyncio.create_task(heartbeats(settings, server.totals, stop))
                if settings.rendezvous_url
                else None
            )
            await stop.wait()
            log.info("relay stopping")
            if beating is not None:
                await beating
        finally:
            await server.stop()
    finally:
        if stop_metrics is not None:
            await stop_metrics()


async def _main(settings: RelaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def run(settings: RelaySettings) -> None:
    """Run ``natkit relay`` in the foreground until SIGINT or SIGTERM."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_main(settings))
