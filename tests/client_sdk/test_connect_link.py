"""``Link`` on real ``ConnectivitySocket``s (127.0.0.1) -- the asyncio driver of a punch
and of the secure session after it: through a forwarder that loses, duplicates and
reorders, each datagram arrives at most once and the handshake survives lost messages;
a message 1 forged from elsewhere before the real one does not take the path."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

from client_sdk.connect.candidates import Address
from client_sdk.connect.punch import Punch, PunchConfig
from client_sdk.connect.udp import ConnectivitySocket, Link
from client_sdk.identity import Identity
from client_sdk.secure import MessageType, SecureSession

ALICE = Identity.generate()
BOB = Identity.generate()
CONFIG = PunchConfig(timeout=5.0, dead_after=None)


class LossyForwarder(asyncio.DatagramProtocol):
    """A UDP hop between a client (whoever first sends from elsewhere than ``target``)
    and ``target``. It drops the first message 2 and the first message 3 (so both must be
    sent again), then drops ``loss``, duplicates ``duplicate`` and holds back ``reorder``
    of the datagrams (a held one goes out after the next)."""

    def __init__(
        self, target: Address, *, seed: int, loss: float, duplicate: float, reorder: float
    ) -> None:
        self.target = target
        self.client: tuple[Any, ...] | None = None
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.to_drop = {MessageType.RESPONSE, MessageType.FINISH}
        self.held: tuple[bytes, tuple[Any, ...]] | None = None
        self.dropped = self.duplicated = self.reordered = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
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
        if kind is not MessageType.TRANSPORT:  # the punch's probes: passed as they are
            self.transport.sendto(data, destination)
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


def local(sock: ConnectivitySocket) -> Address:
    return ("127.0.0.1", sock.local_port)


async def drain(link: Link, quiet: float = 0.3) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            data = await asyncio.wait_for(link.inbox.get(), quiet)
        except TimeoutError:
            return out
        if data is None:
            return out
        out.append(data)


async def test_a_lossy_path_delivers_each_datagram_at_most_once() -> None:
    loop = asyncio.get_running_loop()
    alice_sock, bob_sock = await ConnectivitySocket.open(), await ConnectivitySocket.open()
    forwarder = LossyForwarder(local(bob_sock), seed=6, loss=0.15, duplicate=0.15, reorder=0.15)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: forwarder, local_addr=("127.0.0.1", 0)
    )
    hop = cast(Address, transport.get_extra_info("sockname"))
    try:
        to_bob = alice_sock.add(Punch(ALICE, BOB.peer_id, CONFIG))
        to_alice = bob_sock.add(Punch(BOB, ALICE.peer_id, CONFIG))
        to_bob.start([hop])
        to_alice.start([hop])  # bob's probes reach alice once she has used the hop
        await asyncio.wait_for(asyncio.gather(to_bob.found, to_alice.found), 5)
        assert not forwarder.to_drop  # a message 2 and a message 3 were lost, sent again
        sent_by_alice = [b"a%d" % i for i in range(300)]
        sent_by_bob = [b"b%d" % i for i in range(300)]
        for i in range(300):
            to_bob.send(sent_by_alice[i])
            to_alice.send(sent_by_bob[i])
            if i % 20 == 0:
                await asyncio.sleep(0.001)
        got_by_bob, got_by_alice = await asyncio.gather(drain(to_alice), drain(to_bob))
        for got, sent in ((got_by_bob, sent_by_alice), (got_by_alice, sent_by_bob)):
            assert len(got) == len(set(got))  # duplicates never delivered twice
            assert set(got) <= set(sent)
            assert len(got) >= 150  # ~70 % arrive
        assert forwarder.duplicated
        assert forwarder.reordered
        stats = (to_bob.punch.session.stats, to_alice.punch.session.stats)
        assert sum(s.replayed for s in stats) > 0
        assert got_by_bob != sorted(got_by_bob, key=lambda d: int(d[1:]))  # reordered
    finally:
        transport.close()
        alice_sock.close()
        bob_sock.close()


async def test_a_forged_message_1_from_elsewhere_does_not_take_the_path() -> None:
    """Mallory, who knows Alice's peer id and Bob's port, sends Bob a message 1 claiming
    to be Alice before Alice does: whatever Bob answers goes where it came from, and the
    path Bob settles on is Alice's, proven by her handshake."""
    loop = asyncio.get_running_loop()
    alice_sock, bob_sock = await ConnectivitySocket.open(), await ConnectivitySocket.open()
    forger = SecureSession(Identity.generate(), remote_peer_id=BOB.peer_id)
    forger.connect(0.0)
    [fake] = forger.datagrams_to_send()
    forged = fake[:42] + ALICE.peer_id.encode() + fake[74:]
    mallory, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        to_alice = bob_sock.add(Punch(BOB, ALICE.peer_id, CONFIG))
        to_bob = alice_sock.add(Punch(ALICE, BOB.peer_id, CONFIG))
        to_alice.start([local(alice_sock)])
        for _ in range(3):
            mallory.sendto(forged, local(bob_sock))
        await asyncio.sleep(0.05)
        to_bob.start([local(bob_sock)])
        await asyncio.wait_for(asyncio.gather(to_bob.found, to_alice.found), 5)
        assert to_alice.remote_address == local(alice_sock)
        assert to_bob.remote_address == local(bob_sock)
        to_bob.send(b"it is me")
        assert await asyncio.wait_for(to_alice.inbox.get(), 5) == b"it is me"
    finally:
        mallory.close()
        alice_sock.close()
        bob_sock.close()
