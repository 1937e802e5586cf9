"""The relay directory and TURN credentials: signed relay heartbeats, region and load
ordering, expiry; and end to end, a running natkit relay heartbeats into the rendezvous
server and the credentials it hands a peer allocate on that relay (aioice's client)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aioice.turn import create_turn_endpoint

from client_sdk.identity import Identity, b64encode
from relay.heartbeat import SIGNATURE_HEADER, sign
from relay.settings import RelaySettings
from relay.turn.auth import rest_api_password
from rendezvous.api.auth import CHALLENGE_HEADER, KEY_HEADER, request_fields
from rendezvous.api.auth import SIGNATURE_HEADER as PEER_SIG
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.netutil import free_udp_port
from tests.relay.relay_process import running_relay
from tests.relay.turn.test_turn_sockets import Collector
from tests.rendezvous.apputil import serving, store_url

SECRET = "shared-turn-secret"
T0 = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis"])
async def api(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[TestClient[Any, Any], list[float]]]:
    settings = RendezvousSettings(
        store=store_url(request, request.param),
        secret="t",
        turn_secret=SECRET,
        turn_uris=["turn:fallback:3478"],
    )
    now = [T0]
    async with serving(settings, now) as client:
        yield client, now


async def beat(
    client: TestClient[Any, Any],
    relay_id: str,
    body: dict[str, Any],
    now: float,
    secret: str = SECRET,
) -> Any:
    raw = json.dumps(body).encode()
    headers = {SIGNATURE_HEADER: sign(secret, raw, now), "Content-Type": "application/json"}
    return await client.put(f"/v1/relays/{relay_id}", data=raw, headers=headers)


async def credentials(client: TestClient[Any, Any], peer: Identity, query: str = "") -> Any:
    challenge = (await (await client.get("/v1/challenge")).json())["challenge"]
    path = "/v1/turn-credentials" + query
    headers = {
        KEY_HEADER: b64encode(peer.public_key),
        CHALLENGE_HEADER: challenge,
        PEER_SIG: b64encode(peer.sign(*request_fields("GET", path, b"", challenge))),
    }
    return await client.get(path, headers=headers)


async def test_credentials_follow_region_and_load(
    api: tuple[TestClient[Any, Any], list[float]],
) -> None:
    client, now = api
    peer = Identity.generate()
    for relay_id, region, load in (("eu-1", "eu", 0.9), ("eu-2", "eu", 0.1), ("us-1", "us", 0.0)):
        body = {"region": region, "uris": [f"turn:{relay_id}:3478"], "load": load, "ttl": 30}
        assert (await beat(client, relay_id, body, now[0])).status == 204
    response = await credentials(client, peer, "?region=eu")
    assert response.status == 200
    issued = await response.json()
    assert issued["uris"] == ["turn:eu-2:3478", "turn:eu-1:3478", "turn:us-1:3478"]
    assert issued["username"] == f"{int(T0) + 86400}:{peer.peer_id}"
    assert issued["password"] == rest_api_password(SECRET, issued["username"])
    assert issued["ttl"] == 86400
    elsewhere = await (await credentials(client, peer, "?region=us")).json()
    assert elsewhere["uris"][0] == "turn:us-1:3478"
    now[0] += 31  # every heartbeat has lapsed: the static URIs
    assert (await (await credentials(client, peer)).json())["uris"] == ["turn:fallback:3478"]


@pytest.mark.parametrize(
    ("secret", "stamp", "status", "code"),
    [
        ("other", 0, 401, "bad_relay_signature"),
        (SECRET, -120, 401, "bad_relay_signature"),
        (SECRET, 0, 204, None),
    ],
)
async def test_heartbeat_signatures(
    api: tuple[TestClient[Any, Any], list[float]],
    secret: str,
    stamp: float,
    status: int,
    code: str | None,
) -> None:
    client, now = api
    body = {"uris": ["turn:r:3478"], "load": 0.5}
    response = await beat(client, "r", body, now[0] + stamp, secret)
    assert response.status == status
    if code is not None:
        assert (await response.json())["error"]["code"] == code
    unsigned = await client.put("/v1/relays/r", json=body)
    assert unsigned.status == 401


@pytest.mark.parametrize(
    "body",
    [
        {"uris": [], "load": 0.1},
        {"uris": ["http://x"], "load": 0.1},
        {"uris": ["turn:x"], "load": 2},
        {"uris": ["turn:x"], "load": 0.1, "extra": 1},
    ],
)
async def test_bad_heartbeats_are_400(
    api: tuple[TestClient[Any, Any], list[float]], body: dict[str, Any]
) -> None:
    client, now = api
    response = await beat(client, "r", body, now[0])
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid"


async def test_credentials_need_a_signed_peer_and_a_secret(
    api: tuple[TestClient[Any, Any], list[float]],
) -> None:
    client, _ = api
    assert (await client.get("/v1/turn-credentials")).status == 401
    bare = TestClient(TestServer(create_app(RendezvousSettings(store="memory", secret="t"))))
    await bare.start_server()
    try:
        response = await credentials(bare, Identity.generate())
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "no_turn_secret"
    finally:
        await bare.close()


async def test_a_running_relay_heartbeats_and_its_credentials_allocate() -> None:
    rendezvous = TestClient(
        TestServer(create_app(RendezvousSettings(store="memory", secret="t", turn_secret=SECRET)))
    )
    await rendezvous.start_server()
    port = free_udp_port()
    relay = RelaySettings.model_validate(
        {
            "listen": [f"127.0.0.1:{port}"],
            "metrics_listen": "",
            "auth_secret": [SECRET],
            "allow_peer": ["127.0.0.0/8"],
            "rendezvous_url": f"http://127.0.0.1:{rendezvous.port}",
            "region": "local",
            "heartbeat_interval": 0.2,
        }
    )
    peer = Identity.generate()
    try:
        async with running_relay(relay):
            for _ in range(50):
                response = await credentials(rendezvous, peer, "?region=local")
                if response.status == 200:
                    break
                await asyncio.sleep(0.1)
            issued = await response.json()
            assert issued["uris"] == [
                f"turn:127.0.0.1:{port}?transport=udp",
                f"turn:127.0.0.1:{port}?transport=tcp",
            ]
            transport, _ = await create_turn_endpoint(
                Collector,
                server_addr=("127.0.0.1", port),
                username=issued["username"],
                password=issued["password"],
            )
            loop = asyncio.get_running_loop()
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
                    target.bind(("127.0.0.1", 0))
                    target.setblocking(False)
                    transport.sendto(b"via the directory", target.getsockname())
                    data = await asyncio.wait_for(loop.sock_recv(target, 100), 3)
                    assert data == b"via the directory"
            finally:
                transport.close()
    finally:
        await rendezvous.close()
