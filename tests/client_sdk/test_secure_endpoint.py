"""The asyncio shim (client_sdk.secure.endpoint) over real UDP sockets on 127.0.0.1,
through a lossy forwarder that drops, duplicates and reorders; simultaneous open; a wrong
peer; and sessions carried by an injected send function instead of a socket (as a TURN
channel would carry them)."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest

from client_sdk.identity import Identity
from client_sdk.secure import (
    ChannelError,
    MessageType,
    SecureChannel,
    SecureEndpoint,
    SecureSession,
    SessionConfig,
)

ALICE = Identity.generate()
BOB = Identity.generate()
FAST = SessionConfig(retransmit_initial=0.05, retransmit_max=0.2, handshake_timeout=5.0)
Address = tuple[Any, ...]


class LossyForwarder(asyncio.DatagramProtocol):
    """A UDP hop between a client (whoever first sends from elsewhere than ``target``)
    and ``target``. It drops the first message 1 and the first message 2 (so both must be
    retransmitted), then drops ``loss``, duplicates ``duplicate`` and holds back
    ``reorder`` of the datagrams (a held one goes out after the next)."""

    def __init__(
        self, target: Address, *, seed: int, loss: float, duplicate: float, reorder: float
    ) -> None:
        self.target = target
        self.client: Address | None = None
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.to_drop = {MessageType.INITIATION, MessageType.RESPONSE}
        self.held: tuple[bytes, Address] | None = None
        self.dropped = self.duplicated = self.reordered = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if addr != self.target:
            self.client = addr
        destination = self.client if addr == self.target else self.target
        if destination is None or self.transport is None:
            return
        kind = MessageType(data[0])
        if kind in self.to_drop:
            self.to_drop.discard(kind)
            self.dropped += 1
            return
        roll = self.random.random()
        if roll < self.loss:
            self.dropped += 1
            return
        if roll < self.loss + self.reorder and self.held is None:
            self.held = (data, destination)
            self.reordered += 1
            return
        self.transport.sendto(data, destination)
        if roll > 1 - self.duplicate:
            self.transport.sendto(data, destination)
            self.duplicated += 1
        if self.held is not None:
            self.transport.sendto(*self.held)
            self.held = None


async def drain(channel: SecureChannel, quiet: float = 0.3) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(await asyncio.wait_for(channel.recv(), quiet))
        except TimeoutError:
            return out


async def test_two_endpoints_over_udp() -> None:
    bob = await SecureEndpoint.bind(BOB)
    alice = await SecureEndpoint.bind(ALICE)
    try:
        outgoing = alice.connect(BOB.peer_id, bob.local_address)
        incoming = await asyncio.wait_for(bob.accept(), 5)
        assert await asyncio.wait_for(outgoing.wait_established(), 5) == BOB.peer_id
        assert await incoming.wait_established() == ALICE.peer_id
        assert incoming.remote_peer_id == ALICE.peer_id
        outgoing.send(b"hello bob")
        assert await asyncio.wait_for(incoming.recv(), 5) == b"hello bob"
        incoming.send(b"hello alice")
        assert await asyncio.wait_for(outgoing.recv(), 5) == b"hello alice"
        with pytest.raises(ChannelError, match="exceeds the maximum of 1171"):
            outgoing.send(b"x" * 1172)
        outgoing.close()
        with pytest.raises(ChannelError, match="closed"):
            await outgoing.recv()
        assert alice.channels == []
    finally:
        alice.close()
        bob.close()


async def test_lossy_path_retransmits_and_delivers_each_datagram_at_most_once() -> None:
    loop = asyncio.get_running_loop()
    bob = await SecureEndpoint.bind(BOB, config=FAST)
    forwarder = LossyForwarder(bob.local_address, seed=6, loss=0.15, duplicate=0.15, reorder=0.15)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: forwarder, local_addr=("127.0.0.1", 0)
    )
    alice = await SecureEndpoint.bind(ALICE, config=FAST)
    try:
        outgoing = alice.connect(BOB.peer_id, transport.get_extra_info("sockname"))
        incoming = await asyncio.wait_for(bob.accept(), 5)
        await asyncio.wait_for(outgoing.wait_established(), 5)
        assert outgoing.session.stats.retransmits >= 2  # lost message 1, lost message 2
        assert incoming.session.stats.duplicates >= 1  # message 1 again: same message 2
        sent_by_alice = [b"a%d" % i for i in range(300)]
        sent_by_bob = [b"b%d" % i for i in range(300)]
        for i in range(300):
            outgoing.send(sent_by_alice[i])
            incoming.send(sent_by_bob[i])
            if i % 20 == 0:
                await asyncio.sleep(0.001)
        got_by_bob, got_by_alice = await asyncio.gather(drain(incoming), drain(outgoing))
        for got, sent in ((got_by_bob, sent_by_alice), (got_by_alice, sent_by_bob)):
            assert len(got) == len(set(got))  # duplicates never delivered twice
            assert set(got) <= set(sent)
            assert len(got) >= 150  # ~70 % arrive
        assert forwarder.duplicated
        assert forwarder.reordered
        assert forwarder.dropped
        assert incoming.session.stats.replayed + outgoing.session.stats.replayed > 0
        assert got_by_bob != sorted(got_by_bob, key=lambda d: int(d[1:]))  # reordered
    finally:
        alice.close()
        bob.close()
        transport.close()


async def test_simultaneous_open_over_udp() -> None:
    alice = await SecureEndpoint.bind(ALICE)
    bob = await SecureEndpoint.bind(BOB)
    try:
        to_bob = alice.connect(BOB.peer_id, bob.local_address)
        to_alice = bob.connect(ALICE.peer_id, alice.local_address)
        peers = await asyncio.wait_for(
            asyncio.gather(to_bob.wait_established(), to_alice.wait_established()), 5
        )
        assert list(peers) == [BOB.peer_id, ALICE.peer_id]
        lower = to_bob if ALICE.peer_id < BOB.peer_id else to_alice
        assert lower.session.role is not None
        assert lower.session.role.value == "initiator"
        to_bob.send(b"one")
        to_alice.send(b"two")
        assert await asyncio.wait_for(to_alice.recv(), 5) == b"one"
        assert await asyncio.wait_for(to_bob.recv(), 5) == b"two"
        assert len(alice.channels) == len(bob.channels) == 1  # no extra accepted session
    finally:
        alice.close()
        bob.close()


async def test_dialling_the_wrong_peer_fails() -> None:
    config = SessionConfig(retransmit_initial=0.05, handshake_timeout=0.5)
    xavier = Identity.generate()
    alice = await SecureEndpoint.bind(ALICE, config=config)
    bob = await SecureEndpoint.bind(BOB, config=config)
    try:
        channel = alice.connect(xavier.peer_id, bob.local_address)
        with pytest.raises(ChannelError, match=r"handshake timed out after 0\.5 s"):
            await asyncio.wait_for(channel.wait_established(), 5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bob.accept(), 0.7)
        assert alice.channels == []
        assert bob.channels == []  # its half-open responder session expired too
    finally:
        alice.close()
        bob.close()


async def test_sessions_over_an_injected_send_function() -> None:
    """No sockets: each endpoint's ``send`` hands the datagram to the other endpoint, as
    a TURN channel or an already punched socket would."""
    loop = asyncio.get_running_loop()
    endpoints: dict[Address, SecureEndpoint] = {}

    def via(source: Address) -> Any:
        def send(datagram: bytes, addr: Address) -> None:
            loop.call_soon(endpoints[addr].datagram_received, datagram, source)

        return send

    carol = Identity.generate()
    for name, identity in (("alice", ALICE), ("bob", BOB), ("carol", carol)):
        address = (f"{name}.relay", 1)
        endpoints[address] = SecureEndpoint(identity, send=via(address))
    alice, bob, carol_end = endpoints.values()
    channel = alice.connect(BOB.peer_id, ("bob.relay", 1))
    other = carol_end.connect(BOB.peer_id, ("bob.relay", 1))
    first = await asyncio.wait_for(bob.accept(), 5)
    second = await asyncio.wait_for(bob.accept(), 5)
    assert {first.remote_peer_id, second.remote_peer_id} == {ALICE.peer_id, carol.peer_id}
    await channel.wait_established()
    await other.wait_established()
    channel.send(b"from alice")
    other.send(b"from carol")
    from_alice = first if first.remote_peer_id == ALICE.peer_id else second
    from_carol = second if from_alice is first else first
    assert await asyncio.wait_for(from_alice.recv(), 5) == b"from alice"
    assert await asyncio.wait_for(from_carol.recv(), 5) == b"from carol"
    for endpoint in endpoints.values():
        endpoint.close()
    with pytest.raises(ChannelError, match="closed"):
        await bob.accept()


async def test_forged_message_1_from_elsewhere_does_not_steer_the_answers() -> None:
    """Mallory, who knows Alice's peer id and Bob's port, sends Bob a message 1 claiming
    to be Alice before Alice does: Bob answers each message 1 where it came from, and
    Alice's handshake completes."""
    loop = asyncio.get_running_loop()
    bob = await SecureEndpoint.bind(BOB, config=FAST)
    alice = await SecureEndpoint.bind(ALICE, config=FAST)
    mallory_session = SecureSession(Identity.generate(), remote_peer_id=BOB.peer_id)
    mallory_session.connect(0.0)
    [fake] = mallory_session.datagrams_to_send()
    forged = fake[:42] + ALICE.peer_id.encode() + fake[74:]
    mallory, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        mallory.sendto(forged, bob.local_address)
        await asyncio.sleep(0.05)
        channel = alice.connect(BOB.peer_id, bob.local_address)
        # Well before Bob's half-open session for Mallory's message 1 expires (5 s).
        incoming = await asyncio.wait_for(bob.accept(), 2)
        assert await asyncio.wait_for(channel.wait_established(), 2) == BOB.peer_id
        assert incoming.remote_peer_id == ALICE.peer_id
        assert incoming.addr == alice.local_address
        channel.send(b"it is me")
        assert await asyncio.wait_for(incoming.recv(), 5) == b"it is me"
    finally:
        mallory.close()
        alice.close()
        bob.close()
