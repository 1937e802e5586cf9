"""The lean HTTP tracker, on a port of its own (``--http-tracker``) and on the API port
(through the front door): real sockets on memory and Redis -- keep-alive and pipelined
announces answered in order, HTTP/1.0 and ``Connection: close``, and on its own port every
refusal (404, 405, bodies, malformed or oversized heads, upgrades) -- then the protocol
fuzzed with arbitrary bytes, on either port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous import keys
from rendezvous.bittorrent import bencode
from rendezvous.bittorrent.announce import parse_compact_peers
from rendezvous.bittorrent.udp import ConnectRequest
from rendezvous.http_tracker import MAX_HEAD, HttpTracker, HttpTrackerProtocol
from rendezvous.metrics import TrackerCounts
from rendezvous.settings import RendezvousSettings
from rendezvous.store.memory import MemoryStore
from tests.rendezvous.apputil import address, serving, store_url

INFO_HASH = os.urandom(20)


def announce_path(peer: bytes, port: int, info_hash: bytes = INFO_HASH) -> str:
    query = f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id="
    query += quote_from_bytes(peer, safe="") + f"&port={port}&uploaded=0&downloaded=0&left=5"
    return "/announce?" + query


def decoded(body: bytes) -> Any:
    return bencode.decode(body)


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


@pytest.fixture(params=["memory", "redis"])
async def own_port(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    """The address of ``--http-tracker``, on the store the test asks for."""
    store = store_url(request, request.param)
    settings = RendezvousSettings(store=store, secret="s", http_tracker="127.0.0.1:0")
    async with serving(settings) as client:
        yield client.app[keys.HTTP_TRACKER].sockname


@pytest.fixture(params=[(b, p) for b in ("memory", "redis") for p in ("own", "api")], ids=str)
async def tracker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    """The address of the tracker, on its own port or the API port."""
    backend, port = request.param
    store = store_url(request, backend)
    settings = RendezvousSettings(store=store, secret="s", http_tracker="127.0.0.1:0")
    async with serving(settings) as client:
        if port == "own":
            yield client.app[keys.HTTP_TRACKER].sockname
        else:
            yield address(client)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(headers["Content-Length"]))
        return status, headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""


async def connect(address: tuple[str, int]) -> Connection:
    return Connection(*await asyncio.open_connection(*address))


async def test_pipelined_announces_are_answered_in_order(tracker: tuple[str, int]) -> None:
    conn = await connect(tracker)
    conn.writer.write(get(announce_path(b"a" * 20, 6881)) + get(announce_path(b"b" * 20, 6882)))
    first, second = await conn.response(), await conn.response()
    assert first[0] == second[0] == 200
    assert decoded(first[2])[b"peers"] == b""
    assert parse_compact_peers(decoded(second[2])[b"peers"], 4) == [("127.0.0.1", 6881)]
    # Keep-alive: the same connection serves a scrape next.
    scrape = "/scrape?info_hash=" + quote_from_bytes(INFO_HASH, safe="")
    conn.writer.write(get(scrape))
    _, _, body = await conn.response()
    assert decoded(body)[b"files"][INFO_HASH][b"incomplete"] == 2
    conn.writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (get("/nothing"), 404, b"not a tracker path"),
        (b"POST /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, b"use GET"),
    ],
)
async def test_wrong_paths_and_methods_keep_the_connection(
    own_port: tuple[str, int], request_bytes: bytes, status: int, message: bytes
) -> None:
    conn = await connect(own_port)
    conn.writer.write(request_bytes)
    got, headers, body = await conn.response()
    assert got == status
    assert message in decoded(body)[b"failure reason"]
    if status == 405:
        assert headers["Allow"] == "GET"
    conn.writer.write(get(announce_path(b"c" * 20, 7000)))
    assert (await conn.response())[0] == 200
    conn.writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400, b"no body"),
        (b"GARBAGE\r\n\r\n", 400, b"malformed request"),
        (get("/announce", "X-Big: " + "x" * (MAX_HEAD + 10) + "\r\n"), 431, b"at most"),
        (get("/announce", "Connection: Upgrade\r\nUpgrade: websocket\r\n"), 400, b"upgrade"),
    ],
)
async def test_refusals_close_the_connection(
    own_port: tuple[str, int], request_bytes: bytes, status: int, message: bytes
) -> None:
    conn = await connect(own_port)
    conn.writer.write(request_bytes + get(announce_path(b"d" * 20, 7001)))
    got, headers, body = await conn.response()
    assert got == status
    assert headers["Connection"] == "close"
    assert message in decoded(body)[b"failure reason"]
    assert await conn.closed()  # the request after it is not answered


@pytest.mark.parametrize(("version", "extra"), [("1.0", ""), ("1.1", "Connection: close\r\n")])
async def test_connection_close(tracker: tuple[str, int], version: str, extra: str) -> None:
    conn = await connect(tracker)
    conn.writer.write(get(announce_path(b"e" * 20, 7002), extra, version))
    status, headers, _ = await conn.response()
    assert status == 200
    assert headers["Connection"] == "close"
    assert await conn.closed()


async def test_bad_announces_get_a_failure_reason(tracker: tuple[str, int]) -> None:
    conn = await connect(tracker)
    conn.writer.write(get("/announce?info_hash=short&peer_id=x&port=1"))
    status, _, body = await conn.response()
    assert status == 200
    assert decoded(body)[b"failure reason"] == b"missing required field: uploaded"
    conn.writer.close()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


valid = get(announce_path(b"f" * 20, 7003))
chunks = st.lists(
    st.binary(max_size=200)
    | st.just(valid)
    | st.builds(lambda cut: valid[:cut], st.integers(0, len(valid)))
    | st.sampled_from([b"\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"]),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(chunks)
def test_any_bytes_get_http_answers_or_a_close(parts: list[bytes]) -> None:
    async def feed() -> FakeTransport:
        transport = FakeTransport()
        protocol = HttpTrackerProtocol(
            HttpTracker(RendezvousSettings()), MemoryStore(), lambda: 1e9, set(), TrackerCounts()
        )
        protocol.connection_made(transport)
        for part in parts:
            if transport.closed:
                break
            protocol.data_received(part)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(feed())
    assert_whole_responses(bytes(transport.written))


def assert_whole_responses(written: bytes) -> None:
    """``written`` is whole HTTP responses, one after another."""
    while written:
        assert written.startswith(b"HTTP/1.1 ")
        head, _, rest = written.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert len(rest) >= length
        written = rest[length:]


async def test_both_listeners_are_counted_in_metrics() -> None:
    settings = RendezvousSettings(secret="s", http_tracker="127.0.0.1:0", udp_tracker="127.0.0.1:0")
    async with serving(settings) as client:
        conn = await connect(client.app[keys.HTTP_TRACKER].sockname)
        conn.writer.write(get(announce_path(b"g" * 20, 7004)) + get("/elsewhere"))
        assert [(await conn.response())[0] for _ in range(2)] == [200, 404]
        conn.writer.close()
        udp_port = client.app[keys.UDP_TRACKER].sockname[1]
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.setblocking(False)
            udp.connect(("127.0.0.1", udp_port))
            for payload in (ConnectRequest(5).encode(), b"tiny", ConnectRequest(6).encode()):
                await loop.sock_sendall(udp, payload)  # "tiny": no transaction id, dropped
            for _ in range(2):
                await asyncio.wait_for(loop.sock_recv(udp, 100), 3)
        text = await (await client.get("/metrics")).text()
    expected = {
        ("http", "announce"): 1.0,
        ("http", "error"): 1.0,
        ("udp", "connect"): 2.0,
        ("udp", "dropped"): 1.0,
        ("udp", "announce"): 0.0,
    }
    for (transport, kind), value in expected.items():
        line = f'natkit_rendezvous_tracker_requests_total{{kind="{kind}",transport="{transport}"}}'
        assert f"{line} {value}" in text, line


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    async def run() -> list[bool]:
        transport = FakeTransport()
        protocol = HttpTrackerProtocol(
            HttpTracker(RendezvousSettings()), MemoryStore(), lambda: 1e9, set(), TrackerCounts()
        )
        protocol.connection_made(transport)
        seen = [transport.reading]
        protocol.pause_writing()  # what asyncio calls past the write buffer's high water
        seen.append(transport.reading)
        protocol.resume_writing()
        seen.append(transport.reading)
        protocol.connection_lost(None)
        return seen

    assert asyncio.run(run()) == [True, False, True]


# ---- the API port: tracker requests served lean, the rest by aiohttp


@pytest.fixture(params=["memory", "redis"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    settings = RendezvousSettings(store=store_url(request, request.param), secret="s", rate_limit=0)
    async with serving(settings) as client:
        yield client


async def test_the_api_port_hands_other_requests_to_aiohttp(api: Any) -> None:
    counts = api.app[keys.METRICS].trackers["http"]
    conn = await connect(address(api))
    # Pipelined: the lean tracker answers the first, then gives the connection (and the
    # rest of what was sent) to aiohttp, whose routes answer the others.
    conn.writer.write(
        get(announce_path(b"h" * 20, 7005)) + get("/livez") + get(announce_path(b"i" * 20, 7006))
    )
    first, second, third = [await conn.response() for _ in range(3)]
    assert first[0] == second[0] == third[0] == 200
    assert decoded(first[2])[b"peers"] == b""
    assert second[1]["Content-Type"].startswith("application/json")
    assert parse_compact_peers(decoded(third[2])[b"peers"], 4) == [("127.0.0.1", 7005)]
    assert counts.announces == 1  # the lean tracker's; aiohttp's route answered the third
    conn.writer.close()
    # A head that comes byte by byte is still the tracker's.
    conn = await connect(address(api))
    for byte in get(announce_path(b"j" * 20, 7007)):
        conn.writer.write(bytes((byte,)))
        await conn.writer.drain()
    assert (await conn.response())[0] == 200
    assert counts.announces == 2
    # A tracker request with a body is refused, and the connection closed.
    conn.writer.write(
        b"GET /announce?x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + get("/livez")
    )
    status, headers, body = await conn.response()
    assert (status, headers["Connection"]) == (400, "close")
    assert b"no body" in decoded(body)[b"failure reason"]
    assert await conn.closed()


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_api_port_tracker_keeps_the_access_rules(
    request: pytest.FixtureRequest, backend: str
) -> None:
    store = store_url(request, backend)
    limited = RendezvousSettings(store=store, secret="s", rate_limit=0.01, rate_burst=1)
    async with serving(limited) as client:
        conn = await connect(address(client))
        conn.writer.write(get(announce_path(b"k" * 20, 7008)) + get(announce_path(b"l" * 20, 7009)))
        first, second = await conn.response(), await conn.response()
        assert first[0] == 200
        assert (second[0], second[1]["Retry-After"]) == (429, "100")  # as aiohttp answers
        assert json.loads(second[2])["error"]["code"] == "rate_limited"
        conn.writer.close()
    private = RendezvousSettings(store=store, secret="s", public=False)
    async with serving(private) as client:
        conn = await connect(address(client))
        conn.writer.write(get(announce_path(b"m" * 20, 7010), "Authorization: Bearer nope\r\n"))
        status, headers, body = await conn.response()
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer error="invalid_token"')
        assert json.loads(body)["error"]["code"] == "unauthenticated"
        conn.writer.close()


class RecordingGate:
    """The API port's part, as the fuzz test sees it: every request admitted, and what
    is handed to aiohttp recorded."""

    def __init__(self) -> None:
        self.handed: list[bytes] = []

    def admit_now(self, authorization: str | None, remote: str | None, close: bool) -> None:
        return None

    async def admit(self, admission: Any, remote: str | None, close: bool) -> None:
        return None

    def hand_off(self, transport: asyncio.Transport, data: bytes) -> None:
        self.handed.append(data)


@settings(max_examples=200, deadline=None)
@given(chunks)
def test_on_the_api_port_any_bytes_are_answered_or_handed_on(parts: list[bytes]) -> None:
    gate = RecordingGate()

    fed: list[bytes] = []

    async def feed() -> FakeTransport:
        transport = FakeTransport()
        protocol = HttpTrackerProtocol(
            HttpTracker(RendezvousSettings()),
            MemoryStore(),
            lambda: 1e9,
            set(),
            TrackerCounts(),
            gate=gate,
        )
        protocol.connection_made(transport)
        for part in parts:
            if transport.closed or gate.handed:
                break
            fed.append(part)
            protocol.data_received(part)
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(feed())
    assert_whole_responses(bytes(transport.written))
    assert len(gate.handed) <= 1
    if gate.handed:  # aiohttp got the rest of the stream, from a request that is not ours
        handed = gate.handed[0]
        assert handed
        assert b"".join(fed).endswith(handed)
        ours = [p + c for p in (b"GET /announce", b"GET /scrape") for c in (b" ", b"?")]
        assert not handed.startswith(tuple(ours))
        assert not transport.closed
