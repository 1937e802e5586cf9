"""The relay over real UDP sockets on loopback: in-process (the asyncio shim) and as the
``natkit relay`` command (workers, metrics, robustness)."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import cast

import pytest
from aioice import stun as aioice_stun
from aioice.candidate import Candidate
from aioice.ice import Connection, StunProtocol, server_reflexive_candidate

from relay.settings import RelaySettings
from tests.netutil import free_udp_port
from tests.relay.relay_process import binding_request, running_relay


class _Receiver:
    """The minimum aioice's StunProtocol needs from its owner."""

    def data_received(self, data: bytes, component: int) -> None: ...

    def protocol_lost(self, protocol: object) -> None: ...

    def request_received(self, message: object, addr: object, protocol: object) -> None: ...


async def aioice_binding(server: tuple[str, int]) -> tuple[str, int, tuple[str, int]]:
    """aioice's own STUN client: returns (srflx host, srflx port, local address)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(cast(Connection, _Receiver())),
        local_addr=("127.0.0.1", 0),
    )
    try:
        local = transport.get_extra_info("sockname")
        protocol.local_candidate = Candidate(
            foundation="1",
            component=1,
            transport="udp",
            priority=1,
            host=local[0],
            port=local[1],
            type="host",
        )
        candidate, _ = await asyncio.wait_for(server_reflexive_candidate(protocol, server), 5)
        return candidate.host, candidate.port, local
    finally:
        transport.close()


# Every in-process test runs on both socket shims: batched recvmmsg/sendmmsg and the
# event loop's datagram transport.
pytestmark = pytest.mark.parametrize("batch_io", [True, False], ids=["batched", "loop"])


def rfc5780_settings(batch_io: bool) -> tuple[RelaySettings, int, int]:
    """Settings for 127.0.0.1:port with its alternate 127.0.0.2:alt."""
    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    settings = RelaySettings.model_validate(
        {
            "listen": [f"127.0.0.1:{port}"],
            "alt_listen": [f"127.0.0.2:{alt}"],
            "metrics_listen": "",
            "batch_io": batch_io,
        }
    )
    return settings, port, alt


async def test_aioice_client_gets_its_address(batch_io: bool) -> None:
    port = free_udp_port()
    settings = RelaySettings.model_validate(
        {"listen": [f"127.0.0.1:{port}"], "metrics_listen": "", "batch_io": batch_io}
    )
    async with running_relay(settings):
        host, mapped_port, local = await aioice_binding(("127.0.0.1", port))
    assert (host, mapped_port) == local


async def test_ipv6_loopback(batch_io: bool) -> None:
    port = free_udp_port()
    settings = RelaySettings.model_validate(
        {"listen": [f"[::1]:{port}"], "metrics_listen": "", "batch_io": batch_io}
    )
    async with running_relay(settings):
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.setblocking(False)
            await loop.sock_sendto(sock, binding_request(), ("::1", port))
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 2)
            response = aioice_stun.parse_message(data)
            assert response.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()[:2]


async def test_change_request_leaves_from_the_alternate_socket(batch_io: bool) -> None:
    settings, port, alt = rfc5780_settings(batch_io)
    loop = asyncio.get_running_loop()
    async with running_relay(settings):
        for flags, origin in (
            (0, ("127.0.0.1", port)),
            (2, ("127.0.0.1", alt)),
            (4, ("127.0.0.2", port)),
            (6, ("127.0.0.2", alt)),
        ):
            msg = aioice_stun.Message(
                message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
            )
            msg.attributes["CHANGE-REQUEST"] = flags
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                await loop.sock_sendto(sock, bytes(msg), ("127.0.0.1", port))
                data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            response = aioice_stun.parse_message(data)
            assert source == origin
            assert response.attributes["RESPONSE-ORIGIN"] == origin
            assert response.attributes["OTHER-ADDRESS"] == ("127.0.0.2", alt)


async def test_bursts_mixed_with_garbage_all_answered(batch_io: bool) -> None:
    """Several batches' worth at once, valid requests interleaved with junk, an oversized
    datagram and requests answered from another socket: every valid request gets exactly
    its own answer, from the right source."""
    settings, port, alt = rfc5780_settings(batch_io)
    loop = asyncio.get_running_loop()
    async with running_relay(settings):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            expected: dict[bytes, tuple[str, int]] = {}
            for i in range(300):
                msg = aioice_stun.Message(
                    message_method=aioice_stun.Method.BINDING,
                    message_class=aioice_stun.Class.REQUEST,
                )
                if i % 10 == 0:
                    msg.attributes["CHANGE-REQUEST"] = 6
                    expected[msg.transaction_id] = ("127.0.0.2", alt)
                else:
                    expected[msg.transaction_id] = ("127.0.0.1", port)
                msg.add_fingerprint()
                sock.sendto(bytes(msg), ("127.0.0.1", port))
                sock.sendto(os.urandom(i % 40), ("127.0.0.1", port))
                if i % 50 == 0:  # over any STUN size: dropped, not truncated and parsed
                    sock.sendto(binding_request() + b"\x00" * 4000, ("127.0.0.1", port))
            received: dict[bytes, tuple[str, int]] = {}
            try:
                while len(received) < len(expected):
                    data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), 2)
                    response = aioice_stun.parse_message(data)
                    assert response.transaction_id not in received
                    received[response.transaction_id] = source
                    assert response.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()
            except TimeoutError:
                pass
            assert received == expected
