"""Signaling through the real rendezvous: two peers exchange signals through one server
(memory and Redis; both front ends) and through two instances on one Redis; ``signal``
returns on the server's ``delivered`` (nothing else is sent for it, nothing comes back
but the acknowledgement); a signal to a peer connected nowhere raises ``unreachable``; a
server that never answers makes ``signal`` time out; a punch is brokered to
``punch_now`` on both sides; the server's round-trip pings are answered; and a server
that sends garbage gets it reported as ``ProtocolError`` events while the socket keeps
working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from client_sdk import Candidate, Peer, RendezvousError
from client_sdk.identity import Identity
from client_sdk.rendezvous import (
    Connected,
    IncomingSignal,
    ProtocolError,
    PunchRequest,
    RendezvousClient,
    ServerError,
    Subscription,
)
from client_sdk.rendezvous.client import ClientEvent
from client_sdk.rendezvous.signaling import Delivered, SignalingSocket
from rendezvous.settings import RendezvousSettings
from tests.client_sdk.test_peer_api import FAST, rendezvous, url_of
from tests.rendezvous.api.test_metrics import metrics_text, sample
from tests.rendezvous.apputil import FRONT_ENDS, serving, store_url


async def next_of(events: Subscription, kind: type, timeout: float = 5.0) -> Any:
    """The next event of ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event: ClientEvent = await events.get()
            if isinstance(event, kind):
                return event


@pytest.fixture(params=[(b, f) for b in ("memory", "redis") for f in FRONT_ENDS], ids=str)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[TestClient[Any, Any]]:
    backend, front = request.param
    settings = RendezvousSettings(store=store_url(request, backend), secret="s", rate_limit=0)
    async with serving(settings, front=front) as client:
        yield client


def signals_counted(text: str) -> tuple[float, float]:
    """(relayed, unreachable) in the server's ``/metrics`` text."""
    series = 'natkit_rendezvous_signals_total{outcome="%s"}'
    return sample(text, series % "relayed"), sample(text, series % "unreachable")


async def test_two_peers_signal_each_other(server: TestClient[Any, Any]) -> None:
    url = url_of(server)
    async with Peer(url, backoff=FAST) as alice, Peer(url, backoff=FAST) as bob:
        to_alice, to_bob = alice.signals(), bob.signals()
        everything = [alice.events(), bob.events()]
        offer = {"sdp": "v=0", "candidates": [{"ip": "203.0.113.5", "port": 5000}]}
        await alice.signal(bob.peer_id, offer)  # returns once delivered
        got = await next_of(to_bob, IncomingSignal)
        assert (got.sender, got.data) == (alice.peer_id, offer)
        assert got.id is not None  # the id the server acknowledged
        # Many at once: each is confirmed, all arrive in order.
        await asyncio.gather(*(bob.signal(alice.peer_id, n) for n in range(20)))
        received = [(await next_of(to_alice, IncomingSignal)).data for _ in range(20)]
        assert sorted(received) == list(range(20))
        # Confirming sent nothing else: the server relayed exactly the 21 signals, and
        # nothing but its acknowledgements came back to the senders (which settled the
        # calls: no event reaches the app).
        assert signals_counted(await metrics_text(server)) == (21, 0)
        assert to_alice._queue.empty()
        assert to_bob._queue.empty()
        for events in everything:
            assert all(isinstance(e, Connected | IncomingSignal) for e in drain(events))
        # Unconfirmed: sent without an id, so not acknowledged.
        await alice.rendezvous.signal(bob.peer_id, "unconfirmed", confirm=False)
        got = await next_of(to_bob, IncomingSignal)
        assert (got.id, got.data) == (None, "unconfirmed")
        await alice.signal(alice.peer_id, "marker")  # after any acknowledgement of it
        assert (await next_of(to_alice, IncomingSignal)).data == "marker"
        assert not [e for e in drain(everything[0]) if isinstance(e, Delivered)]
        # A peer connected nowhere: an error, not silence.
        nobody = Identity.generate().peer_id
        with pytest.raises(RendezvousError) as unreachable:
            await alice.signal(nobody, "hello?")
        assert unreachable.value.code == "unreachable"
        # Unconfirmed: the error arrives as an event instead.
        await alice.rendezvous.signal(nobody, "fire and forget", confirm=False)
        error = await next_of(to_alice, ServerError)
        assert (error.code, error.to) == ("unreachable", nobody)
        with pytest.raises(ValueError, match="at most 16384"):
            await alice.signal(bob.peer_id, "x" * 20000)
        with pytest.raises(ValueError, match="peer id"):
            await alice.signal("bob", 1)
        assert signals_counted(await metrics_text(server)) == (23, 2)


def drain(events: Subscription) -> list[object]:
    """The events ``events`` holds now."""
    queue = events._queue
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def test_signals_cross_two_instances_on_one_redis(redis_url: str) -> None:
    async with (
        rendezvous(redis_url) as first,
        rendezvous(redis_url, ping_interval=0.2) as second,
        Peer(url_of(first), backoff=FAST) as alice,
        Peer(url_of(second), backoff=FAST) as bob,
    ):
        to_bob, to_alice = bob.signals(), alice.signals()
        await alice.signal(bob.peer_id, {"offer": 1})  # delivered: published to bob's
        assert (await next_of(to_bob, IncomingSignal)).data == {"offer": 1}
        nobody = Identity.generate().peer_id
        results = await asyncio.gather(
            *(alice.signal(bob.peer_id if n % 2 else nobody, n) for n in range(10)),
            return_exceptions=True,
        )
        for n, result in enumerate(results):
            if n % 2:
                assert result is None
            else:
                assert isinstance(result, RendezvousError)
                assert result.code == "unreachable"
        assert [(await next_of(to_bob, IncomingSignal)).data for _ in range(5)] == [1, 3, 5, 7, 9]
        await asyncio.sleep(0.5)  # bob's instance pings him: answered, he stays connected
        await bob.signal(alice.peer_id, {"answer": 2})
        assert (await next_of(to_alice, IncomingSignal)).data == {"answer": 2}
        assert bob.rendezvous.connected


async def test_punch_is_brokered_to_both_sides(server: TestClient[Any, Any]) -> None:
    url = url_of(server)
    async with Peer(url, backoff=FAST) as alice, Peer(url, backoff=FAST) as bob:
        requests = bob.signals()
        mine = [Candidate("198.51.100.1", 4000, type="srflx")]
        theirs = [Candidate("198.51.100.2", 5000, type="srflx")]
        initiated = asyncio.create_task(alice.rendezvous.punch(bob.peer_id, mine))
        request: PunchRequest = await next_of(requests, PunchRequest)
        assert (request.sender, request.candidates) == (alice.peer_id, tuple(mine))
        accepted = await bob.rendezvous.punch_accept(
            alice.peer_id, request.id, theirs, request.rtt_ms
        )
        go = await initiated
        assert (go.peer, go.id, go.candidates) == (bob.peer_id, request.id, tuple(theirs))
        assert (accepted.peer, accepted.id) == (alice.peer_id, request.id)
        assert go.delay_ms >= 50
        assert accepted.delay_ms >= 50
        with pytest.raises(RendezvousError) as unreachable:
            await alice.rendezvous.punch(Identity.generate().peer_id, mine)
        assert unreachable.value.code == "unreachable"


# -- a server that sends garbage --------------------------------------------------------

GARBAGE = [
    "not json",
    "[1, 2]",
    '{"type": "signal", "from": "nobody", "data": 1}',
    '{"type": "welcome", "peer_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}',
    '{"type": "punch_now", "peer": 7}',
    '{"type": "ping", "nonce": "' + "n" * 100 + '"}',
    '{"type": "error", "code": 5}',
    '{"type": "delivered", "id": "nk.1"}',
    '{"type": "surprise"}',
    "NaN",
]


async def fake_handshake(request: web.Request) -> web.WebSocketResponse:
    """A socket past the handshake, done as the rendezvous does it (without checking)."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "challenge", "challenge": "c"}))
    hello = json.loads((await ws.receive()).data)
    from client_sdk.identity import b64decode, peer_id_of

    peer_id = peer_id_of(b64decode(hello["public_key"], what="key", size=32))
    await ws.send_str(json.dumps({"type": "welcome", "peer_id": peer_id}))
    return ws


async def garbage_server(request: web.Request) -> web.WebSocketResponse:
    """Handshake, then garbage, then echo every signal back as if it came from its
    target."""
    ws = await fake_handshake(request)
    for text in GARBAGE:
        await ws.send_str(text)
    await ws.send_bytes(b"\x00binary")
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        body = json.loads(message.data)
        if body.get("type") == "signal":
            echo = {"type": "signal", "from": body["to"], "id": body["id"], "data": body["data"]}
            await ws.send_str(json.dumps(echo))
    return ws


async def test_garbage_from_the_server_is_reported_and_ignored() -> None:
    app = web.Application()
    app.router.add_get("/v1/ws", garbage_server)
    async with TestClient(TestServer(app)) as fake:
        events: list[Any] = []
        identity = Identity.generate()
        socket = await SignalingSocket.open(
            fake.session, url_of(fake), identity, on_event=events.append
        )
        try:
            await socket.signal(identity.peer_id, "still works", confirm=False)
            async with asyncio.timeout(5):
                while not any(isinstance(e, IncomingSignal) for e in events):
                    await asyncio.sleep(0.01)
            problems = [e for e in events if isinstance(e, ProtocolError)]
            assert len(problems) == len(GARBAGE) + 1  # and the binary message
            assert not socket.closed
            assert socket.state.snapshot()[1:] == ((),)
        finally:
            await socket.close()


async def test_client_waits_for_a_connection_before_signaling() -> None:
    async with rendezvous() as server:
        identity = Identity.generate()
        async with RendezvousClient(url_of(server), identity, backoff=FAST) as client:
            # Not connected yet at this point: signal waits for the socket, then delivers.
            await client.signal(identity.peer_id, "to myself")
            assert client.connected
        with pytest.raises(RendezvousError) as closed:
            await client.signal(identity.peer_id, "after close")
        assert closed.value.code == "closed"


HANDSHAKES = {
    "not a challenge": (["{}"], "protocol"),
    "garbage first": (["nope"], "protocol"),
    "refused": (['{"type": "challenge", "challenge": "c"}', "REFUSE"], "unauthenticated"),
    "someone else's welcome": (
        ['{"type": "challenge", "challenge": "c"}', "OTHER"],
        "protocol",
    ),
    "closed": (['{"type": "challenge", "challenge": "c"}'], "disconnected"),
}


@pytest.mark.parametrize("case", list(HANDSHAKES))
async def test_a_bad_handshake_is_a_rendezvous_error(case: str) -> None:
    script, code = HANDSHAKES[case]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for line in script:
            if line == "REFUSE":
                await ws.receive()
                await ws.send_str('{"type": "error", "code": "unauthenticated", "message": "no"}')
            elif line == "OTHER":
                await ws.receive()
                other = Identity.generate().peer_id
                await ws.send_str(json.dumps({"type": "welcome", "peer_id": other}))
            else:
                await ws.send_str(line)
        await ws.close(code=4401 if "REFUSE" in script else 1000)
        return ws

    app = web.Application()
    app.router.add_get("/v1/ws", handler)
    async with TestClient(TestServer(app)) as fake:
        with pytest.raises(RendezvousError) as refused:
            await SignalingSocket.open(
                fake.session, url_of(fake), Identity.generate(), on_event=print
            )
        assert refused.value.code == code


async def acknowledging_server(request: web.Request) -> web.WebSocketResponse:
    """Handshake, then answer each signal as its data says: ``"ack"``, ``delivered`` at
    once; ``"late"``, after 0.5 s; anything else, never."""
    ws = await fake_handshake(request)
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            continue
        body = json.loads(message.data)
        delivered = json.dumps({"type": "delivered", "id": body["id"], "to": body["to"]})
        if body["data"] == "late":
            await asyncio.sleep(0.5)
        if body["data"] in ("ack", "late"):
            await ws.send_str(delivered)
    return ws


async def test_signal_waits_for_delivered_within_its_timeout() -> None:
    app = web.Application()
    app.router.add_get("/v1/ws", acknowledging_server)
    them = Identity.generate().peer_id
    async with TestClient(TestServer(app)) as fake:
        events: list[Any] = []
        socket = await SignalingSocket.open(
            fake.session, url_of(fake), Identity.generate(), on_event=events.append
        )
        try:
            await asyncio.wait_for(socket.signal(them, "ack"), 5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(socket.signal(them, "late", message_id="l1"), 0.2)
            assert socket.state.pending() == []
            # The acknowledgement that came too late is an event, not a crash.
            async with asyncio.timeout(5):
                while not events:
                    await asyncio.sleep(0.01)
            assert events == [Delivered("l1", them)]
            assert not socket.closed
        finally:
            await socket.close()
        # A server that never answers: the client's timeout, not a hang.
        async with RendezvousClient(url_of(fake), Identity.generate(), backoff=FAST) as client:
            with pytest.raises(RendezvousError) as late:
                await client.signal(them, "never", timeout=0.5)
            assert late.value.code == "timeout"
