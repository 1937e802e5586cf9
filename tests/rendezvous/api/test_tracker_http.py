"""The HTTP BitTorrent tracker on a real aiohttp server, on the memory store and on Redis:
announce (compact, non-compact, peers6), stopped/completed events, seeders, scrape, and a
bencoded failure for bad input."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rendezvous.app import create_app
from rendezvous.bittorrent import bencode
from rendezvous.bittorrent.announce import parse_compact_peers
from rendezvous.settings import RendezvousSettings

INFO_HASH = bytes(range(20))


@pytest.fixture(params=["memory", "redis"])
async def tracker(request: pytest.FixtureRequest) -> AsyncIterator[TestClient[Any, Any]]:
    store = "memory" if request.param == "memory" else request.getfixturevalue("redis_url")
    settings = RendezvousSettings(store=store, secret="t", max_numwant=5, default_numwant=3)
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def query(peer_id: bytes, port: int, **extra: object) -> str:
    fields: dict[str, object] = {
        "info_hash": INFO_HASH,
        "peer_id": peer_id,
        "port": port,
        "uploaded": 0,
        "downloaded": 0,
        "left": 100,
        **extra,
    }
    return "&".join(
        f"{k}={quote_from_bytes(v) if isinstance(v, bytes) else v}" for k, v in fields.items()
    )


async def announce(client: TestClient[Any, Any], peer_id: bytes, port: int, **extra: object) -> Any:
    response = await client.get("/announce?" + query(peer_id, port, **extra))
    assert response.status == 200
    return bencode.decode(await response.read())


def peer(n: int) -> bytes:
    return b"-NK0001-" + n.to_bytes(12, "big")


async def test_announce_lists_the_other_peers(tracker: TestClient[Any, Any]) -> None:
    first = await announce(tracker, peer(1), 6881, event="started")
    assert first[b"peers"] == b""  # alone
    assert (first[b"interval"], first[b"min interval"]) == (1800, 60)
    second = await announce(tracker, peer(2), 6882, event="started")
    assert parse_compact_peers(second[b"peers"], 4) == [("127.0.0.1", 6881)]
    assert (second[b"complete"], second[b"incomplete"]) == (0, 2)
    # Non-compact: a list of dicts with the peer id.
    full = await announce(tracker, peer(3), 6883, compact=0)
    listed = {(p[b"ip"], p[b"port"], p[b"peer id"]) for p in full[b"peers"]}
    assert listed == {(b"127.0.0.1", 6881, peer(1)), (b"127.0.0.1", 6882, peer(2))}
    no_id = await announce(tracker, peer(3), 6883, compact=0, no_peer_id=1)
    assert all(b"peer id" not in p for p in no_id[b"peers"])


async def test_client_supplied_ip_is_not_trusted(tracker: TestClient[Any, Any]) -> None:
    await announce(tracker, peer(1), 6881, ip="198.51.100.9")
    answer = await announce(tracker, peer(2), 6882)
    assert parse_compact_peers(answer[b"peers"], 4) == [("127.0.0.1", 6881)]


async def test_numwant_is_capped(tracker: TestClient[Any, Any]) -> None:
    for n in range(10):
        await announce(tracker, peer(n), 7000 + n)
    default = await announce(tracker, peer(99), 7999)
    assert len(parse_compact_peers(default[b"peers"], 4)) == 3
    capped = await announce(tracker, peer(99), 7999, numwant=1000)
    assert len(parse_compact_peers(capped[b"peers"], 4)) == 5


async def test_events_seeders_and_scrape(tracker: TestClient[Any, Any]) -> None:
    await announce(tracker, peer(1), 6881, event="started")
    await announce(tracker, peer(2), 6882, event="started")
    done = await announce(tracker, peer(2), 6882, event="completed", left=0)
    assert (done[b"complete"], done[b"incomplete"]) == (1, 1)
    gone = await announce(tracker, peer(1), 6881, event="stopped")
    assert gone[b"peers"] == b""
    assert (gone[b"complete"], gone[b"incomplete"]) == (1, 0)
    other = os.urandom(20)
    response = await tracker.get(
        f"/scrape?info_hash={quote_from_bytes(INFO_HASH)}&info_hash={quote_from_bytes(other)}"
    )
    decoded: Any = bencode.decode(await response.read())
    files = decoded[b"files"]
    assert files[INFO_HASH] == {b"complete": 1, b"downloaded": 1, b"incomplete": 0}
    assert files[other] == {b"complete": 0, b"downloaded": 0, b"incomplete": 0}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/announce?" + query(peer(1), 6881, info_hash=b"abc"), b"info_hash"),
        ("/announce?" + query(peer(1), 0), b"port"),
        ("/announce?" + query(b"short", 6881), b"peer_id"),
        ("/announce?" + query(peer(1), 6881, left=-1), b"left"),
        ("/announce?" + query(peer(1), 6881, event="exploded"), b"event"),
        ("/scrape", b"full scrape is not supported"),
        ("/scrape?info_hash=xyz", b"info_hash"),
    ],
)
async def test_bad_requests_get_a_failure_reason(
    tracker: TestClient[Any, Any], path: str, reason: bytes
) -> None:
    response = await tracker.get(path)
    assert response.status == 200
    body: Any = bencode.decode(await response.read())
    assert set(body) == {b"failure reason"}
    assert reason in body[b"failure reason"]
    assert (await tracker.get("/v1/swarms/s")).status == 200  # still serving


async def test_torrents_and_v1_swarms_do_not_mix(tracker: TestClient[Any, Any]) -> None:
    await announce(tracker, peer(1), 6881)
    name = "bt:" + INFO_HASH.hex()
    listed = await (await tracker.get(f"/v1/swarms/{name}/peers")).json()
    assert listed == {"peers": [], "total": 0}


async def test_ipv6_peers_come_as_peers6() -> None:
    settings = RendezvousSettings(store="memory", secret="t")
    client = TestClient(TestServer(create_app(settings), host="::1"))
    await client.start_server()
    try:
        await announce(client, peer(1), 6881)
        answer = await announce(client, peer(2), 6882)
        assert answer[b"peers"] == b""
        assert parse_compact_peers(answer[b"peers6"], 6) == [("::1", 6881)]
    finally:
        await client.close()
