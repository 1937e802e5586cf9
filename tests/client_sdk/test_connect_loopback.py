"""``Peer.connect``/``Peer.accept`` on loopback (no NAT): two peers through the real
rendezvous app (in process) with ``natkit relay`` as their STUN server (a process):
a direct path, data both ways, ``async for`` over incoming connections, the size
limit, closing; and the failures, each a ``ConnectError``: a peer id connected nowhere,
a peer that does not accept, a peer whose candidates lead nowhere (within the bound)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client_sdk import Candidate, ConnectError, ConnectionClosed, Peer
from client_sdk.identity import Identity
from client_sdk.rendezvous import PunchRequest
from client_sdk.secure import MAX_PAYLOAD
from tests.client_sdk.test_peer_api import FAST, rendezvous, url_of
from tests.netutil import free_udp_port
from tests.relay.relay_process import natkit_relay


@pytest.fixture(scope="module")
def stun() -> Iterator[str]:
    port = free_udp_port("127.0.0.1")
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ):
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def server() -> AsyncIterator[TestClient[Any, Any]]:
    async with rendezvous() as client:
        yield client


def peer(server: TestClient[Any, Any], stun: str, **options: Any) -> Peer:
    return Peer(url_of(server), backoff=FAST, stun=stun, **options)


async def test_connect_and_accept_exchange_data(server: TestClient[Any, Any], stun: str) -> None:
    async with peer(server, stun) as alice, peer(server, stun) as bob:
        bob.listen()
        accepted = asyncio.create_task(bob.accept())
        conn = await asyncio.wait_for(alice.connect(bob.peer_id), 10)
        incoming = await asyncio.wait_for(accepted, 5)
        async with conn, incoming:
            assert conn.path == incoming.path == "direct"
            assert conn.remote_peer_id == bob.peer_id
            assert incoming.remote_peer_id == alice.peer_id
            assert conn.rtt is not None
            assert 0 <= conn.rtt < 1
            assert incoming.rtt is not None
            assert 0 <= incoming.rtt < 1
            assert conn.remote_address is not None
            await conn.send(b"hello bob")
            assert await asyncio.wait_for(incoming.recv(), 2) == b"hello bob"
            await incoming.send(b"hello alice")
            assert await asyncio.wait_for(conn.recv(), 2) == b"hello alice"
            biggest = bytes(range(256)) * 4 + b"x" * (MAX_PAYLOAD - 1024)
            await conn.send(biggest)
            assert await asyncio.wait_for(incoming.recv(), 2) == biggest
            with pytest.raises(ValueError, match="1 to 1171 bytes"):
                await conn.send(b"x" * (MAX_PAYLOAD + 1))
            with pytest.raises(ValueError, match="not 0"):
                await conn.send(b"")
        assert conn.closed
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        with pytest.raises(ConnectionClosed):
            await conn.send(b"late")


async def test_async_for_yields_each_incoming_connection(
    server: TestClient[Any, Any], stun: str
) -> None:
    async with (
        peer(server, stun) as hub,
        peer(server, stun) as one,
        peer(server, stun) as two,
    ):
        hub.listen()

        async def serve(count: int) -> list[str]:
            seen = []
            async for conn in hub:
                seen.append(conn.remote_peer_id)
                await conn.send(await conn.recv())  # echo one datagram
                if len(seen) == count:
                    break
            return seen

        served = asyncio.create_task(serve(2))
        for client in (one, two):
            async with await client.connect(hub.peer_id) as conn:
                await conn.send(client.peer_id.encode())
                assert await asyncio.wait_for(conn.recv(), 2) == client.peer_id.encode()
        assert await asyncio.wait_for(served, 5) == [one.peer_id, two.peer_id]
    # Closed: iteration ends, accept raises.
    assert [c async for c in hub] == []
    with pytest.raises(ConnectionClosed):
        await hub.accept()


async def test_failures_are_connect_errors(server: TestClient[Any, Any], stun: str) -> None:
    async with (
        peer(server, stun, answer_timeout=1.0) as alice,
        peer(server, stun) as silent,
    ):
        loop = asyncio.get_running_loop()
        # A peer id connected nowhere: the rendezvous says so at once.
        started = loop.time()
        with pytest.raises(ConnectError, match="unreachable"):
            await alice.connect(Identity.generate().peer_id)
        assert loop.time() - started < 2
        with pytest.raises(ConnectError, match="oneself"):
            await alice.connect(alice.peer_id)
        # Connected but not accepting: no punch_now within answer_timeout.
        started = loop.time()
        with pytest.raises(ConnectError, match="did not accept"):
            await alice.connect(silent.peer_id)
        assert loop.time() - started < 3


async def test_no_path_within_the_bound(server: TestClient[Any, Any]) -> None:
    """Bob answers the punch with a candidate that leads to a socket that never answers
    (as a peer behind a NAT we cannot get through would): ``ConnectError`` once the punch
    timeout has passed, not a hang."""
    async with (
        Peer(url_of(server), backoff=FAST, punch_timeout=1.0) as alice,
        Peer(url_of(server), backoff=FAST) as bob,
    ):
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        nowhere = Candidate("127.0.0.1", silent.getsockname()[1])

        async def answer_once() -> None:
            async with bob.signals() as events:
                async for event in events:
                    if isinstance(event, PunchRequest):
                        await bob.rendezvous.punch_accept(
                            event.sender, event.id, [nowhere], event.rtt_ms
                        )
                        return

        answering = asyncio.create_task(answer_once())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(ConnectError, match="no direct path"):
                await alice.connect(bob.peer_id)
            assert 1.0 <= loop.time() - started < 4
            await asyncio.wait_for(answering, 1)
            probes = 0
            silent.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while silent.recv(2048):
                    probes += 1
            assert 10 <= probes <= 40  # paced: every 50 ms for the first second
        finally:
            silent.close()
