"""TURN over UDP on real sockets, driven by aioice's TURN client (written by others):
allocation, relaying both ways through a channel, authentication, peer policy."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import pytest
from aioice.turn import create_turn_endpoint

from relay.settings import RelaySettings
from relay.turn.auth import rest_api_credentials
from tests.netutil import free_udp_port
from tests.relay.relay_process import running_relay

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


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with cryptography."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natkit test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def relay_round_trip_stream(port: int, tls: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await create_turn_endpoint(
        Collector,
        server_addr=("127.0.0.1", port),
        username=USER,
        password=PASSWORD,
        transport="tcp",
        ssl=tls,
    )
    try:
        relayed = transport.get_extra_info("sockname")
        with peer_socket() as peer:
            peer_addr = peer.getsockname()
            # Odd sizes: ChannelData over a stream is padded to 4 bytes (RFC 8656 §12.4).
            for size in (1, 2, 3, 4, 5, 1000, 1201):
                payload = bytes([size % 256]) * size
                transport.sendto(payload, peer_addr)
                data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 4096), 3)
                assert (data, source) == (payload, relayed)
                await loop.sock_sendto(peer, payload[::-1] + b"!", relayed)
                data, source = await asyncio.wait_for(protocol.queue.get(), 3)
                assert (data, source) == (payload[::-1] + b"!", peer_addr)
    finally:
        transport.close()
        await asyncio.sleep(0.05)


async def test_aioice_over_tcp() -> None:
    port = free_udp_port()
    async with running_relay(turn_settings(port)):
        await relay_round_trip_stream(port)


async def test_aioice_over_tls(tls_files: tuple[str, str]) -> None:
    port = free_udp_port()
    tls_port = free_udp_port()
    cert, key = tls_files
    settings = turn_settings(port, tls_listen=[f"127.0.0.1:{tls_port}"], cert=cert, key=key)
    client_context = ssl.create_default_context(cafile=cert)
    async with running_relay(settings):
        await relay_round_trip_stream(tls_port, client_context)


async def test_tcp_allocation_ends_with_its_connection() -> None:
    port = free_udp_port()
    stop = asyncio.Event()
    from relay.runtime import RelayRuntime
    from relay.server.listeners import plan_listeners

    settings = turn_settings(port)
    runtime = RelayRuntime(
        settings, plan_listeners(settings), nonce_secret=b"s" * 32, reuse_port=False
    )
    await runtime.start()
    try:
        transport, _ = await create_turn_endpoint(
            Collector,
            server_addr=("127.0.0.1", port),
            username=USER,
            password=PASSWORD,
            transport="tcp",
        )
        assert runtime.snapshot().turn.allocations == 1
        transport.close()
        for _ in range(50):
            await asyncio.sleep(0.05)
            if runtime.snapshot().turn.allocations == 0:
                break
        assert runtime.snapshot().turn.allocations == 0
    finally:
        stop.set()
        await runtime.stop()


async def test_binding_over_tcp_and_garbage_stream_closed() -> None:
    from aioice import stun as aioice_stun

    port = free_udp_port()
    async with running_relay(turn_settings(port)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = aioice_stun.Message(
            message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
        )
        writer.write(bytes(request))
        header = await asyncio.wait_for(reader.readexactly(20), 3)
        body = await reader.readexactly(int.from_bytes(header[2:4], "big"))
        response = aioice_stun.parse_message(header + body)
        assert response.attributes["XOR-MAPPED-ADDRESS"] == writer.get_extra_info("sockname")
        writer.close()
        # Not STUN, not ChannelData: the relay closes the connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x80\x00\x00\x00 garbage")
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()


async def test_external_ip_is_advertised() -> None:
    """Behind a 1:1 NAT the relayed address handed out is the public one."""
    port = free_udp_port()
    settings = turn_settings(port, external_ip=["198.51.100.1/127.0.0.1"])
    async with running_relay(settings):
        transport, _ = await create_turn_endpoint(
            Collector, server_addr=("127.0.0.1", port), username=USER, password=PASSWORD
        )
        try:
            relayed = transport.get_extra_info("sockname")
            assert relayed[0] == "198.51.100.1"
            assert 40000 <= relayed[1] <= 40999
        finally:
            transport.close()
