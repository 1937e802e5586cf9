"""Tenants over HTTP, on memory and Redis: each tenant's swarms and signaling peers are
its own, a token's ``swarms`` claim closes the other swarms (403, nothing written),
``--no-public`` turns away anonymous requests (401 with WWW-Authenticate), and each
credential has its own rate limit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient

from client_sdk.identity import Identity
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.api.test_swarms_api import error_of, join_body, signed
from tests.rendezvous.apputil import serving, store_url
from tests.rendezvous.test_signaling import connect, receive

NOW = 1_800_000_000.0
SECRET = "j" * 40
ACME_KEY = "acme-key-1"
GLOBEX_KEY = "globex-key-1"

Client = TestClient[Any, Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(**claims: Any) -> str:
    return jwt.encode({"iss": "acme", "exp": NOW + 600, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(params=["memory", "redis"])
async def servers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Client, Client, list[float]]]:
    """(a public server, a tenants-only server), on one store, sharing a clock."""
    store = store_url(request, request.param)
    tenants = {
        "tenants": {
            "acme": {
                "api_keys_sha256": [hashlib.sha256(ACME_KEY.encode()).hexdigest()],
                "jwt": {"secret": SECRET},
                "rate_limit": 1,
                "rate_burst": 3,
            },
            "globex": {"api_keys_sha256": [hashlib.sha256(GLOBEX_KEY.encode()).hexdigest()]},
        }
    }
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(tenants))
    now = [NOW]

    def settings(public: bool) -> RendezvousSettings:
        return RendezvousSettings(
            store=store, secret="s", tenants_file=str(path), public=public, rate_limit=100
        )

    async with serving(settings(True), now) as public, serving(settings(False), now) as private:
        yield public, private, now


async def peers_seen(client: Client, swarm: str, headers: dict[str, str]) -> int:
    response = await client.get(f"/v1/swarms/{swarm}", headers=headers)
    assert response.status == 200
    count: int = (await response.json())["peers"]
    return count


async def test_each_tenant_has_its_own_swarms(
    servers: tuple[Client, Client, list[float]],
) -> None:
    public, _, now = servers
    peer = Identity.generate()
    path = f"/v1/swarms/room/peers/{peer.peer_id}"
    joined = await signed(public, peer, "PUT", path, join_body(), headers=bearer(ACME_KEY))
    assert joined.status == 201
    now[0] += 1
    assert await peers_seen(public, "room", bearer(ACME_KEY)) == 1
    assert await peers_seen(public, "room", bearer(token())) == 1  # acme's token: same tenant
    assert await peers_seen(public, "room", {}) == 0  # the public namespace
    assert await peers_seen(public, "room", bearer(GLOBEX_KEY)) == 0
    listed = await public.get("/v1/swarms/room/peers", headers=bearer(GLOBEX_KEY))
    assert (await listed.json())["peers"] == []
    # The same peer joins the public swarm of that name separately.
    assert (await signed(public, peer, "PUT", path, join_body())).status == 201


async def test_a_tokens_swarms_claim_closes_the_others(
    servers: tuple[Client, Client, list[float]],
) -> None:
    public, _, now = servers
    peer = Identity.generate()
    limited = bearer(token(swarms=["room-*"]))
    path = f"/v1/swarms/lobby/peers/{peer.peer_id}"
    refused = await signed(public, peer, "PUT", path, join_body(), headers=limited)
    assert await error_of(refused) == (403, "forbidden", "your token does not open swarm lobby")
    now[0] += 2
    assert await peers_seen(public, "lobby", bearer(ACME_KEY)) == 0  # nothing written
    assert (await public.get("/v1/swarms/lobby", headers=limited)).status == 403
    now[0] += 2
    assert (await public.get("/v1/swarms/room-1", headers=limited)).status == 200


async def test_no_public_namespace(servers: tuple[Client, Client, list[float]]) -> None:
    _, private, _ = servers
    anonymous = await private.get("/v1/swarms/room")
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    status, code, _ = await error_of(anonymous)
    assert (status, code) == (401, "unauthenticated")
    assert (await private.get("/v1/turn-credentials")).status == 401
    assert (await private.get("/announce?info_hash=x")).status == 401
    for open_path in ("/livez", "/metrics", "/openapi.json"):
        assert (await private.get(open_path)).status == 200
    assert (await private.get("/v1/swarms/room", headers=bearer(GLOBEX_KEY))).status == 200


async def test_bad_credentials_are_401(servers: tuple[Client, Client, list[float]]) -> None:
    public, _, now = servers
    cases = [
        ({"Authorization": "Basic YWxhZGRpbjpvcGVu"}, "invalid_request", "Bearer scheme"),
        ({"Authorization": "Bearer"}, "invalid_request", "Bearer scheme"),
        (bearer("not-a-key"), "invalid_token", "unknown API key"),
        (bearer(token(exp=NOW - 100)), "invalid_token", "expired"),
    ]
    for headers, error, message in cases:
        response = await public.get("/v1/swarms/room", headers=headers)
        assert response.headers["WWW-Authenticate"] == f'Bearer error="{error}"'
        status, code, text = await error_of(response)
        assert (status, code) == (401, "unauthenticated")
        assert message in text
        now[0] += 1


async def test_each_credential_has_its_own_rate_limit(
    servers: tuple[Client, Client, list[float]],
) -> None:
    public, _, now = servers
    statuses = [
        (await public.get("/v1/swarms/s", headers=bearer(ACME_KEY))).status for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # acme: 1/s, bursts of 3
    refused = await public.get("/v1/swarms/s", headers=bearer(ACME_KEY))
    assert (await error_of(refused))[2] == "more than 1 requests/s from your key"
    # A token of the same tenant, another credential; anonymous requests, the IP's bucket.
    assert (await public.get("/v1/swarms/s", headers=bearer(token(sub="u1")))).status == 200
    assert (await public.get("/v1/swarms/s")).status == 200
    now[0] += 1
    assert (await public.get("/v1/swarms/s", headers=bearer(ACME_KEY))).status == 200


async def test_a_bad_tenants_file_stops_the_server(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text('{"tenants": {"a": {"jwt": {"secret": "short"}}}}')
    with pytest.raises(ValueError, match=r"tenants\.a\.jwt\.secret"):
        create_app(RendezvousSettings(tenants_file=str(path)))


async def test_signals_stay_within_a_namespace(
    servers: tuple[Client, Client, list[float]],
) -> None:
    public, private, _ = servers
    acme, acme_too, globex, anyone = (Identity.generate() for _ in range(4))
    acme_ws = await connect(public, acme, f"/v1/ws?token={ACME_KEY}")
    acme_too_ws = await connect(public, acme_too, f"/v1/ws?token={token(sub='u2')}")
    globex_ws = await connect(public, globex, f"/v1/ws?token={GLOBEX_KEY}")
    anyone_ws = await connect(public, anyone)
    # The same identity in the public namespace too: another address, another socket.
    acme_public_ws = await connect(public, acme)
    try:
        await acme_ws.send_json({"type": "signal", "to": acme_too.peer_id, "data": "hi"})
        got = await receive(acme_too_ws)
        assert (got["type"], got["from"], got["data"]) == ("signal", acme.peer_id, "hi")
        for sender, target in ((acme_ws, globex), (globex_ws, acme_too), (anyone_ws, acme_too)):
            await sender.send_json({"type": "signal", "to": target.peer_id, "data": "x"})
            refused = await receive(sender)
            assert (refused["code"], refused["to"]) == ("unreachable", target.peer_id)
        await anyone_ws.send_json({"type": "signal", "to": acme.peer_id, "data": "public"})
        assert (await receive(acme_public_ws))["data"] == "public"
        await acme_too_ws.send_json({"type": "signal", "to": acme.peer_id, "data": "tenant"})
        assert (await receive(acme_ws))["data"] == "tenant"
    finally:
        for ws in (acme_ws, acme_too_ws, globex_ws, anyone_ws, acme_public_ws):
            await ws.close()
    # Without a public namespace, a socket needs a token; a bad one is refused.
    for path in ("/v1/ws", "/v1/ws?token=wrong"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused_upgrade:
            await private.ws_connect(path)
        assert refused_upgrade.value.status == 401


def test_tracker_listeners_need_the_public_namespace() -> None:
    with pytest.raises(ValueError, match="not with --no-public"):
        RendezvousSettings(public=False, udp_tracker="127.0.0.1:0")
    with pytest.raises(ValueError, match="not with --no-public"):
        RendezvousSettings(public=False, http_tracker="127.0.0.1:0")
