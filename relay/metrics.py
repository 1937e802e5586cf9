"""Prometheus metrics and health endpoints of the relay (``/metrics``, ``/livez``).

The protocol cores count in plain ints (``StunCounters``); this collector turns the
current totals into Prometheus samples at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.server.counters import DropReason, StunCounters
from relay.stun import Method

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
LIVE_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("live")


def _method_name(method: int) -> str:
    try:
        return Method(method).name.lower()
    except ValueError:
        return f"0x{method:03x}"


class StunCollector(Collector):
    """Exports ``StunCounters`` totals (summed over workers by ``totals``)."""

    def __init__(self, totals: Callable[[], StunCounters], workers: Callable[[], int]) -> None:
        self._totals = totals
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        counters = self._totals()
        requests = CounterMetricFamily(
            "natkit_stun_requests", "STUN requests received", labels=["method"]
        )
        for method, n in sorted(counters.requests.items()):
            if method == Method.BINDING:
                n = counters.binding_requests()
            requests.add_metric([_method_name(method)], n)
        yield requests
        yield CounterMetricFamily(
            "natkit_stun_success_responses",
            "STUN success responses sent",
            value=counters.successes(),
        )
        errors = CounterMetricFamily(
            "natkit_stun_error_responses", "STUN error responses sent", labels=["code"]
        )
        for code, n in sorted(counters.error_responses.items()):
            errors.add_metric([str(code)], n)
        yield errors
        yield CounterMetricFamily(
            "natkit_stun_indications", "STUN indications received", value=counters.indications
        )
        dropped = CounterMetricFamily(
            "natkit_stun_dropped", "datagrams dropped without an answer", labels=["reason"]
        )
        for reason in DropReason:
            dropped.add_metric([reason.name.lower()], counters.dropped[reason])
        yield dropped
        yield CounterMetricFamily(
            "natkit_stun_send_failures",
            "replies the socket refused (send buffer full, unroutable destination)",
            value=counters.send_failures,
        )
        yield GaugeMetricFamily(
            "natkit_relay_workers", "worker processes serving", value=self._workers()
        )


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _livez(request: web.Request) -> web.Response:
    if request.app[LIVE_KEY]():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "unhealthy"}, status=503)


def create_metrics_app(registry: CollectorRegistry, live: Callable[[], bool]) -> web.Application:
    """The relay's small HTTP app: ``/metrics`` and ``/livez``."""
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[LIVE_KEY] = live
    app.router.add_routes([web.get("/metrics", _metrics), web.get("/livez", _livez)])
    return app
