"""``client_sdk.webrtc``: aiortc peer connections signalled through the real rendezvous
app (in process) with ICE servers from it -- a real ``natkit relay`` (a process) that
heartbeats into it, so the TURN URIs and REST credentials are the deployment's own.
Two ``Peer``s in one process open a data channel and exchange messages both ways, over
whatever path ICE picks and over natkit's TURN relay only (proved by the selected
candidate pair and the relay's own counters); malformed and foreign signals are ignored;
declines, unreachable peers, silence and closing end a dial with a ``WebRtcError``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCDataChannel, RTCIceServer, RTCPeerConnection
from aiortc.rtcicetransport import connection_kwargs
from hypothesis import given
from hypothesis import strategies as st

from client_sdk import Peer, RendezvousError
from client_sdk.identity import Identity
from client_sdk.rendezvous.http import TurnCredentials
from client_sdk.webrtc import (
    IncomingOffer,
    WebRtcError,
    WebRtcSignaling,
    create_peer_connection,
    ice_servers,
    ice_servers_from,
    parse_message,
    rtc_configuration,
    wait_connected,
)
from tests.client_sdk.test_peer_api import FAST, rendezvous, url_of
from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import natkit_relay

SECRET = "webrtc-test-secret"
SESSION = "s" * 22


@dataclass
class Stack:
    server: TestClient[Any, Any]
    relay_port: int
    metrics_port: int

    def peer(self) -> Peer:
        return Peer(url_of(self.server), backoff=FAST)

    def metric(self, name: str) -> float:
        """The relay's ``name`` (summed over its labels; 0 for a family without samples)
        from its ``/metrics``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert f"# TYPE {name} " in text, f"{name} not in the relay's metrics"
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] == name
        )


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The rendezvous (TURN secret, no static URIs) and a relay heartbeating into it
    (TURN over UDP and TCP on loopback, loopback peers allowed -- as ``natkit up``'s
    relay), once the rendezvous hands out its URIs."""
    port, metrics_port = free_udp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
    async with rendezvous(turn_secret=SECRET) as server:
        argv = ["--listen", f"127.0.0.1:{port}", "--tcp", "--auth-secret", SECRET]
        argv += ["--allow-peer", "127.0.0.0/8", "--public-host", "127.0.0.1"]
        argv += ["--rendezvous-url", url_of(server), "--heartbeat-interval", "1"]
        argv += ["--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-level", "warning"]
        with contextlib.ExitStack() as stack:
            # natkit_relay waits for the relay's STUN answer: off the loop that serves
            # the rendezvous its heartbeats.
            relay = natkit_relay(*argv, wait_on=("127.0.0.1", port))
            await asyncio.to_thread(stack.enter_context, relay)
            ready = Stack(server, port, metrics_port)
            async with ready.peer() as probe:
                async with asyncio.timeout(10):
                    while True:  # until the first heartbeat is in the store
                        try:
                            await probe.turn_credentials()
                            break
                        except RendezvousError as exc:
                            if exc.code != "no_relays":
                                raise
                            await asyncio.sleep(0.1)
            yield ready


def ice_connection(pc: RTCPeerConnection) -> Any:
    """The aioice ``Connection`` under ``pc``'s data channels (everything is bundled)."""
    assert pc.sctp is not None
    return pc.sctp.transport.transport._connection


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str]:
    """(local, remote) candidate types of the pair ICE nominated (aioice keeps it in
    private state: aiortc's getStats has no candidate pairs)."""
    pair = ice_connection(pc)._nominated[1]
    return pair.local_candidate.type, pair.remote_candidate.type


def settle(future: asyncio.Future[Any], value: Any) -> None:
    """``future``'s result, unless it has one (an aiortc event handler)."""
    if not future.done():
        future.set_result(value)


class Inbox:
    """A data channel's messages, as they come."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.messages: asyncio.Queue[str | bytes] = asyncio.Queue()
        channel.on("message", self.messages.put_nowait)

    async def next(self) -> str | bytes:
        return await asyncio.wait_for(self.messages.get(), 5)

    async def opened(self) -> None:
        if self.channel.readyState != "open":
            opened = asyncio.get_running_loop().create_future()
            self.channel.on("open", lambda: settle(opened, None))
            await asyncio.wait_for(opened, 10)


async def call(
    caller: WebRtcSignaling, callee: WebRtcSignaling, a: RTCPeerConnection, b: RTCPeerConnection
) -> tuple[Inbox, Inbox]:
    """``a`` dials ``b`` with a data channel "chat"; both ends, once open."""
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    b.on("datachannel", lambda channel: settle(incoming, channel))
    ours = Inbox(a.createDataChannel("chat"))
    accepted = asyncio.create_task(callee.accept(b, timeout=10))
    await caller.dial(callee.peer.peer_id, a, timeout=15)
    assert await asyncio.wait_for(accepted, 5) == caller.peer.peer_id
    await asyncio.gather(wait_connected(a, 10), wait_connected(b, 10))
    theirs = Inbox(await asyncio.wait_for(incoming, 10))
    await asyncio.gather(ours.opened(), theirs.opened())
    assert theirs.channel.label == "chat"
    return ours, theirs


async def test_a_data_channel_through_the_rendezvous(stack: Stack) -> None:
    async with (
        stack.peer() as alice,
        stack.peer() as bob,
        WebRtcSignaling(alice) as caller,
        WebRtcSignaling(bob) as callee,
    ):
        # The ICE servers are the heartbeating relay's, with REST credentials for alice.
        servers = await ice_servers(alice)
        stun, turn = servers
        port = stack.relay_port
        assert stun.urls == [f"stun:127.0.0.1:{port}"]
        assert turn.urls == [
            f"turn:127.0.0.1:{port}?transport=udp",
            f"turn:127.0.0.1:{port}?transport=tcp",
        ]
        assert turn.username is not None
        assert turn.username.endswith(":" + alice.peer_id)  # RFC: <expiry>:<user>
        assert turn.credential
        chosen = connection_kwargs(servers)  # what aiortc hands aioice
        assert chosen["stun_server"] == chosen["turn_server"] == ("127.0.0.1", port)
        assert chosen["turn_transport"] == "udp"
        assert chosen["turn_username"] == turn.username

        a, b = await create_peer_connection(alice), await create_peer_connection(bob)
        try:
            ours, theirs = await call(caller, callee, a, b)
            ours.channel.send("hello bob")
            assert await theirs.next() == "hello bob"
            theirs.channel.send(b"hello alice")
            assert await ours.next() == b"hello alice"
            assert a.connectionState == b.connectionState == "connected"
            assert a.remoteDescription.type == "answer"
            assert b.remoteDescription.type == "offer"
        finally:
            await a.close()
            await b.close()


async def test_relay_only_goes_through_natkit_turn(stack: Stack) -> None:
    """Relay-only on both sides -- alice on TURN over TCP, bob over UDP -- with the
    rendezvous's REST credentials: the nominated pair is relay to relay, the relay
    counts the allocations, and the messages are bytes it relayed."""
    async with (
        stack.peer() as alice,
        stack.peer() as bob,
        WebRtcSignaling(alice) as caller,
        WebRtcSignaling(bob) as callee,
    ):
        a = await create_peer_connection(alice, relay_only=True, prefer="tcp")
        b = await create_peer_connection(bob, relay_only=True)
        try:
            ours, theirs = await call(caller, callee, a, b)
            assert selected_pair(a) == selected_pair(b) == ("relay", "relay")
            assert ice_connection(a).turn_transport == "tcp"
            assert ice_connection(b).turn_transport == "udp"
            # Only relayed candidates were offered: no local address in either SDP.
            for description in (a.localDescription.sdp, b.localDescription.sdp):
                candidates = [x for x in description.splitlines() if "a=candidate:" in x]
                assert candidates
                assert all(" typ relay" in x for x in candidates)
            assert stack.metric("natkit_turn_allocations") == 2
            assert stack.metric("natkit_turn_auth_failures_total") == 0
            before = stack.metric("natkit_turn_relayed_bytes_total")
            payload = bytes(range(256)) * 16  # 4 KiB each way
            ours.channel.send(payload)
            assert await theirs.next() == payload
            theirs.channel.send(payload[::-1])
            assert await ours.next() == payload[::-1]
            relayed = stack.metric("natkit_turn_relayed_bytes_total") - before
            assert relayed >= 2 * len(payload)
        finally:
            await a.close()
            await b.close()
        async with asyncio.timeout(5):  # closing released both allocations
            while stack.metric("natkit_turn_allocations") != 0:
                await asyncio.sleep(0.1)


async def test_malformed_and_foreign_signals_are_ignored(stack: Stack) -> None:
    async with (
        stack.peer() as alice,
        stack.peer() as bob,
        stack.peer() as mallory,
        WebRtcSignaling(alice) as caller,
        WebRtcSignaling(bob) as callee,
        bob.signals() as seen_by_bob,
    ):
        a, b = await create_peer_connection(alice), await create_peer_connection(bob)
        try:
            # The dial is under way (its offer queued at bob) before the garbage comes.
            incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
            b.on("datachannel", lambda channel: settle(incoming, channel))
            ours = Inbox(a.createDataChannel("chat"))
            dialling = asyncio.create_task(caller.dial(bob.peer_id, a, timeout=15))
            offer = await callee.next_offer(timeout=10)
            assert offer.sender == alice.peer_id
            [session] = caller._dials  # what only alice and bob know
            garbage: list[Any] = [
                None,
                "offer",
                [1, 2],
                {"app": "chat", "text": "not ours"},
                {"natkit": "webrtc"},
                {"natkit": "webrtc", "v": 2, "kind": "offer", "session": SESSION, "sdp": "v=0"},
                {"natkit": "webrtc", "v": 1, "kind": "offer", "session": "short", "sdp": "v=0"},
                {"natkit": "webrtc", "v": 1, "kind": "offer", "session": SESSION, "sdp": 7},
                {"natkit": "webrtc", "v": 1, "kind": "offer", "session": SESSION, "sdp": "junk"},
                {"natkit": "webrtc", "v": 1, "kind": "offer", "session": SESSION, "sdp": "m=x"},
                {"natkit": "webrtc", "v": 1, "kind": "hangup", "session": SESSION},
                {"natkit": "webrtc", "v": 1, "kind": "answer", "session": SESSION, "sdp": ""},
                {"natkit": "webrtc", "v": 1, "kind": "decline", "session": ["x"]},
            ]
            for data in garbage:
                await mallory.signal(bob.peer_id, data)
                await mallory.signal(alice.peer_id, data)
            # A decline and a (well-formed) answer for alice's live session, from
            # mallory instead of bob: not taken.
            forged = {"natkit": "webrtc", "v": 1, "session": session}
            await mallory.signal(alice.peer_id, {**forged, "kind": "decline", "reason": "x"})
            await mallory.signal(alice.peer_id, {**forged, "kind": "answer", "sdp": offer.sdp})
            # Every one of them reached bob, and none became an offer.
            async with asyncio.timeout(5):
                count = 0
                while count < len(garbage):
                    event = await seen_by_bob.get()
                    count += getattr(event, "sender", None) == mallory.peer_id
            with pytest.raises(WebRtcError) as nothing:
                await callee.next_offer(timeout=0.3)
            assert nothing.value.code == "timeout"
            assert not dialling.done()
            # The real answer still completes the call.
            await callee.answer(offer, b)
            await asyncio.wait_for(dialling, 10)
            await asyncio.gather(wait_connected(a, 10), wait_connected(b, 10))
            theirs = Inbox(await asyncio.wait_for(incoming, 10))
            await asyncio.gather(ours.opened(), theirs.opened())
            ours.channel.send("still here")
            assert await theirs.next() == "still here"
            assert not caller.closed
            assert not callee.closed
        finally:
            await a.close()
            await b.close()


async def test_dials_that_fail_end_in_clear_errors(stack: Stack) -> None:
    async with (
        stack.peer() as alice,
        stack.peer() as bob,
        stack.peer() as silent,  # connected, but no WebRtcSignaling: never answers
        WebRtcSignaling(alice, timeout=10) as caller,
        WebRtcSignaling(bob) as callee,
    ):
        orphan = WebRtcSignaling(silent)  # never closed: ends with its peer
        loop = asyncio.get_running_loop()
        pcs = [RTCPeerConnection(rtc_configuration([])) for _ in range(5)]
        try:
            for pc in pcs:
                pc.createDataChannel("x")
            # Declined: the dial fails at once, with the reason.
            declining = asyncio.create_task(callee.next_offer(timeout=10))
            started = loop.time()
            dial = asyncio.create_task(caller.dial(bob.peer_id, pcs[0]))
            await callee.decline(await declining, "busy")
            with pytest.raises(WebRtcError) as declined:
                await dial
            assert declined.value.code == "declined"
            assert "busy" in str(declined.value)
            assert loop.time() - started < 5
            # A peer connected nowhere: the rendezvous says so.
            with pytest.raises(WebRtcError) as nowhere:
                await caller.dial(Identity.generate().peer_id, pcs[1])
            assert nowhere.value.code == "unreachable"
            # A peer that never answers: the bound holds.
            started = loop.time()
            with pytest.raises(WebRtcError) as silence:
                await caller.dial(silent.peer_id, pcs[2], timeout=1.5)
            assert silence.value.code == "timeout"
            assert 1.4 <= loop.time() - started < 4
            with pytest.raises(ValueError, match="peer id"):
                await caller.dial("not a peer id", pcs[3])
            # Closing fails the dial waiting for its answer, and what comes after.
            waiting = asyncio.create_task(caller.dial(silent.peer_id, pcs[4]))
            async with asyncio.timeout(5):
                while not caller._dials:
                    await asyncio.sleep(0.01)
            await caller.close()
            with pytest.raises(WebRtcError) as closed:
                await waiting
            assert closed.value.code == "closed"
            with pytest.raises(WebRtcError, match="closed"):
                await caller.next_offer(timeout=1)
        finally:
            for pc in pcs:
                await pc.close()
    # The peer closing ends its signaling too: a waiting next_offer fails at once.
    with pytest.raises(WebRtcError, match="closed"):
        await orphan.next_offer(timeout=2)
    assert orphan.closed
    await orphan.close()


def credentials(*uris: str) -> TurnCredentials:
    return TurnCredentials("1700000000:peer", "secret", 86400, uris)


def test_ice_servers_are_what_aiortc_can_use() -> None:
    servers = ice_servers_from(
        credentials(
            "stun:stun.example:19302?transport=udp",  # RFC 7064 has no transport
            "stuns:stun.example",  # aioice has no STUN over TLS
            "turn:[2001:db8::1]:3478?transport=udp",  # aiortc cannot parse IPv6 literals
            "turn:relay.example:3478?transport=tcp",
            "turn:relay.example:3478?transport=udp",
            "TURNS:relay.example",
            "turn:relay.example:3478?transport=sctp",
            "turn:bad host:3478",
            "http://relay.example",
            "turn:203.0.113.9?transport=udp",
        )
    )
    stun, turn = servers
    assert stun.urls == [
        "stun:stun.example:19302",
        "stun:relay.example:3478",
        "stun:203.0.113.9:3478",
    ]
    assert stun.username is None
    assert turn.urls == [
        "turn:relay.example:3478?transport=udp",
        "turn:203.0.113.9:3478?transport=udp",
        "turn:relay.example:3478?transport=tcp",
        "turns:relay.example:5349?transport=tcp",
    ]
    assert (turn.username, turn.credential) == ("1700000000:peer", "secret")
    chosen = connection_kwargs(servers)  # raises ValueError on a URL it cannot parse
    assert chosen["stun_server"] == ("stun.example", 19302)
    assert (chosen["turn_server"], chosen["turn_transport"]) == (("relay.example", 3478), "udp")
    # TCP first (UDP blocked here): aiortc allocates over TCP.
    tcp = connection_kwargs(ice_servers_from(credentials(*turn.urls), prefer="tcp"))
    assert (tcp["turn_transport"], tcp["turn_ssl"]) == ("tcp", False)
    # Nothing usable: no servers at all (not aiortc's default, Google's STUN server).
    assert ice_servers_from(credentials("turn:[::1]", "junk")) == []
    config = rtc_configuration([])
    assert config.iceServers == []
    with pytest.raises(WebRtcError) as no_relay:
        rtc_configuration([RTCIceServer(urls="stun:relay.example")], relay_only=True)
    assert no_relay.value.code == "no_relay"
    assert rtc_configuration(servers, relay_only=True).iceTransportPolicy.value == "relay"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {"natkit": st.just("webrtc"), "v": st.sampled_from([1, 1.0, "1", 2])},
    optional={
        "kind": st.sampled_from(["offer", "answer", "decline", "x"]) | json_values,
        "session": st.sampled_from([SESSION, "x" * 65]) | json_values,
        "sdp": st.sampled_from(["", "v=0", "m=audio x", "v=0\r\nm=video"]) | json_values,
        "reason": json_values,
    },
)


@given(st.one_of(json_values, envelopes))
def test_parse_message_never_raises(data: Any) -> None:
    message = parse_message(json.loads(json.dumps(data)))
    if message is not None:
        kind, session, text = message
        assert kind in ("offer", "answer", "decline")
        assert session == SESSION
        assert isinstance(text, str)


def test_incoming_offer_description() -> None:
    offer = IncomingOffer("a" * 32, SESSION, "v=0\r\n")
    assert (offer.description.type, offer.description.sdp) == ("offer", "v=0\r\n")
