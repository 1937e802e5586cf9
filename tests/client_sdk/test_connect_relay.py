"""The relay path on loopback: two peers through the real rendezvous app (in process),
which hands out TURN REST credentials for a real ``natkit relay`` (a process, TURN over
UDP and TCP, loopback peers allowed). Relay-only peers connect through their two
allocations; a TCP-only relay works the same; with both paths up the direct one is used
and the relay one waits as the fallback; two peers dialling each other at once get one
connection each way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client_sdk import ConnectError, Peer, PeerConnection
from client_sdk.connect.connection import PathChanged
from client_sdk.connect.relay import ATTEMPT_TIMEOUT, STAGGER, RelaySocket, TurnServer
from relay.turn.auth import rest_api_credentials
from tests.client_sdk.test_peer_api import FAST, rendezvous, url_of
from tests.netutil import free_udp_port
from tests.relay.relay_process import natkit_relay

SECRET = "relay-test-secret"


@pytest.fixture(scope="module")
def relay_port() -> Iterator[int]:
    port = free_udp_port("127.0.0.1")
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", "--tcp", "--auth-secret", SECRET),
        *("--allow-peer", "127.0.0.0/8", "--metrics-listen", "", "--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ):
        yield port


@asynccontextmanager
async def server_with(uris: list[str]) -> AsyncIterator[TestClient[Any, Any]]:
    async with rendezvous(turn_secret=SECRET, turn_uris=uris) as client:
        yield client


@pytest.fixture
async def server(relay_port: int) -> AsyncIterator[TestClient[Any, Any]]:
    uris = [f"turn:127.0.0.1:{relay_port}?transport=udp"]
    async with server_with(uris) as client:
        yield client


def path_of(conn: PeerConnection) -> str | None:
    """The path now (a call, so that a type checker does not keep an earlier answer)."""
    return conn.path


def peer(server: TestClient[Any, Any], relay_port: int, **options: Any) -> Peer:
    options.setdefault("stun", f"127.0.0.1:{relay_port}")
    return Peer(url_of(server), backoff=FAST, punch_timeout=3.0, **options)


async def pair(dialler: Peer, accepter: Peer) -> tuple[PeerConnection, PeerConnection]:
    accepter.listen()
    accepted = asyncio.create_task(accepter.accept())
    conn = await asyncio.wait_for(dialler.connect(accepter.peer_id), 10)
    return conn, await asyncio.wait_for(accepted, 5)


async def exchange(a: PeerConnection, b: PeerConnection, tag: str) -> None:
    await a.send(f"{tag} a->b".encode())
    assert await asyncio.wait_for(b.recv(), 5) == f"{tag} a->b".encode()
    await b.send(f"{tag} b->a".encode())
    assert await asyncio.wait_for(a.recv(), 5) == f"{tag} b->a".encode()


def allocation(p: Peer) -> RelaySocket:
    relay = p.connector._relay
    assert relay is not None
    return relay


async def test_relay_only_peers_connect_through_their_allocations(
    server: TestClient[Any, Any], relay_port: int
) -> None:
    async with (
        peer(server, relay_port, direct=False) as alice,
        peer(server, relay_port) as bob,
    ):
        conn, incoming = await pair(alice, bob)
        async with conn, incoming:
            assert path_of(conn) == path_of(incoming) == "relay"
            # Each side hears the other from the other's relayed address.
            assert conn.remote_address == allocation(bob).relayed
            assert incoming.remote_address == allocation(alice).relayed
            assert allocation(alice).relayed[1] != relay_port
            await exchange(conn, incoming, "relayed")
            assert conn.rtt is not None
            assert 0 <= conn.rtt < 1


async def test_a_tcp_relay_carries_the_path(relay_port: int) -> None:
    async with (
        server_with([f"turn:127.0.0.1:{relay_port}?transport=tcp"]) as server,
        peer(server, relay_port, direct=False) as alice,
        peer(server, relay_port, direct=False) as bob,
    ):
        conn, incoming = await pair(alice, bob)
        async with conn, incoming:
            assert path_of(conn) == path_of(incoming) == "relay"
            assert allocation(alice).server.transport == "tcp"
            assert allocation(bob).server.transport == "tcp"
            for n in range(5):
                await exchange(conn, incoming, f"tcp {n}")


async def test_direct_path_wins_and_the_relay_is_the_fallback(
    server: TestClient[Any, Any], relay_port: int
) -> None:
    async with peer(server, relay_port) as alice, peer(server, relay_port) as bob:
        conn, incoming = await pair(alice, bob)
        async with conn, incoming:
            assert path_of(conn) == path_of(incoming) == "direct"
            await exchange(conn, incoming, "direct")
            # The relay path comes up beside it (its punch goes on in the background).
            for side in (conn, incoming):
                relay = side._links.get("relay")
                assert relay is not None
                await asyncio.wait_for(asyncio.shield(relay.found), 5)
            changes = conn.path_changes()
            # The direct path dies on both sides: the connection goes on over the relay.
            for side in (conn, incoming):
                side._links["direct"].close("path died")
            change = await asyncio.wait_for(anext(changes), 5)
            assert change == PathChanged("direct", "relay", allocation(bob).relayed)
            assert path_of(conn) == path_of(incoming) == "relay"
            assert not conn.closed
            await exchange(conn, incoming, "after fallback")
            # ... and when the relay path dies too, the connection ends.
            for side in (conn, incoming):
                side._links["relay"].close("relay died")
            end = await asyncio.wait_for(anext(changes), 5)
            assert end.path is None
            assert conn.closed
            with pytest.raises(ConnectError):
                await conn.send(b"x")


async def test_no_relay_candidate_from_the_peer_and_no_direct_path_fails(
    server: TestClient[Any, Any], relay_port: int
) -> None:
    async with (
        peer(server, relay_port, direct=False) as alice,
        peer(server, relay_port, relay=False) as bob,
    ):
        bob.listen()
        with pytest.raises(ConnectError, match=r"no relay candidate|no path"):
            await asyncio.wait_for(alice.connect(bob.peer_id), 15)


async def test_crossing_dials_give_one_connection_each(
    server: TestClient[Any, Any], relay_port: int
) -> None:
    async with peer(server, relay_port) as alice, peer(server, relay_port) as bob:
        alice.listen()
        bob.listen()
        a, b = await asyncio.wait_for(
            asyncio.gather(alice.connect(bob.peer_id), bob.connect(alice.peer_id)), 15
        )
        async with a, b:
            assert a.remote_peer_id == bob.peer_id
            assert b.remote_peer_id == alice.peer_id
            assert path_of(a) == path_of(b) == "direct"
            await exchange(a, b, "crossed")
            # Nothing extra was queued for accept() on either side.
            assert alice.connector._accepted.empty()
            assert bob.connector._accepted.empty()


async def test_a_dead_direct_path_is_punched_again(
    server: TestClient[Any, Any], relay_port: int
) -> None:
    async with (
        peer(server, relay_port, repunch_after=0.3) as alice,
        peer(server, relay_port) as bob,
    ):
        conn, incoming = await pair(alice, bob)
        async with conn, incoming:
            for side in (conn, incoming):
                relay = side._links.get("relay")
                assert relay is not None
                await asyncio.wait_for(asyncio.shield(relay.found), 5)
            dialler_changes, accepter_changes = conn.path_changes(), incoming.path_changes()
            for side in (conn, incoming):
                side._links["direct"].close("path died")
            for changes in (dialler_changes, accepter_changes):
                change = await asyncio.wait_for(anext(changes), 5)
                assert (change.previous, change.path) == ("direct", "relay")
            # The dialler punches again; both sides attach the new direct link to the
            # connection they have, and move back to it.
            for changes in (dialler_changes, accepter_changes):
                change = await asyncio.wait_for(anext(changes), 10)
                assert (change.previous, change.path) == ("relay", "direct")
            assert path_of(conn) == path_of(incoming) == "direct"
            await exchange(conn, incoming, "punched again")
            assert alice.connector._accepted.empty()
            assert bob.connector._accepted.empty()  # not taken for a new connection


async def test_a_silent_udp_server_delays_the_tcp_one_by_the_stagger_only(relay_port: int) -> None:
    """UDP blocked, as the client sees it: a UDP "server" that never answers is tried
    first; the TCP attempt starts ``STAGGER`` later and wins long before the UDP attempt's
    timeout."""
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = silent.get_extra_info("sockname")[1]
    username, password = rest_api_credentials(SECRET, "alice", 600, time.time())
    servers = [TurnServer("127.0.0.1", port, "udp"), TurnServer("127.0.0.1", relay_port, "tcp")]
    try:
        started = loop.time()
        allocated = await RelaySocket.allocate(servers, username, password)
        elapsed = loop.time() - started
        try:
            assert allocated.server == servers[1]
            assert STAGGER <= elapsed < ATTEMPT_TIMEOUT / 2
            assert allocated.relayed[0] == "127.0.0.1"
        finally:
            allocated.close()
    finally:
        silent.close()


async def test_every_failure_is_named_when_no_server_grants_one(relay_port: int) -> None:
    username, _ = rest_api_credentials(SECRET, "alice", 600, time.time())
    servers = [
        TurnServer("127.0.0.1", relay_port, "udp"),
        TurnServer("127.0.0.1", relay_port, "tcp"),
    ]
    with pytest.raises(ConnectionError) as failed:
        await RelaySocket.allocate(servers, username, "wrong password", attempt_timeout=2.0)
    message = str(failed.value)
    assert message.startswith("no TURN allocation: ")
    assert str(servers[0]) in message
    assert str(servers[1]) in message
