"""The BEP 15 UDP tracker: its core without sockets, then the shim on a real UDP socket
with the memory and Redis stores (connect, announce, scrape, expired ids, bad packets)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay.server import batched as batched_io
from rendezvous import keys
from rendezvous.app import create_app
from rendezvous.bittorrent.announce import Event
from rendezvous.bittorrent.connection_ids import ConnectionIds
from rendezvous.bittorrent.udp import (
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    ScrapeRequest,
    ScrapeResponse,
    UdpAnnounce,
    parse_response,
)
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, PeerRecord, SwarmStats
from rendezvous.udp_tracker import UdpTracker
from tests.rendezvous.apputil import store_url

INFO_HASH = os.urandom(20)
ADDR = ("127.0.0.1", 40000)


def core() -> UdpTracker:
    return UdpTracker(RendezvousSettings(), ConnectionIds(b"s" * 32), ipv6=False)


def announce_request(connection_id: int, peer: bytes, port: int, **extra: Any) -> AnnounceRequest:
    fields: dict[str, Any] = {"downloaded": 0, "left": 10, "uploaded": 0, "port": port, **extra}
    return AnnounceRequest(connection_id, 7, INFO_HASH, peer, **fields)


def test_core_connect_then_announce() -> None:
    tracker = core()
    reply = tracker.handle(ConnectRequest(5).encode(), ADDR, 1000.0)
    assert isinstance(reply, bytes)
    connected = parse_response(reply, ipv6=False)
    assert isinstance(connected, ConnectResponse)
    assert connected.transaction_id == 5
    request = announce_request(connected.connection_id, b"p" * 20, 6881)
    assert tracker.handle(request.encode(), ADDR, 1000.0) == UdpAnnounce.of(request)
    # With a BEP 41 option the full parser reads it: the same announce.
    with_options = dataclasses.replace(request, url_data=b"/announce?x")
    assert tracker.handle(with_options.encode(), ADDR, 1000.0) == UdpAnnounce.of(request)
    # Another source, or two minutes later: the id is not accepted.
    for addr, now in ((("127.0.0.2", 40000), 1000.0), (ADDR, 1000.0 + 240)):
        refused = tracker.handle(request.encode(), addr, now)
        assert isinstance(refused, bytes)
        assert parse_response(refused, ipv6=False) == ErrorResponse(7, "connection id expired")


def test_core_bad_packets() -> None:
    tracker = core()
    assert tracker.handle(b"short", ADDR, 0.0) is None  # no transaction id to answer
    reply = tracker.handle(bytes(8) + (1).to_bytes(4, "big") + (9).to_bytes(4, "big"), ADDR, 0)
    assert isinstance(reply, bytes)
    error = parse_response(reply, ipv6=False)
    assert isinstance(error, ErrorResponse)
    assert error.transaction_id == 9


def test_core_answers_only_peers_of_the_requests_family() -> None:
    tracker = core()
    records = (
        PeerRecord("a", bytes([10, 0, 0, 1, 0x1A, 0xE1]), 0.0),
        PeerRecord("b", socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\x1a\xe2", 0),
    )
    request = UdpAnnounce.of(announce_request(1, b"p" * 20, 6881))
    reply = tracker.answer_announce(request, Announced(records, SwarmStats(3, 1, 0)))
    response = parse_response(reply, ipv6=False)
    assert response == AnnounceResponse(7, 1800, 2, 1, (("10.0.0.1", 6881),))


@pytest.fixture(params=["memory-batched", "memory-loop", "redis-batched", "redis-loop"])
async def udp_tracker(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[socket.socket, list[float]]]:
    backend, io = request.param.split("-")
    store = store_url(request, backend)
    now = [1_800_000_000.0]
    settings = RendezvousSettings(
        store=store, secret="t", udp_tracker="127.0.0.1:0", udp_batch_io=io == "batched"
    )
    client = TestClient(TestServer(create_app(settings, clock=lambda: now[0])))
    await client.start_server()
    assert client.app[keys.UDP_TRACKER].batched == (io == "batched" and batched_io.available())
    port = client.app[keys.UDP_TRACKER].sockname[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        yield sock, now
    finally:
        sock.close()
        await client.close()


async def exchange(sock: socket.socket, payload: bytes) -> Any:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, payload)
    return parse_response(await asyncio.wait_for(loop.sock_recv(sock, 2048), 3), ipv6=False)


async def test_announce_and_scrape_over_udp(udp_tracker: tuple[socket.socket, list[float]]) -> None:
    sock, now = udp_tracker
    connected = await exchange(sock, ConnectRequest(1).encode())
    cid = connected.connection_id
    first = await exchange(
        sock, announce_request(cid, b"a" * 20, 6881, event=Event.STARTED).encode()
    )
    assert first == AnnounceResponse(7, 1800, 1, 0, ())
    second = await exchange(sock, announce_request(cid, b"b" * 20, 6882, left=0).encode())
    assert second == AnnounceResponse(7, 1800, 1, 1, (("127.0.0.1", 6881),))
    scraped = await exchange(sock, ScrapeRequest(cid, 8, (INFO_HASH, os.urandom(20))).encode())
    assert isinstance(scraped, ScrapeResponse)
    assert [(e.complete, e.downloaded, e.incomplete) for e in scraped.entries] == [
        (1, 0, 1),
        (0, 0, 0),
    ]
    # The client-supplied ip is ignored: peers are listed at their source address.
    third = await exchange(
        sock, announce_request(cid, b"c" * 20, 6883, ip=0x0A000001, num_want=5).encode()
    )
    assert ("10.0.0.1", 6883) not in third.peers
    now[0] += 300  # the connection id is stale now
    stale = await exchange(sock, announce_request(cid, b"a" * 20, 6881).encode())
    assert stale == ErrorResponse(7, "connection id expired")
    garbage = await exchange(sock, bytes(12) + b"\x00\x00\x00\x63" + b"junk")
    assert isinstance(garbage, ErrorResponse)
