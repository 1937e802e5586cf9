"""The API port's front door and the lean signaling socket, on real sockets.

Everything that is not a valid ``/v1/ws`` upgrade reaches aiohttp with the bytes read so
far (pipelined requests, heads split byte by byte, invalid upgrades refused as aiohttp
refuses them); a valid upgrade is served by ``SignalingSocket``: its framing rules, pings,
closing handshake, liveness check and hello deadline, spoken to with raw frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.identity import WEBSOCKET_HELLO, Identity, b64encode
from rendezvous import keys
from rendezvous.front_door import read_upgrade
from rendezvous.settings import RendezvousSettings
from rendezvous.signaling.frames import Opcode, accept_key
from rendezvous.signaling.websocket import SignalingSocket
from tests.rendezvous.apputil import serving

Client = TestClient[Any, Any]
KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/v1/ws", *, extra: str = "", version: str = "13") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes, *, masked: bool = True, fin: bool = True) -> bytes:
    mask = os.urandom(4) if masked else b""
    size = len(payload)
    if size < 126:
        head = bytes(((0x80 if fin else 0) | opcode, (0x80 if masked else 0) | size))
    elif size < 65536:
        head = struct.pack(
            "!BBH", (0x80 if fin else 0) | opcode, (0x80 if masked else 0) | 126, size
        )
    else:
        head = struct.pack(
            "!BBQ", (0x80 if fin else 0) | opcode, (0x80 if masked else 0) | 127, size
        )
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


class Raw:
    """A raw TCP client of the API port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str], bytes]:
        """An HTTP response: status, headers (lower-case), body."""
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        size = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(size), 5) if size else b""
        return status, headers, body

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (which must be unmasked and whole)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert not second & 0x80, "a server frame is never masked"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        assert first & 0x80
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), 5)

    async def message(self) -> dict[str, Any]:
        """The next text message (ping frames skipped, unanswered)."""
        opcode, payload = await self.frame()
        while opcode == Opcode.PING:
            opcode, payload = await self.frame()
        assert opcode == Opcode.TEXT, (opcode, payload)
        decoded: dict[str, Any] = json.loads(payload)
        return decoded

    async def closed(self) -> bool:
        """True when the server closes the TCP connection within 5 s."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), 5) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    async def upgraded(self, data: bytes | None = None) -> dict[str, Any]:
        """Send the handshake (and ``data`` after it, in one write): the challenge."""
        await self.send(handshake() + (data or b""))
        status, headers, _ = await self.head()
        assert status == 101
        assert headers["sec-websocket-accept"] == accept_key(KEY)
        challenge = await self.message()
        assert challenge["type"] == "challenge"
        return challenge

    async def hello(self, identity: Identity) -> None:
        challenge = await self.upgraded()
        signature = identity.sign(challenge["challenge"].encode(), WEBSOCKET_HELLO)
        hello = {
            "type": "hello",
            "public_key": b64encode(identity.public_key),
            "signature": b64encode(signature),
        }
        await self.send(client_frame(Opcode.TEXT, json.dumps(hello).encode()))
        assert await self.message() == {"type": "welcome", "peer_id": identity.peer_id}

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with serving(RendezvousSettings(store="memory", secret="s", rate_limit=0)) as served:
        yield served


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (polled)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def raw(client: Client) -> Raw:
    return Raw(*await asyncio.open_connection(client.host, client.port))


async def test_valid_upgrades_are_served_lean(client: Client) -> None:
    ws = await client.ws_connect("/v1/ws")
    challenge = json.loads((await ws.receive()).data)
    identity = Identity.generate()
    signature = identity.sign(challenge["challenge"].encode(), WEBSOCKET_HELLO)
    await ws.send_json(
        {
            "type": "hello",
            "public_key": b64encode(identity.public_key),
            "signature": b64encode(signature),
        }
    )
    assert json.loads((await ws.receive()).data)["type"] == "welcome"
    connection = client.app[keys.HUB].local[identity.peer_id]
    assert isinstance(connection.ws, SignalingSocket)
    metrics = await (await client.get("/metrics")).text()
    assert 'natkit_rendezvous_requests_total{route="/v1/ws",status="101"} 1.0' in metrics
    await ws.close()


async def test_everything_else_reaches_aiohttp(client: Client) -> None:
    conn = await raw(client)
    try:
        # Pipelined requests on one keep-alive connection, answered in order.
        await conn.send(
            b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        assert (await conn.head())[0] == 200
        assert (await conn.head())[0] == 404
        # A WebSocket upgrade after another request is aiohttp's too (it owns the
        # connection now), and served by its route.
        await conn.send(handshake())
        assert (await conn.head())[0] == 101
        assert (await conn.frame())[0] == Opcode.TEXT
    finally:
        conn.close()
    # A head that comes byte by byte, looking like /v1/ws until it is not.
    conn = await raw(client)
    try:
        for byte in b"GET /v1/wsx HTTP/1.1\r\nHost: t\r\n\r\n":
            await conn.send(bytes((byte,)))
        status, _, body = await conn.head()
        assert status == 404
        assert json.loads(body)["error"]["code"] == "not_found"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /v1/ws HTTP/1.1\r\nHost: t\r\n\r\n",  # no upgrade at all
        handshake(version="12"),
        handshake().replace(KEY.encode(), b"not-a-key"),
    ],
    ids=["plain GET", "version 12", "bad key"],
)
async def test_invalid_upgrades_are_refused_by_aiohttp(client: Client, request_head: bytes) -> None:
    conn = await raw(client)
    try:
        for piece in (request_head[:7], request_head[7:]):  # the decision spans two reads
            await conn.send(piece)
            await asyncio.sleep(0.01)
        status, _, body = await conn.head()
        assert status in (400, 426)
        assert "error" in json.loads(body)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (client_frame(Opcode.TEXT, b"{}", masked=False), 1002),
        (client_frame(Opcode.TEXT, b"\xff\xfe"), 1007),
        (client_frame(Opcode.BINARY, bytes(70_000)), 1009),
        (client_frame(Opcode.PING, b"x", fin=False), 1002),
        (client_frame(0x3, b""), 1002),
    ],
    ids=["unmasked", "not utf-8", "too big", "fragmented ping", "reserved opcode"],
)
async def test_framing_faults_close_with_their_code(
    client: Client, bad_frame: bytes, code: int
) -> None:
    conn = await raw(client)
    try:
        await conn.hello(Identity.generate())
        await conn.send(bad_frame)
        opcode, payload = await conn.frame()
        while opcode in (Opcode.TEXT, Opcode.PING):  # pings may come first
            opcode, payload = await conn.frame()
        assert opcode == Opcode.CLOSE
        assert struct.unpack("!H", payload[:2])[0] == code
        assert await conn.closed()
    finally:
        conn.close()
    assert await until(lambda: not client.app[keys.HUB].local)  # left the hub


async def test_pings_pongs_and_the_closing_handshake(client: Client) -> None:
    conn = await raw(client)
    try:
        ping = client_frame(Opcode.PING, b"are you there")
        await conn.upgraded(ping)  # a frame in the same packet as the head
        assert await conn.frame() == (Opcode.PONG, b"are you there")
        await conn.send(client_frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"bye"))
        assert await conn.frame() == (Opcode.CLOSE, struct.pack("!H", 1000))  # echoed
        assert await conn.closed()  # and the server closes TCP first
    finally:
        conn.close()


async def test_a_silent_socket_is_dropped_and_a_live_one_kept() -> None:
    settings = RendezvousSettings(store="memory", secret="s", rate_limit=0, ping_interval=0.2)
    async with serving(settings) as client:
        silent, alive = Identity.generate(), Identity.generate()
        conn = await raw(client)
        await conn.hello(silent)  # and then never answers anything
        ws = await client.ws_connect("/v1/ws")  # aiohttp's client answers ping frames
        challenge = json.loads((await ws.receive()).data)
        signature = alive.sign(challenge["challenge"].encode(), WEBSOCKET_HELLO)
        await ws.send_json(
            {
                "type": "hello",
                "public_key": b64encode(alive.public_key),
                "signature": b64encode(signature),
            }
        )
        received: list[aiohttp.WSMessage] = []

        async def read() -> None:  # aiohttp's client answers ping frames as it reads
            while True:
                received.append(await ws.receive())

        reading = asyncio.ensure_future(read())
        hub = client.app[keys.HUB]
        assert await until(lambda: silent.peer_id not in hub.local)
        assert alive.peer_id in hub.local
        conn.close()
        await asyncio.sleep(0.6)  # three more intervals, and still there
        assert alive.peer_id in hub.local
        assert [m.type for m in received] == [aiohttp.WSMsgType.TEXT] * len(received)
        reading.cancel()
        await ws.close()


async def test_no_hello_in_time_is_refused(client: Client) -> None:
    client.app[keys.SIGNALING].hello_timeout = 0.2
    conn = await raw(client)
    try:
        await conn.upgraded()
        error = await conn.message()
        assert (error["code"], error["message"]) == ("unauthenticated", "no hello within 0.2 s")
        opcode, payload = await conn.frame()
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (Opcode.CLOSE, 4401)
        await conn.send(client_frame(Opcode.CLOSE, payload[:2]))
        assert await conn.closed()
    finally:
        conn.close()
    assert await until(lambda: not client.app[keys.SIGNALING].waiting)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_upgrades_are_rate_limited(request: pytest.FixtureRequest, backend: str) -> None:
    store = "memory" if backend == "memory" else request.getfixturevalue("redis_url")
    settings = RendezvousSettings(store=store, secret="s", rate_limit=0.01, rate_burst=1)
    async with serving(settings) as client:
        first = await raw(client)
        await first.upgraded()
        second = await raw(client)
        try:
            await second.send(handshake())
            status, headers, body = await second.head()
            assert status == 429
            assert headers["retry-after"] == "100"
            assert json.loads(body)["error"]["code"] == "rate_limited"
            assert await second.closed()
        finally:
            first.close()
            second.close()


async def test_shutdown_closes_sockets_before_their_hello() -> None:
    async with serving(RendezvousSettings(store="memory", secret="s", rate_limit=0)) as client:
        conn = await raw(client)
        await conn.upgraded()
        closing = asyncio.ensure_future(client.server.close())
        opcode, payload = await conn.frame()
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (Opcode.CLOSE, 1001)
        await conn.send(client_frame(Opcode.CLOSE, payload[:2]))  # the handshake's answer
        assert await conn.closed()
        await asyncio.wait_for(closing, 2)  # shutdown waited for it, not for a timeout
        conn.close()


@given(st.binary(max_size=400))
def test_read_upgrade_takes_any_bytes(head: bytes) -> None:
    parsed = read_upgrade(head)
    if parsed is not None:
        upgrade, accept = parsed
        assert upgrade.header(b"sec-websocket-key") is not None
        assert len(base64.b64decode(accept)) == 20


@given(
    st.lists(
        st.sampled_from(
            [
                b"Upgrade: websocket\r\n",
                b"Connection: Upgrade\r\n",
                b"Host: x\r\n",
                b"Sec-WebSocket-Version: 13\r\n",
                f"Sec-WebSocket-Key: {KEY}\r\n".encode(),
            ]
        ),
        max_size=8,
    )
)
def test_read_upgrade_needs_every_header_once(lines: list[bytes]) -> None:
    head = b"GET /v1/ws HTTP/1.1\r\n" + b"".join(lines) + b"\r\n"
    complete = len(lines) == 5 and len(set(lines)) == 5
    assert (read_upgrade(head) is not None) == complete
