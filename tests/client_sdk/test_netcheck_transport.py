"""The probing socket over real loopback sockets: it binds a random high port, resends on
its schedule, answers the transaction only with its own answer whatever else arrives
first (garbage, other ids, requests), and hands over requests it was told to expect."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.netcheck.stun import Kind, binding_request, new_transaction_id
from client_sdk.netcheck.transport import RANDOM_PORTS, ProbeSocket, Schedule
from relay.stun import AttributeType, Message, MessageClass, Method, parse

FAST = Schedule((0.0, 0.05, 0.15), 0.4)


def answer(request: bytes, mapped: tuple[str, int]) -> bytes:
    tid = parse(request).transaction_id
    attributes = ((AttributeType.XOR_MAPPED_ADDRESS, mapped),)
    return Message(Method.BINDING, MessageClass.SUCCESS, tid, attributes).encode(fingerprint=True)


class Server(asyncio.DatagramProtocol):
    """Records what arrives; answers the ``answer_on``-th copy of each request, after
    sending ``noise`` to the client."""

    def __init__(self, answer_on: int = 1, noise: tuple[bytes, ...] = ()) -> None:
        self.answer_on = answer_on
        self.noise = noise
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        for datagram in self.noise:
            self.transport.sendto(datagram, addr)
        if self.received.count(data) == self.answer_on:
            self.transport.sendto(answer(data, addr), addr)


async def serve(server: Server) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")


async def test_binds_a_random_high_port_and_gets_its_answer() -> None:
    transport, address = await serve(Server())
    probe = await ProbeSocket.open(socket.AF_INET)
    try:
        assert probe.local_port in RANDOM_PORTS
        tid = new_transaction_id()
        got = await probe.transact(address, binding_request(tid), tid, FAST)
        assert got is not None
        received, rtt = got
        assert received.message.kind is Kind.SUCCESS
        assert received.message.mapped == ("127.0.0.1", probe.local_port)
        assert received.source == address
        assert 0 <= rtt < FAST.give_up
    finally:
        probe.close()
        transport.close()


async def test_resends_until_answered_and_gives_up_on_silence() -> None:
    server = Server(answer_on=2)  # the first copy is "lost"
    transport, address = await serve(server)
    probe = await ProbeSocket.open(socket.AF_INET)
    try:
        tid = new_transaction_id()
        got = await probe.transact(address, binding_request(tid), tid, FAST)
        assert got is not None
        assert got[1] >= 0.05  # answered the retransmission, counted from the first send
        assert len(server.received) == 2  # no third copy once answered

        server.answer_on = 99
        server.received.clear()
        tid = new_transaction_id()
        assert await probe.transact(address, binding_request(tid), tid, FAST) is None
        assert len(server.received) == 3  # 0, 50 and 150 ms
        assert probe.matcher.awaited == frozenset()  # nothing left waiting
    finally:
        probe.close()
        transport.close()


async def test_expected_requests_arrive_from_another_socket() -> None:
    receiver = await ProbeSocket.open(socket.AF_INET)
    sender = await ProbeSocket.open(socket.AF_INET)
    try:
        tid, other = new_transaction_id(), new_transaction_id()
        waiter = receiver.watch(tid, request=True)
        sender.send(binding_request(other), ("127.0.0.1", receiver.local_port))
        sender.send(binding_request(tid), ("127.0.0.1", receiver.local_port))
        received = await asyncio.wait_for(waiter, 2)
        assert received.message.transaction_id == tid
        assert received.message.kind is Kind.REQUEST
        assert received.source == ("127.0.0.1", sender.local_port)
    finally:
        receiver.close()
        sender.close()


def noise_for(tid_of_other: bytes) -> st.SearchStrategy[tuple[bytes, ...]]:
    return st.lists(
        st.one_of(
            st.binary(max_size=100),
            st.just(binding_request(tid_of_other)),
            st.just(answer(binding_request(tid_of_other), ("192.0.2.1", 1))),
        ),
        max_size=6,
    ).map(tuple)


OTHER = new_transaction_id()


@settings(max_examples=25)
@given(noise_for(OTHER))
def test_noise_before_the_answer_changes_nothing(noise: tuple[bytes, ...]) -> None:
    async def run() -> None:
        transport, address = await serve(Server(noise=noise))
        probe = await ProbeSocket.open(socket.AF_INET)
        try:
            tid = new_transaction_id()
            got = await probe.transact(address, binding_request(tid), tid, FAST)
            assert got is not None
            assert got[0].message.transaction_id == tid
            assert got[0].message.mapped == ("127.0.0.1", probe.local_port)
            assert probe.matcher.awaited == frozenset()
        finally:
            probe.close()
            transport.close()

    asyncio.run(run())
