"""The API port's front door: signaling WebSockets on the lean listener, the rest to aiohttp.

Every connection to the API port is first read here, up to the end of its first request
head. A valid WebSocket opening handshake for ``/v1/ws`` (RFC 6455 §4.2.1: ``GET``,
HTTP/1.1, ``Host``, ``Upgrade: websocket``, ``Connection: Upgrade``, a 16-byte
``Sec-WebSocket-Key``, ``Sec-WebSocket-Version: 13``) is admitted as the access
middleware would (credentials, namespace, rate limit: ``rendezvous.api.access``),
answered ``101`` here and carried on by ``SignalingSocket`` -- an idle socket then costs a
few KiB instead of aiohttp's request, parser, reader and handler task. Anything else --
every other request, and upgrade requests that are not valid ones, which aiohttp then
refuses as it always did -- is handed to aiohttp's request handler with the bytes read so
far, and aiohttp serves that connection from then on.

One port serves both, so the ingress, the Service and the clients' URLs stay as they are.
``FrontDoorSite`` is the aiohttp site that listens this way (``rendezvous.app.serve``).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from typing import Final, cast
from urllib.parse import parse_qsl

import httptools
from aiohttp import web

from rendezvous import keys
from rendezvous.api.access import (
    WEBSOCKET_PATH,
    Admission,
    bucket_of,
    charge,
    identify,
    rate_limited,
)
from rendezvous.api.errors import ApiError, error_http, store_unavailable
from rendezvous.api.limits import canonical_ip
from rendezvous.http_tracker import TRACKER_REQUESTS, HttpTrackerProtocol, begins
from rendezvous.signaling.frames import FrameError, accept_key
from rendezvous.signaling.websocket import SignalingSocket
from rendezvous.store import StoreError
from rendezvous.store.memory import MemoryStore

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192  # beyond this without a whole head: aiohttp's to refuse
HEAD_TIMEOUT: Final = 30.0  # a head not finished by then is aiohttp's to time out
_WEBSOCKET_REQUEST: Final = (b"GET " + WEBSOCKET_PATH.encode(),)
_SWITCHING: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %s\r\n\r\n"
)


class Upgrade:
    """The parts of a WebSocket opening handshake the server reads (httptools callbacks)."""

    __slots__ = ("headers", "query", "url")

    def __init__(self) -> None:
        self.url = b""
        self.query = b""  # the URL's, once read_upgrade has parsed it
        self.headers: dict[bytes, bytes | None] = {}  # lower-case name -> value; None: twice

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers[name] = None if name in self.headers else value

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


def read_upgrade(head: bytes) -> tuple[Upgrade, str] | None:
    """(the handshake, its ``Sec-WebSocket-Accept``) if ``head`` -- one request head,
    through its blank line -- is a valid opening handshake for ``/v1/ws``; else ``None``."""
    upgrade = Upgrade()
    parser = httptools.HttpRequestParser(upgrade)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # the head is whole: what follows it is the new protocol's
    except httptools.HttpParserError:
        return None
    if parser.get_method() != b"GET" or parser.get_http_version() != "1.1":
        return None
    try:
        url = httptools.parse_url(upgrade.url)
    except httptools.HttpParserInvalidURLError:
        return None
    path, upgrade.query = url.path, url.query or b""
    headers = upgrade.headers
    upgrade_header = headers.get(b"upgrade")
    connection = headers.get(b"connection")
    key = headers.get(b"sec-websocket-key")
    if (
        path != WEBSOCKET_PATH.encode()
        or not headers.get(b"host")
        or upgrade_header is None
        or b"websocket" not in _tokens(upgrade_header)
        or connection is None
        or b"upgrade" not in _tokens(connection)
        or headers.get(b"sec-websocket-version") != b"13"
        or key is None
    ):
        return None
    try:
        accept = accept_key(key.decode("latin-1").strip())
    except (FrameError, binascii.Error):
        return None
    return upgrade, accept


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


class FrontDoor:
    """The protocol factory of the API port (one per listening socket)."""

    __slots__ = ("app", "gate", "server", "trackers")

    def __init__(self, server: web.Server, app: web.Application) -> None:
        """``app`` is started: its store and signaling exist."""
        self.server = server
        self.app = app
        self.trackers: set[HttpTrackerProtocol] = set()  # tracker connections served lean
        self.gate = TrackerGate(self)

    def __call__(self) -> Entrance:
        return Entrance(self)

    def admit(self, upgrade: Upgrade) -> Admission:
        """Who the upgrade acts as (``ApiError``: refused)."""
        query = upgrade.query.decode("latin-1")
        token = next((v for k, v in parse_qsl(query) if k == "token"), None)
        return identify(self.app, WEBSOCKET_PATH, upgrade.header(b"authorization"), token)

    def count(self, status: int) -> None:
        self.app[keys.METRICS].requests.labels(WEBSOCKET_PATH, str(status)).inc()

    def tracker(self) -> HttpTrackerProtocol:
        """The lean HTTP tracker for one connection, behind the API port's access rules."""
        app = self.app
        return HttpTrackerProtocol(
            app[keys.TRACKER],
            app[keys.STORE],
            app[keys.CLOCK],
            self.trackers,
            app[keys.METRICS].trackers["http"],
            gate=self.gate,
        )

    def hand_off(self, transport: asyncio.Transport, data: bytes, *, eof: bool = False) -> None:
        """aiohttp serves ``transport`` from here on, starting with ``data``."""
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
        if eof:
            handler.eof_received()


class TrackerGate:
    """The API port's access rules around the lean tracker (``http_tracker.Gate``): what
    the access middleware does for ``/announce`` and ``/scrape`` through aiohttp --
    credentials, ``--no-public``, the rate limit -- with the same answers."""

    __slots__ = ("anonymous", "door", "local")

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        store = door.app[keys.STORE]
        self.local = store if isinstance(store, MemoryStore) else None
        # What a request without credentials gets is settled by the settings alone.
        self.anonymous: Admission | ApiError
        try:
            self.anonymous = identify(door.app, "/announce", None, None)
        except ApiError as exc:
            self.anonymous = exc

    def admit_now(
        self, authorization: str | None, remote: str | None, close: bool
    ) -> bytes | Admission | None:
        app = self.door.app
        if authorization is None:
            admission = self.anonymous
        else:
            try:
                admission = identify(app, "/announce", authorization, None)
            except ApiError as exc:
                admission = exc
        if isinstance(admission, ApiError):
            return error_http(admission, close=close)
        if admission.rate <= 0:
            return None
        if self.local is None:
            return admission  # the store round trip is admit's
        bucket = bucket_of(admission, lambda: canonical_ip(remote or ""))
        now = app[keys.CLOCK]()
        if self.local.take_now(bucket, rate=admission.rate, burst=admission.burst, now=now):
            return None
        return error_http(rate_limited(admission), close=close)

    async def admit(self, admission: Admission, remote: str | None, close: bool) -> bytes | None:
        app = self.door.app
        try:
            await charge(app, admission, lambda: canonical_ip(remote or ""))
        except ApiError as exc:
            return error_http(exc, close=close)
        except StoreError as exc:
            log.warning("store unavailable: %s", exc)
            app[keys.METRICS].store_errors.inc()
            return error_http(store_unavailable(), close=close)
        return None

    def hand_off(self, transport: asyncio.Transport, data: bytes) -> None:
        self.door.hand_off(transport, data)


class Entrance(asyncio.Protocol):
    """One connection, until it is known to be a signaling socket or aiohttp's."""

    __slots__ = ("_buffer", "_decided", "_door", "_eof", "_timer", "_transport")

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._buffer = bytearray()  # the head so far; once decided, what followed it
        self._decided = False  # an upgrade, waiting for its rate limit
        self._eof = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._hand_off)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._decided or not self._buffer:
            return None  # nothing was asked, or a WebSocket client left: close
        self._hand_off()
        return True  # aiohttp's handler has been told, and closes when done

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._decided:
            return  # frames sent before the 101: the socket reads them once it opens
        # The first bytes decide, but for a WebSocket upgrade (its whole head).
        tracker = begins(buffer, TRACKER_REQUESTS)
        if tracker:
            self._to_tracker()
            return
        websocket = begins(buffer, _WEBSOCKET_REQUEST)
        if websocket is None or tracker is None:
            return
        if not websocket:
            self._hand_off()
            return
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_off()
            return
        head_end = end + 4
        parsed = read_upgrade(bytes(buffer[:head_end]))
        if parsed is None:
            self._hand_off()
            return
        upgrade, accept = parsed
        del buffer[:head_end]
        self._settle()
        self._decided = True
        door = self._door
        try:
            admission = door.admit(upgrade)
        except ApiError as exc:
            self._refuse(exc)
            return
        if admission.rate <= 0:
            self._open(admission, accept)
            return
        transport = self._transport
        if transport is not None:
            transport.pause_reading()  # a client waits for the 101 before it sends frames
        door.app[keys.SIGNALING].spawn(self._charge(admission, accept))

    async def _charge(self, admission: Admission, accept: str) -> None:
        door, transport = self._door, self._transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else ""
        try:
            await charge(door.app, admission, lambda: canonical_ip(remote))
        except ApiError as exc:
            self._refuse(exc)
            return
        except StoreError as exc:
            log.warning("store unavailable: %s", exc)
            door.app[keys.METRICS].store_errors.inc()
            self._refuse(store_unavailable())
            return
        if self._transport is not None:
            self._transport.resume_reading()
            self._open(admission, accept)

    def _open(self, admission: Admission, accept: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        door = self._door
        transport.write(_SWITCHING % accept.encode())
        socket = SignalingSocket(door.app[keys.SIGNALING], admission.who)
        transport.set_protocol(socket)
        socket.connection_made(transport)
        door.count(101)
        if self._buffer:
            socket.data_received(bytes(self._buffer))

    def _to_tracker(self) -> None:
        """The lean HTTP tracker serves this connection (until a request that is not the
        tracker's, which it hands to aiohttp)."""
        transport = self._transport
        self._settle()
        if transport is None or transport.is_closing():
            return
        tracker = self._door.tracker()
        transport.set_protocol(tracker)
        tracker.connection_made(transport)
        tracker.data_received(bytes(self._buffer))

    def _refuse(self, error: ApiError) -> None:
        transport = self._transport
        self._door.count(error.status)
        if transport is not None and not transport.is_closing():
            transport.write(error_http(error, close=True))
            transport.close()

    def _hand_off(self) -> None:
        """aiohttp serves this connection from here on, starting with what was read."""
        transport = self._transport
        self._settle()
        if transport is None or transport.is_closing():
            return
        self._door.hand_off(transport, bytes(self._buffer), eof=self._eof)
        self._buffer.clear()

    def _settle(self) -> None:
        """A decision is made: no more head timeout."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class FrontDoorSite(web.SockSite):
    """aiohttp's site on a listening socket, each connection through the front door."""

    __slots__ = ("_door",)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        # SockSite's own start would hand connections straight to aiohttp's server.
        runner = cast(web.AppRunner, self._runner)
        server = runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        self._door = FrontDoor(server, runner.app)
        self._server = await asyncio.get_running_loop().create_server(
            self._door, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )

    async def stop(self) -> None:
        """Stop listening, and close the tracker connections served lean (aiohttp closes
        its own; the app's shutdown closes the signaling sockets)."""
        await super().stop()
        for tracker in list(self._door.trackers):
            if tracker.transport is not None:
                tracker.transport.close()
