"""The ``/v1`` swarm API on a real aiohttp server, on the memory store and on Redis:
signed join/leave (a peer can only register itself), peer lists and paging, stats, and a
clear JSON error for every kind of bad input, with nothing written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from client_sdk.identity import Identity, b64decode, b64encode
from rendezvous.api.auth import CHALLENGE_HEADER, KEY_HEADER, SIGNATURE_HEADER, request_fields
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.apputil import serving, store_url

Clock = list[float]  # a mutable "now" the tests move


@pytest.fixture(params=["memory", "redis"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TestClient[Any, Any], Clock]]:
    store = store_url(request, request.param)
    settings = RendezvousSettings(store=store, secret="test", min_ttl=10, max_ttl=600)
    now: Clock = [1_800_000_000.0]
    async with serving(settings, now) as client:
        yield client, now


async def signed(
    client: TestClient[Any, Any],
    identity: Identity,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    tamper: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    extra = headers or {}
    challenge = (await (await client.get("/v1/challenge", headers=extra)).json())["challenge"]
    raw = json.dumps(body).encode() if body is not None else b""
    signature = identity.sign(*request_fields(method, path, raw, challenge))
    headers = {
        **extra,
        KEY_HEADER: b64encode(identity.public_key),
        CHALLENGE_HEADER: challenge,
        SIGNATURE_HEADER: b64encode(signature),
        "Content-Type": "application/json",
    }
    if tamper == "body":
        raw += b" "
    return await client.request(method, path, data=raw, headers=headers)


def join_body(port: int = 5000, **extra: Any) -> dict[str, Any]:
    return {"candidates": [{"ip": "203.0.113.5", "port": port, "type": "srflx"}], **extra}


async def error_of(response: Any) -> tuple[int, str, str]:
    body = await response.json()
    return response.status, body["error"]["code"], body["error"]["message"]


async def test_join_list_leave(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, _ = api
    alice, bob = Identity.generate(), Identity.generate()
    path = f"/v1/swarms/games/peers/{alice.peer_id}"
    response = await signed(client, alice, "PUT", path, join_body(nat="eim", ttl=120))
    assert response.status == 201
    assert await response.json() == {"joined": True, "ttl": 120, "peers": 1}
    again = await signed(client, alice, "PUT", path, join_body(ttl=120))
    assert again.status == 200  # a refresh
    await signed(client, bob, "PUT", f"/v1/swarms/games/peers/{bob.peer_id}", join_body(6000))
    listed = await (await client.get(f"/v1/swarms/games/peers?exclude={bob.peer_id}")).json()
    assert listed["total"] == 2
    [entry] = listed["peers"]
    assert entry["peer_id"] == alice.peer_id
    assert entry["public_key"] == b64encode(alice.public_key)
    assert entry["candidates"] == [
        {"ip": "203.0.113.5", "port": 5000, "protocol": "udp", "type": "srflx"}
    ]
    assert entry["expires_in"] == 120
    stats = await (await client.get("/v1/swarms/games")).json()
    assert stats == {"swarm": "games", "peers": 2, "seeders": 0, "leechers": 2}
    gone = await signed(client, alice, "DELETE", path)
    assert gone.status == 204
    assert (await (await client.get("/v1/swarms/games")).json())["peers"] == 1


async def test_registrations_expire(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, now = api
    alice = Identity.generate()
    await signed(client, alice, "PUT", f"/v1/swarms/s/peers/{alice.peer_id}", join_body(ttl=30))
    now[0] += 29
    assert (await (await client.get("/v1/swarms/s/peers")).json())["total"] == 1
    now[0] += 1
    assert (await (await client.get("/v1/swarms/s/peers")).json()) == {"peers": [], "total": 0}


async def test_cookie_paging(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, _ = api
    peers = [Identity.generate() for _ in range(3)]
    for peer in peers:
        await signed(client, peer, "PUT", f"/v1/swarms/s/peers/{peer.peer_id}", join_body())
    first = await (await client.get("/v1/swarms/s/peers?cookie=&limit=2")).json()
    assert [p["peer_id"] for p in first["peers"]] == [p.peer_id for p in peers[:2]]
    rest = await (await client.get(f"/v1/swarms/s/peers?cookie={first['cookie']}")).json()
    assert [p["peer_id"] for p in rest["peers"]] == [peers[2].peer_id]


async def test_a_peer_can_only_register_itself(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, _ = api
    alice, mallory = Identity.generate(), Identity.generate()
    path = f"/v1/swarms/s/peers/{alice.peer_id}"
    response = await signed(client, mallory, "PUT", path, join_body())
    assert await error_of(response) == (403, "forbidden", "a peer can only register itself")
    await signed(client, alice, "PUT", path, join_body())
    response = await signed(client, mallory, "DELETE", path)
    assert (await error_of(response))[:2] == (403, "forbidden")
    assert (await (await client.get("/v1/swarms/s")).json())["peers"] == 1


async def test_signature_problems_are_401(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, now = api
    alice = Identity.generate()
    path = f"/v1/swarms/s/peers/{alice.peer_id}"
    unsigned = await client.put(path, json=join_body())
    assert (await error_of(unsigned))[:2] == (401, "unauthenticated")
    tampered = await signed(client, alice, "PUT", path, join_body(), tamper="body")
    assert (await error_of(tampered))[:2] == (401, "bad_signature")
    # A challenge from another server (another secret), and an expired one.
    challenge = (await (await client.get("/v1/challenge")).json())["challenge"]
    # Another MAC: flip a bit of its last byte (editing base64 text could change only
    # padding bits, and decode to the same MAC).
    issued, nonce, mac = challenge.split(".")
    raw_mac = bytearray(b64decode(mac, what="mac", size=16))
    raw_mac[-1] ^= 1
    forged = ".".join((issued, nonce, b64encode(bytes(raw_mac))))
    headers = {
        KEY_HEADER: b64encode(alice.public_key),
        CHALLENGE_HEADER: forged,
        SIGNATURE_HEADER: b64encode(alice.sign(*request_fields("PUT", path, b"{}", forged))),
    }
    response = await client.put(path, data=b"{}", headers=headers)
    assert await error_of(response) == (401, "bad_challenge", "challenge was not issued here")
    headers[CHALLENGE_HEADER] = challenge
    headers[SIGNATURE_HEADER] = b64encode(
        alice.sign(*request_fields("PUT", path, b"{}", challenge))
    )
    now[0] += 61
    response = await client.put(path, data=b"{}", headers=headers)
    assert await error_of(response) == (401, "bad_challenge", "challenge expired: get a new one")
    headers[KEY_HEADER] = "not base64!"
    assert (await error_of(await client.put(path, data=b"{}", headers=headers)))[0] == 401
    assert (await (await client.get("/v1/swarms/s")).json())["peers"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"candidates": [{"ip": "nope", "port": 1}]}, "candidates.0.ip"),
        ({"candidates": [{"ip": "1.2.3.4", "port": 70000}]}, "candidates.0.port"),
        ({"candidates": [{"ip": "1.2.3.4", "port": 1}] * 17}, "candidates"),
        ({"metadata": {"k": "x" * 2000}}, "metadata"),
        ({"nat": "x" * 65}, "nat"),
        ({"unknown": 1}, "unknown"),
        ({"ttl": 5}, "ttl: from 10 to 600 seconds"),
        ({"ttl": 601}, "ttl: from 10 to 600 seconds"),
    ],
)
async def test_bad_bodies_are_400_and_write_nothing(
    api: tuple[TestClient[Any, Any], Clock], body: dict[str, Any], message: str
) -> None:
    client, _ = api
    alice = Identity.generate()
    response = await signed(client, alice, "PUT", f"/v1/swarms/s/peers/{alice.peer_id}", body)
    status, code, text = await error_of(response)
    assert (status, code) == (400, "invalid")
    assert message in text
    assert (await (await client.get("/v1/swarms/s")).json())["peers"] == 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/swarms/-bad/peers", "swarm:"),
        ("/v1/swarms/a%7Bb%7D/peers", "swarm:"),
        ("/v1/swarms/s/peers?numwant=1000", "numwant: an integer from 0 to 200"),
        ("/v1/swarms/s/peers?numwant=-1", "numwant"),
        ("/v1/swarms/s/peers?exclude=ABC", "exclude: 32 characters"),
        ("/v1/swarms/s/peers?cookie=xyz", "cookie"),
        ("/v1/swarms/s/peers?cookie=&limit=0", "limit"),
        ("/v1/swarms/" + "a" * 129, "swarm:"),
    ],
)
async def test_bad_queries_are_400(
    api: tuple[TestClient[Any, Any], Clock], path: str, message: str
) -> None:
    client, _ = api
    status, code, text = await error_of(await client.get(path))
    assert (status, code) == (400, "invalid")
    assert message in text


async def test_not_json_and_unknown_routes(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, _ = api
    alice = Identity.generate()
    path = f"/v1/swarms/s/peers/{alice.peer_id}"
    challenge = (await (await client.get("/v1/challenge")).json())["challenge"]
    raw = b"{not json"
    headers = {
        KEY_HEADER: b64encode(alice.public_key),
        CHALLENGE_HEADER: challenge,
        SIGNATURE_HEADER: b64encode(alice.sign(*request_fields("PUT", path, raw, challenge))),
    }
    status, code, text = await error_of(await client.put(path, data=raw, headers=headers))
    assert (status, code) == (400, "invalid")
    assert text.startswith("body is not JSON")
    assert (await error_of(await client.get("/v1/nothing")))[:2] == (404, "not_found")
    too_big = await client.put(path, data=b"x" * 20000, headers=headers)
    assert (await error_of(too_big))[0] == 413


async def test_health(api: tuple[TestClient[Any, Any], Clock]) -> None:
    client, _ = api
    assert (await client.get("/livez")).status == 200
    assert await (await client.get("/readyz")).json() == {"status": "ok"}


async def test_readyz_fails_when_redis_is_down(redis_server: Any) -> None:
    settings = RendezvousSettings(store=redis_server.url, secret="test")
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        assert (await client.get("/readyz")).status == 200
        redis_server.stop()
        response = await client.get("/readyz")
        assert (await error_of(response))[:2] == (503, "store_unavailable")
        listed = await client.get("/v1/swarms/s/peers")
        assert (await error_of(listed))[:2] == (503, "store_unavailable")
    finally:
        await client.close()
        redis_server.restart()
