"""TURN over UDP on real sockets, driven by aioice's TURN client (written by others):
allocation, relaying both ways through a channel, authentication, peer policy."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioice.turn import create_turn_endpoint

from relay.app import serve
from relay.settings import RelaySettings
from relay.turn.auth import rest_api_credentials
from tests.netutil import free_udp_port

USER, PASSWORD, SECRET = "alice", "wonderland", "rest-secret"


def turn_settings(port: int, **extra: object) -> RelaySettings:
    values: dict[str, object] = {
        "listen": [f"127.0.0.1:{port}"],
        "metrics_listen": "",
        "user": [f"{USER}:{PASSWORD}"],
        "auth_secret": [SECRET],
        "allow_peer": ["127.0.0.0/8"],
        "min_port": 40000,
        "max_port": 40999,
    }
    values.update(extra)
    return RelaySettings.model_validate(values)


@contextlib.asynccontextmanager
async def running_relay(settings: RelaySettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    await asyncio.sleep(0.1)
    try:
        if task.done():
            task.result()
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@contextlib.contextmanager
def peer_socket() -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


async def relay_round_trip(port: int, username: str, password: str) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await create_turn_endpoint(
        Collector, server_addr=("127.0.0.1", port), username=username, password=password
    )
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
        assert 40000 <= relayed[1] <= 40999
        assert transport.get_extra_info("related_address")[0] == "127.0.0.1"
        with peer_socket() as peer:
            peer_addr = peer.getsockname()
            for i in range(5):
                transport.sendto(b"to peer %d" % i, peer_addr)
                data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 2048), 3)
                assert data == b"to peer %d" % i
                assert source == relayed  # the peer sees the relayed address
                await loop.sock_sendto(peer, b"to client %d" % i, relayed)
                data, source = await asyncio.wait_for(protocol.queue.get(), 3)
                assert data == b"to client %d" % i
                assert source == peer_addr
    finally:
        transport.close()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("batch_io", [True, False], ids=["batched", "loop"])
async def test_aioice_relays_both_ways_with_static_user(batch_io: bool) -> None:
    port = free_udp_port()
    async with running_relay(turn_settings(port, batch_io=batch_io)):
        await relay_round_trip(port, USER, PASSWORD)


async def test_aioice_with_rest_api_credentials() -> None:
    port = free_udp_port()
    username, password = rest_api_credentials(SECRET, "bob", 600, __import__("time").time())
    async with running_relay(turn_settings(port)):
        await relay_round_trip(port, username, password)


async def test_wrong_password_is_refused() -> None:
    port = free_udp_port()
    async with running_relay(turn_settings(port)):
        with pytest.raises(Exception, match="401"):
            await create_turn_endpoint(
                Collector, server_addr=("127.0.0.1", port), username=USER, password="nope"
            )


async def test_loopback_peers_denied_by_default() -> None:
    """Without --allow-peer the relay refuses to reach 127.0.0.1 (CVE-2020-26262)."""
    port = free_udp_port()
    loop = asyncio.get_running_loop()
    async with running_relay(turn_settings(port, allow_peer=[])):
        transport, protocol = await create_turn_endpoint(
            Collector, server_addr=("127.0.0.1", port), username=USER, password=PASSWORD
        )
        try:
            with peer_socket() as peer:
                transport.sendto(b"should not arrive", peer.getsockname())
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(loop.sock_recv(peer, 2048), 0.5)
            assert any("403" in str(e) for e in protocol.errors), protocol.errors
        finally:
            transport.close()
