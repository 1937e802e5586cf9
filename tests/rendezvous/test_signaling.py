"""WebSocket signaling on real servers: two instances on one real Redis, where a peer on
one signals a peer on the other; a signal with an id is acknowledged ``delivered``, an
unreachable target gets an error back, both in the order the signals were sent; bad
hellos, oversized signals, replaced sockets, slow readers and shutdown each get their
answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from client_sdk.identity import WEBSOCKET_HELLO, Identity, b64encode
from rendezvous import keys
from rendezvous.app import create_app
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.apputil import FRONT_ENDS, client_of

WS = aiohttp.ClientWebSocketResponse


async def started(store: str, front: str = "lean", **extra: Any) -> TestClient[Any, Any]:
    """An instance on ``store``, its ``/v1/ws`` served by ``front`` (``FRONT_ENDS``)."""
    client = client_of(create_app(RendezvousSettings(store=store, secret="s", **extra)), front)
    await client.start_server()
    return client


@pytest.fixture(params=[("lean", "aiohttp"), ("lean", "lean")], ids=["mixed", "lean"])
async def two_instances(
    redis_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[TestClient[Any, Any], ...]]:
    """Two instances on one Redis: one of each front end, or both lean."""
    first_front, second_front = request.param
    first, second = await started(redis_url, first_front), await started(redis_url, second_front)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.fixture(params=[(b, f) for b in ("memory", "redis") for f in FRONT_ENDS], ids=str)
async def instance(request: pytest.FixtureRequest) -> AsyncIterator[TestClient[Any, Any]]:
    backend, front = request.param
    store = "memory" if backend == "memory" else request.getfixturevalue("redis_url")
    client = await started(store, front)
    try:
        yield client
    finally:
        await client.close()


async def receive(ws: WS) -> dict[str, Any]:
    """The next message that is not a ping (pings are answered, as a client must)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        decoded: dict[str, Any] = json.loads(message.data)
        if decoded["type"] != "ping":
            return decoded
        await ws.send_json({"type": "pong", "nonce": decoded["nonce"]})


async def close_frame(ws: WS) -> aiohttp.WSMessage:
    """The next frame that is not text (pings and other messages are skipped)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), 5)
        if message.type != aiohttp.WSMsgType.TEXT:
            return message


async def connect(client: TestClient[Any, Any], identity: Identity, path: str = "/v1/ws") -> WS:
    ws = await client.ws_connect(path)
    challenge = await receive(ws)
    assert challenge["type"] == "challenge"
    signature = identity.sign(challenge["challenge"].encode(), WEBSOCKET_HELLO)
    hello = {
        "type": "hello",
        "public_key": b64encode(identity.public_key),
        "signature": b64encode(signature),
    }
    await ws.send_json(hello)
    assert await receive(ws) == {"type": "welcome", "peer_id": identity.peer_id}
    return ws


async def test_signals_cross_instances(two_instances: tuple[TestClient[Any, Any], ...]) -> None:
    first, second = two_instances
    alice, bob = Identity.generate(), Identity.generate()
    to_alice, to_bob = await connect(first, alice), await connect(second, bob)
    offer = {"sdp": "v=0...", "candidates": [{"ip": "203.0.113.5", "port": 5000}]}
    await to_alice.send_json({"type": "signal", "to": bob.peer_id, "id": "1", "data": offer})
    got = await receive(to_bob)
    assert got == {"type": "signal", "from": alice.peer_id, "id": "1", "data": offer}
    # The publish reached bob's instance: alice is told.
    assert await receive(to_alice) == {"type": "delivered", "id": "1", "to": bob.peer_id}
    await to_bob.send_json({"type": "signal", "to": alice.peer_id, "data": {"answer": True}})
    back = await receive(to_alice)
    assert back == {"type": "signal", "from": bob.peer_id, "id": None, "data": {"answer": True}}
    # No id, no acknowledgement: the next thing bob hears is his own echo.
    await to_bob.send_json({"type": "signal", "to": bob.peer_id, "data": "echo"})
    assert (await receive(to_bob))["data"] == "echo"
    # Once bob leaves, signalling him is an explicit error, not silence.
    await to_bob.close()
    await asyncio.sleep(0.2)
    await to_alice.send_json({"type": "signal", "to": bob.peer_id, "id": "2", "data": 1})
    error = await receive(to_alice)
    assert (error["code"], error["to"], error["id"]) == ("unreachable", bob.peer_id, "2")
    await to_alice.send_json({"type": "signal", "to": alice.peer_id, "data": "echo"})
    assert (await receive(to_alice))["data"] == "echo"  # and no "delivered" for "2"
    await to_alice.close()


async def test_acknowledgements_cross_instances_in_order(
    two_instances: tuple[TestClient[Any, Any], ...],
) -> None:
    first, second = two_instances
    alice, bob = Identity.generate(), Identity.generate()
    to_alice, to_bob = await connect(first, alice), await connect(second, bob)
    nobody = Identity.generate().peer_id
    for n in range(10):
        target = bob.peer_id if n % 2 == 0 else nobody
        await to_alice.send_json({"type": "signal", "to": target, "id": str(n), "data": n})
    for n in range(10):
        answer = await receive(to_alice)
        if n % 2 == 0:
            assert answer == {"type": "delivered", "id": str(n), "to": bob.peer_id}
        else:
            assert (answer["type"], answer["code"], answer["id"]) == (
                "error",
                "unreachable",
                str(n),
            )
    assert [(await receive(to_bob))["data"] for _ in range(5)] == [0, 2, 4, 6, 8]
    await to_alice.close()
    await to_bob.close()


async def test_signals_with_an_id_are_acknowledged(instance: TestClient[Any, Any]) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    to_alice, to_bob = await connect(instance, alice), await connect(instance, bob)
    nobody = Identity.generate().peer_id

    async def nothing_more(ws: WS, me: Identity) -> None:
        """Nothing is waiting for ``ws``: a signal to oneself is the next message."""
        await ws.send_json({"type": "signal", "to": me.peer_id, "data": "marker"})
        assert await receive(ws) == {
            "type": "signal",
            "from": me.peer_id,
            "id": None,
            "data": "marker",
        }

    # With an id, to a connected peer: relayed, then acknowledged (fast path and model).
    for text in (
        json.dumps({"type": "signal", "to": bob.peer_id, "id": "a1", "data": {"sdp": "v=0"}}),
        json.dumps({"id": "a2", "data": [1], "to": bob.peer_id, "type": "signal"}, indent=1),
    ):
        await to_alice.send_str(text)
        expected_id = json.loads(text)["id"]
        assert (await receive(to_bob))["id"] == expected_id
        assert await receive(to_alice) == {
            "type": "delivered",
            "id": expected_id,
            "to": bob.peer_id,
        }
    # Without an id: relayed, not acknowledged.
    await to_alice.send_json({"type": "signal", "to": bob.peer_id, "data": "quiet"})
    assert (await receive(to_bob))["data"] == "quiet"
    await nothing_more(to_alice, alice)
    # To nobody: unreachable, and no acknowledgement after it.
    await to_alice.send_json({"type": "signal", "to": nobody, "id": "a3", "data": 1})
    error = await receive(to_alice)
    assert (error["type"], error["code"], error["to"], error["id"]) == (
        "error",
        "unreachable",
        nobody,
        "a3",
    )
    await nothing_more(to_alice, alice)
    # To oneself: the signal and its acknowledgement (on Redis, the publish is
    # acknowledged once it reached the subscribed instance, maybe before it came back).
    await to_alice.send_json({"type": "signal", "to": alice.peer_id, "id": "a4", "data": 4})
    both = sorted([await receive(to_alice), await receive(to_alice)], key=lambda m: m["type"])
    assert both == [
        {"type": "delivered", "id": "a4", "to": alice.peer_id},
        {"type": "signal", "from": alice.peer_id, "id": "a4", "data": 4},
    ]
    # A burst: every answer, in the order sent.
    for n in range(20):
        target = bob.peer_id if n % 3 else nobody
        await to_alice.send_json({"type": "signal", "to": target, "id": f"b{n}", "data": n})
    for n in range(20):
        answer = await receive(to_alice)
        assert answer["id"] == f"b{n}"
        assert answer["type"] == ("delivered" if n % 3 else "error")
    assert [(await receive(to_bob))["data"] for n in range(20) if n % 3] == [
        n for n in range(20) if n % 3
    ]
    await nothing_more(to_alice, alice)
    # Punches are answered by their punch_now, never acknowledged.
    await to_alice.send_json({"type": "punch", "to": bob.peer_id, "id": "p", "candidates": []})
    assert (await receive(to_bob))["type"] == "punch"
    await nothing_more(to_alice, alice)
    await to_alice.close()
    await to_bob.close()


async def test_unknown_target_and_bad_messages(instance: TestClient[Any, Any]) -> None:
    alice = Identity.generate()
    ws = await connect(instance, alice)
    await ws.send_json({"type": "signal", "to": Identity.generate().peer_id, "data": "hi"})
    assert (await receive(ws))["code"] == "unreachable"
    for bad, text in (
        ({"type": "signal", "to": "nobody", "data": 1}, "to"),
        ({"type": "signal", "to": alice.peer_id, "data": "x" * 20000}, "at most 16384"),
        ({"type": "shout"}, "type"),
        ({"type": "hello", "public_key": "", "signature": ""}, "already authenticated"),
    ):
        await ws.send_json(bad)
        error = await receive(ws)
        assert error["code"] == "invalid"
        assert text in error["message"]
    await ws.send_str("{not json")
    assert (await receive(ws))["code"] == "invalid"
    # Still connected and working: a signal to oneself comes back.
    await ws.send_json({"type": "signal", "to": alice.peer_id, "data": "echo"})
    assert (await receive(ws))["data"] == "echo"
    await ws.close()


@pytest.mark.parametrize("mistake", ["wrong key", "not a hello", "garbage", "binary"])
async def test_bad_hello_is_refused_with_4401(instance: TestClient[Any, Any], mistake: str) -> None:
    ws = await instance.ws_connect("/v1/ws")
    challenge = (await receive(ws))["challenge"]
    alice, mallory = Identity.generate(), Identity.generate()
    if mistake == "wrong key":
        signature = mallory.sign(challenge.encode(), WEBSOCKET_HELLO)
        await ws.send_json(
            {
                "type": "hello",
                "public_key": b64encode(alice.public_key),
                "signature": b64encode(signature),
            }
        )
    elif mistake == "not a hello":
        await ws.send_json({"type": "signal", "to": alice.peer_id, "data": 1})
    elif mistake == "binary":
        await ws.send_bytes(b'{"type": "hello"}')
    else:
        await ws.send_str("garbage")
    assert (await receive(ws))["code"] == "unauthenticated"
    closed = await asyncio.wait_for(ws.receive(), 5)
    assert closed.type == aiohttp.WSMsgType.CLOSE
    assert closed.data == 4401


async def test_a_second_socket_replaces_the_first(instance: TestClient[Any, Any]) -> None:
    alice = Identity.generate()
    old = await connect(instance, alice)
    new = await connect(instance, alice)
    closed = await close_frame(old)
    assert closed.type == aiohttp.WSMsgType.CLOSE
    assert closed.data == 4000  # the close frame's code
    await new.send_json({"type": "signal", "to": alice.peer_id, "data": "still me"})
    assert (await receive(new))["data"] == "still me"
    await new.close()


@pytest.mark.parametrize("front", FRONT_ENDS)
async def test_a_slow_reader_is_closed(front: str) -> None:
    client = await started("memory", front, signal_queue=4)
    try:
        fast, slow = Identity.generate(), Identity.generate()
        sender = await connect(client, fast)
        await connect(client, slow)  # never reads again
        blob = "x" * 15000
        hub = client.app[keys.HUB]
        for _ in range(2000):  # up to ~30 MB: past every socket buffer, into the queue
            if slow.peer_id not in hub.local:
                break
            await sender.send_json({"type": "signal", "to": slow.peer_id, "data": blob})
        for _ in range(100):
            if slow.peer_id not in hub.local:
                break
            await asyncio.sleep(0.05)
        assert slow.peer_id not in hub.local
    finally:
        await client.close()


@pytest.mark.parametrize("front", FRONT_ENDS)
async def test_shutdown_closes_sockets_going_away(front: str) -> None:
    client = await started("memory", front)
    ws = await connect(client, Identity.generate())
    await client.server.close()  # runs the app's shutdown
    closed = await close_frame(ws)
    assert closed.type == aiohttp.WSMsgType.CLOSE
    assert closed.data == 1001
    await client.close()


async def test_signals_cross_instances_on_a_redis_cluster(redis_cluster_url: str) -> None:
    url = redis_cluster_url.replace("redis://", "redis+cluster://")
    first, second = await started(url), await started(url)
    try:
        alice, bob = Identity.generate(), Identity.generate()
        to_alice, to_bob = await connect(first, alice), await connect(second, bob)
        await to_alice.send_json({"type": "signal", "to": bob.peer_id, "data": "via cluster"})
        assert (await receive(to_bob))["data"] == "via cluster"
        await to_alice.send_json({"type": "signal", "to": bob.peer_id, "id": "c", "data": 1})
        assert await receive(to_alice) == {"type": "delivered", "id": "c", "to": bob.peer_id}
        await to_alice.send_json({"type": "signal", "to": Identity.generate().peer_id, "data": 0})
        assert (await receive(to_alice))["code"] == "unreachable"
        await to_alice.close()
        await to_bob.close()
    finally:
        await first.close()
        await second.close()


async def test_punch_brokering_across_instances(
    two_instances: tuple[TestClient[Any, Any], ...],
) -> None:
    first, second = two_instances
    alice, bob = Identity.generate(), Identity.generate()
    sockets = []
    for instance, identity in ((first, alice), (second, bob)):
        ws = await connect(instance, identity)
        # The first ping comes right after welcome: answered at once (the round trip
        # must not include connecting the other peer).
        ping = await asyncio.wait_for(ws.receive_json(), 5)
        assert ping["type"] == "ping"
        await ws.send_json({"type": "pong", "nonce": ping["nonce"]})
        sockets.append(ws)
    to_alice, to_bob = sockets
    for ws in (to_alice, to_bob):  # flush the pongs: a signal to oneself comes after them
        await ws.send_json(
            {"type": "signal", "to": (alice if ws is to_alice else bob).peer_id, "data": 0}
        )
        assert (await receive(ws))["type"] == "signal"
    mine = [{"ip": "203.0.113.5", "port": 40000, "type": "srflx"}]
    theirs = [{"ip": "198.51.100.7", "port": 50000, "type": "srflx"}]
    await to_alice.send_json({"type": "punch", "to": bob.peer_id, "id": "p1", "candidates": mine})
    asked = await receive(to_bob)
    assert (asked["type"], asked["from"], asked["id"]) == ("punch", alice.peer_id, "p1")
    assert asked["candidates"] == [{**mine[0], "protocol": "udp"}]
    assert 0 <= asked["rtt_ms"] < 50  # measured on loopback (not the 100 ms default)
    accept = {
        "type": "punch_accept",
        "to": alice.peer_id,
        "id": "p1",
        "candidates": theirs,
        "peer_rtt_ms": asked["rtt_ms"],
    }
    await to_bob.send_json(accept)
    go_alice, go_bob = await receive(to_alice), await receive(to_bob)
    assert go_alice["type"] == go_bob["type"] == "punch_now"
    assert (go_alice["peer"], go_bob["peer"]) == (bob.peer_id, alice.peer_id)
    assert go_alice["candidates"] == [{**theirs[0], "protocol": "udp"}]
    # Both act at the same moment: one-way trip + delay is equal on both sides.
    at_alice = go_alice["rtt_ms"] / 2 + go_alice["delay_ms"]
    at_bob = go_bob["rtt_ms"] / 2 + go_bob["delay_ms"]
    assert abs(at_alice - at_bob) < 0.2  # rounding to 0.1 ms
    assert min(go_alice["delay_ms"], go_bob["delay_ms"]) >= 50


async def test_punch_to_nobody_and_bad_punches(instance: TestClient[Any, Any]) -> None:
    ws = await connect(instance, Identity.generate())
    nobody = Identity.generate().peer_id
    await ws.send_json({"type": "punch", "to": nobody, "id": "x", "candidates": []})
    error = await receive(ws)
    assert (error["code"], error["id"]) == ("unreachable", "x")
    for bad in (
        {"type": "punch", "to": nobody, "id": "", "candidates": []},
        {"type": "punch", "to": nobody, "id": "y", "candidates": [{"ip": "1.2.3.4", "port": 0}]},
        {"type": "punch_accept", "to": nobody, "id": "y", "candidates": [], "peer_rtt_ms": -1},
    ):
        await ws.send_json(bad)
        assert (await receive(ws))["code"] == "invalid"
    await ws.close()


def test_delays_make_both_sides_act_together() -> None:
    from rendezvous.signaling.punch import MARGIN_MS, delays

    for rtt_a, rtt_b in ((10, 10), (10, 200), (300, 20), (0, 0)):
        delay_a, delay_b = delays(rtt_a, rtt_b)
        assert rtt_a / 2 + delay_a == rtt_b / 2 + delay_b
        assert min(delay_a, delay_b) == MARGIN_MS
