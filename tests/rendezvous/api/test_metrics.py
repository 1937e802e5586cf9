"""``/metrics`` counts what happened: requests by route and status, latency, sockets,
signals by outcome, store errors."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from client_sdk.identity import Identity
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.test_signaling import connect, receive


def sample(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"{series} not in /metrics"
    return float(found.group(1))


async def metrics_text(client: TestClient[Any, Any]) -> str:
    return await (await client.get("/metrics")).text()


async def test_requests_sockets_and_signals_are_counted() -> None:
    client = TestClient(TestServer(create_app(RendezvousSettings(store="memory", secret="s"))))
    await client.start_server()
    try:
        await client.get("/v1/swarms/games")
        await client.get("/v1/swarms/games")
        await client.get("/v1/swarms/-bad")
        await client.get("/nowhere")
        alice, bob = Identity.generate(), Identity.generate()
        to_alice, to_bob = await connect(client, alice), await connect(client, bob)
        await to_alice.send_json({"type": "signal", "to": bob.peer_id, "data": 1})
        await receive(to_bob)
        await to_alice.send_json({"type": "signal", "to": Identity.generate().peer_id, "data": 1})
        await receive(to_alice)
        text = await metrics_text(client)
        route = 'route="/v1/swarms/{swarm}"'
        assert sample(text, f'natkit_rendezvous_requests_total{{{route},status="200"}}') == 2
        assert sample(text, f'natkit_rendezvous_requests_total{{{route},status="400"}}') == 1
        assert sample(text, 'natkit_rendezvous_requests_total{route="unmatched",status="404"}') == 1
        assert sample(text, f"natkit_rendezvous_request_seconds_count{{{route}}}") == 3
        assert sample(text, "natkit_rendezvous_websockets") == 2
        assert sample(text, 'natkit_rendezvous_signals_total{outcome="relayed"}') == 1
        assert sample(text, 'natkit_rendezvous_signals_total{outcome="unreachable"}') == 1
        await to_alice.close()
        await to_bob.close()
    finally:
        await client.close()


async def test_store_errors_are_counted(redis_server: Any) -> None:
    settings = RendezvousSettings(store=redis_server.url, secret="s")
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        redis_server.stop()
        assert (await client.get("/v1/swarms/games")).status == 503
        assert sample(await metrics_text(client), "natkit_rendezvous_store_errors_total") == 1
    finally:
        await client.close()
        redis_server.restart()
