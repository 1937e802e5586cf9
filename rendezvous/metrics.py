"""Prometheus metrics of one rendezvous instance, served at ``/metrics``.

Requests by route and status and their latency, connected signaling sockets, signals
relayed (and refused as unreachable), store errors. Each app has its own registry, so
several apps in one process (tests, ``natkit up``) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector


class TrackerCounts:
    """What a tracker listener answered: plain integers its hot path bumps (one attribute
    increment, not a labelled counter per datagram); ``/metrics`` reads them."""

    __slots__ = ("announces", "connects", "dropped", "errors", "scrapes")

    def __init__(self) -> None:
        self.connects = 0  # BEP 15 connect requests answered
        self.announces = 0
        self.scrapes = 0
        self.errors = 0  # answered with an error (malformed, expired id, store down, full)
        self.dropped = 0  # not answered (no transaction id to answer, or overloaded)

    def items(self) -> tuple[tuple[str, int], ...]:
        return (
            ("connect", self.connects),
            ("announce", self.announces),
            ("scrape", self.scrapes),
            ("error", self.errors),
            ("dropped", self.dropped),
        )


class _TrackerCollector(Collector):
    def __init__(self, trackers: dict[str, TrackerCounts]) -> None:
        self.trackers = trackers

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "natkit_rendezvous_tracker_requests",
            "BitTorrent tracker requests on the UDP tracker and the HTTP tracker's own "
            "port, by what they got (the API port's /announce is in the request metrics)",
            labels=["transport", "kind"],
        )
        for transport, counts in self.trackers.items():
            for kind, value in counts.items():
                family.add_metric([transport, kind], value)
        yield family


class RendezvousMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "natkit_rendezvous_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "natkit_rendezvous_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.sockets = Gauge(
            "natkit_rendezvous_websockets", "signaling sockets connected", registry=self.registry
        )
        self.signals = Counter(
            "natkit_rendezvous_signals",
            "signals by outcome (relayed, unreachable)",
            ["outcome"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "natkit_rendezvous_store_errors", "store operations that failed", registry=self.registry
        )
        # transport ("udp", "http") -> its listener's counts, registered as they open
        self.trackers: dict[str, TrackerCounts] = {}
        self.registry.register(_TrackerCollector(self.trackers))

    def middleware(self) -> Middleware:
        metrics = self

        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if name != "/v1/ws":  # a socket's lifetime is not a latency
                    metrics.latency.labels(name).observe(time.perf_counter() - started)
                metrics.requests.labels(name, str(status)).inc()

        return measure

    async def handler(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
