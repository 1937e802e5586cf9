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

from relay.runtime import RelayCounters
from relay.server.counters import DropReason, StunCounters
from relay.stun import Method
from relay.turn.counters import TurnCounters

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
LIVE_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("live")


def _method_name(method: int) -> str:
    try:
        return Method(method).name.lower()
    except ValueError:
        return f"0x{method:03x}"


class RelayCollector(Collector):
    """Exports the relay's counters (summed over workers by ``totals``)."""

    def __init__(self, totals: Callable[[], RelayCounters], workers: Callable[[], int]) -> None:
        self._totals = totals
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        counters = self._totals()
        yield from _stun_metrics(counters.stun)
        yield from _turn_metrics(counters.turn)
        yield GaugeMetricFamily(
            "natkit_relay_workers", "worker processes serving", value=self._workers()
        )


def _stun_metrics(counters: StunCounters) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "natkit_stun_requests", "STUN Binding requests received", labels=["method"]
    )
    requests.add_metric(["binding"], counters.binding_requests())
    yield requests
    yield CounterMetricFamily(
        "natkit_stun_success_responses", "STUN success responses sent", value=counters.successes()
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


def _turn_metrics(counters: TurnCounters) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "natkit_turn_requests", "TURN requests received", labels=["method"]
    )
    for method, n in sorted(counters.requests.items()):
        requests.add_metric([_method_name(method)], n)
    yield requests
    errors = CounterMetricFamily(
        "natkit_turn_error_responses", "TURN error responses sent", labels=["code"]
    )
    for code, n in sorted(counters.error_responses.items()):
        errors.add_metric([str(code)], n)
    yield errors
    failures = CounterMetricFamily(
        "natkit_turn_auth_failures", "TURN requests failing authentication", labels=["reason"]
    )
    for reason, n in sorted(counters.auth_failures.items()):
        failures.add_metric([reason], n)
    yield failures
    for name, help_text, value in (
        ("allocations_created", "TURN allocations created", counters.allocations_created),
        ("permissions_created", "TURN permissions installed", counters.permissions_created),
        ("channels_created", "TURN channels bound", counters.channels_created),
        (
            "quota_rejections",
            "Allocate requests refused by a quota (486)",
            counters.quota_rejections,
        ),
        (
            "policy_rejections",
            "peer addresses refused by the peer policy (403)",
            counters.policy_rejections,
        ),
        ("malformed", "TURN messages that did not parse", counters.malformed),
        ("internal_errors", "TURN messages that hit a bug (logged)", counters.internal_errors),
        (
            "client_dropped",
            "client data dropped (no allocation, channel or permission)",
            counters.client_dropped,
        ),
        ("peer_dropped", "peer data dropped (no permission)", counters.peer_dropped),
        (
            "bandwidth_dropped",
            "relayed datagrams dropped over the allocation's --max-bps",
            counters.bandwidth_dropped,
        ),
    ):
        yield CounterMetricFamily(f"natkit_turn_{name}", help_text, value=value)
    packets = CounterMetricFamily(
        "natkit_turn_relayed_packets", "datagrams relayed", labels=["direction"]
    )
    packets.add_metric(["to_peer"], counters.to_peer_packets)
    packets.add_metric(["to_client"], counters.to_client_packets)
    yield packets
    relayed_bytes = CounterMetricFamily(
        "natkit_turn_relayed_bytes", "payload bytes relayed", labels=["direction"]
    )
    relayed_bytes.add_metric(["to_peer"], counters.to_peer_bytes)
    relayed_bytes.add_metric(["to_client"], counters.to_client_bytes)
    yield relayed_bytes
    for name, help_text, value in (
        ("allocations", "TURN allocations now", counters.allocations),
        ("permissions", "TURN permissions now", counters.permissions),
        ("channels", "TURN channels now", counters.channels),
        (
            "routed_channels",
            "TURN channels relayed by the C data plane now",
            counters.routed_channels,
        ),
    ):
        yield GaugeMetricFamily(f"natkit_turn_{name}", help_text, value=value)


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
