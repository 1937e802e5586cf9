"""``/openapi.json`` describes exactly the routes the app serves, with the bodies' schemas
taken from the models that validate them."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient, TestServer

from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings


async def test_every_route_is_described_and_nothing_else() -> None:
    app = create_app(RendezvousSettings(store="memory", secret="s"))
    served = set()
    for resource in app.router.resources():
        # {name:regex} placeholders as OpenAPI writes them: {name}
        served.add(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        doc = await (await client.get("/openapi.json")).json()
    finally:
        await client.close()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == served
    join = doc["components"]["schemas"]["JoinBody"]
    assert join["properties"]["candidates"]["maxItems"] == 16
    assert join["additionalProperties"] is False
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            assert operation["responses"], path
    # Tenant tokens: optional on every /v1 route but the relays' heartbeat.
    assert doc["components"]["securitySchemes"]["tenantToken"]["scheme"] == "bearer"
    stats = doc["paths"]["/v1/swarms/{swarm}"]["get"]
    assert stats["security"] == [{"tenantToken": []}, {}]
    assert {"401", "403", "429"} <= set(stats["responses"])
    join = doc["paths"]["/v1/swarms/{swarm}/peers/{peer_id}"]["put"]
    assert join["security"] == [{"peerSignature": [], "tenantToken": []}, {"peerSignature": []}]
    assert "tenantToken" not in str(doc["paths"]["/v1/relays/{relay_id}"])
