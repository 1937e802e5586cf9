"""ChannelData through a running relay on real sockets, by every path that can carry it:
the C data plane's routes (batched), the core itself (batched with --max-bps, which
installs no routes; and the event loop's transports). Each must relay the same datagrams,
count them the same in /metrics, and stop the moment the allocation is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay.stun import AttributeType, Message, MessageClass, Method, long_term_key, parse
from tests.netutil import free_udp_port
from tests.relay.relay_process import running_relay
from tests.relay.turn.test_turn_sockets import PASSWORD, USER, turn_settings

REALM = "natkit"
CHANNEL = 0x4000


class RawTurnClient:
    """A minimal TURN client on a UDP socket (our codec): enough to drive channels."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.key = long_term_key(USER, REALM, PASSWORD)
        self.nonce = ""

    async def receive(self, timeout: float = 3.0) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)

    async def request(self, method: Method, *attrs: tuple[int, object]) -> Message:
        loop = asyncio.get_running_loop()
        for _ in range(2):  # the first may be a 401 with the nonce
            credentials = (
                (
                    (AttributeType.USERNAME, USER),
                    (AttributeType.REALM, REALM),
                    (AttributeType.NONCE, self.nonce),
                )
                if self.nonce
                else ()
            )
            message = Message(method, MessageClass.REQUEST, os.urandom(12), (*attrs, *credentials))
            encoded = message.encode(integrity_key=self.key) if self.nonce else message.encode()
            await loop.sock_sendto(self.sock, encoded, self.server)
            response = parse(await self.receive())
            error = response.get(AttributeType.ERROR_CODE)
            if error is not None and error.code in (401, 438):
                self.nonce = response.get(AttributeType.NONCE) or ""
                continue
            assert response.message_class == MessageClass.SUCCESS, error
            return response
        raise AssertionError("no success after the challenge")

    def close(self) -> None:
        self.sock.close()


async def metric(port: int, name: str, direction: str | None = None) -> int:
    """A counter by direction, or (no direction) a gauge, from /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    series = f'{name}_total{{direction="{direction}"}}' if direction else name
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"{series} not in /metrics"
    return int(float(found.group(1)))


@contextlib.asynccontextmanager
async def relay_with_metrics(**extra: object) -> AsyncIterator[tuple[int, int]]:
    port, metrics_port = free_udp_port(), free_udp_port()
    settings = turn_settings(port, metrics_listen=f"127.0.0.1:{metrics_port}", **extra)
    async with running_relay(settings):
        yield port, metrics_port


@pytest.mark.parametrize(
    ("extra", "routed"),
    [
        ({"batch_io": True}, 1),
        ({"batch_io": True, "max_bps": 10**9}, 0),
        ({"batch_io": False}, 0),
    ],
    ids=["data-plane", "core-metered", "event-loop"],
)
async def test_channel_data_both_ways_counted_and_stopped_by_delete(
    extra: dict[str, object], routed: int
) -> None:
    loop = asyncio.get_running_loop()
    async with relay_with_metrics(**extra) as (port, metrics_port):
        client = RawTurnClient(("127.0.0.1", port))
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        try:
            allocated = await client.request(
                Method.ALLOCATE, (AttributeType.REQUESTED_TRANSPORT, 17)
            )
            relayed_attr = allocated.get(AttributeType.XOR_RELAYED_ADDRESS)
            assert relayed_attr is not None
            relayed = (relayed_attr[0], relayed_attr[1])
            await client.request(
                Method.CHANNEL_BIND,
                (AttributeType.CHANNEL_NUMBER, CHANNEL),
                (AttributeType.XOR_PEER_ADDRESS, peer.getsockname()),
            )
            rounds = 20
            for i in range(rounds):
                payload = b"to peer %d" % i
                frame = struct.pack("!HH", CHANNEL, len(payload)) + payload
                await loop.sock_sendto(client.sock, frame, client.server)
                data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 4096), 3)
                assert (data, source) == (payload, relayed)
                back = b"to client %d" % i
                await loop.sock_sendto(peer, back, relayed)
                assert await client.receive() == struct.pack("!HH", CHANNEL, len(back)) + back
            assert await metric(metrics_port, "natkit_turn_relayed_packets", "to_peer") == rounds
            assert await metric(metrics_port, "natkit_turn_relayed_packets", "to_client") == rounds
            # Which path carried it: the data plane's routes, or the core.
            assert await metric(metrics_port, "natkit_turn_routed_channels") == routed
            expected_bytes = sum(len(b"to peer %d" % i) for i in range(rounds))
            assert await metric(metrics_port, "natkit_turn_relayed_bytes", "to_peer") == (
                expected_bytes
            )
            # Deleted: neither direction is relayed any more, at once.
            await client.request(Method.REFRESH, (AttributeType.LIFETIME, 0))
            frame = struct.pack("!HH", CHANNEL, 4) + b"late"
            await loop.sock_sendto(client.sock, frame, client.server)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(peer, 4096), 0.3)
            with contextlib.suppress(OSError):  # the relayed port is closed: ICMP
                await loop.sock_sendto(peer, b"late", relayed)
            with pytest.raises(TimeoutError):
                await client.receive(0.3)
            assert await metric(metrics_port, "natkit_turn_relayed_packets", "to_peer") == rounds
            assert await metric(metrics_port, "natkit_turn_routed_channels") == 0
        finally:
            client.close()
            peer.close()
