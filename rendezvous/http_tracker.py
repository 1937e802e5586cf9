"""The BitTorrent HTTP tracker: its core, and a listener of its own.

``HttpTracker`` is the core both front ends share: from a raw query string and the
client's address it makes either a finished answer (a bencoded ``failure reason``, which
every client shows its user) or the store call to run, and turns the store's result into
the bencoded answer. ``rendezvous.api.tracker`` serves it on the API port through aiohttp.

``open_http_tracker`` serves it on a port of its own (``--http-tracker HOST:PORT``, as
opentracker serves ``:6969``): aiohttp's web stack costs about 30 µs per request before
any handler runs, more than a whole announce, and a tracker needs none of it. This
listener speaks just enough HTTP/1.1, with ``httptools`` (the C parser uvicorn uses):

* ``GET`` of ``/announce`` and ``/scrape`` (anything else: 404, other methods: 405);
* keep-alive and pipelining (answers in request order), ``Connection: close`` and
  HTTP/1.0 honoured; a client that does not read its answers is not read from until it
  does (the write buffer's high-water mark);
* no bodies: a request with one gets 400 and the connection closes, as does anything
  unparsable; a request head over ``MAX_HEAD`` bytes gets 431;
* a connection idle for ``IDLE_TIMEOUT`` seconds is closed; at most ``MAX_PIPELINED``
  answers wait for a networked store before reading pauses.

On the in-process store an announce is answered inside ``data_received`` (no task); on
Redis each runs as a task, and answers still leave in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol, cast

import httptools

from rendezvous import torrents
from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.announce import (
    AnnounceParams,
    AnnounceResponse,
    encode_compact_response,
    encode_scrape,
    failure,
    parse_announce,
    parse_scrape,
    quick_announce,
)
from rendezvous.metrics import TrackerCounts
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, Store, StoreError, SwarmStats
from rendezvous.store.memory import MemoryStore

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192  # request line + headers
MAX_PIPELINED: Final = 32
IDLE_TIMEOUT: Final = 60.0
STORE_DOWN: Final = "tracker store unavailable, retry later"


class HttpTracker:
    """What ``/announce`` and ``/scrape`` answer, without HTTP."""

    def __init__(self, settings: RendezvousSettings) -> None:
        self.settings = settings
        self.planner = torrents.Planner(settings)

    def announce_call(
        self, query: bytes | str, remote: str | None
    ) -> bytes | tuple[AnnounceParams, torrents.StoreAnnounce]:
        """A finished answer (a failure), or the announce and its store call."""
        params = quick_announce(query) if isinstance(query, bytes) else None
        if params is None:  # anything unusual: the full parser, which names any problem
            try:
                params = AnnounceParams.of(parse_announce(query))
            except TrackerError as exc:
                return failure(str(exc))
        address = torrents.source_address(remote)
        if address is None:
            return failure("cannot tell your address")
        call = self.planner.plan(
            params.info_hash,
            params.peer_id,
            address,
            params.port,
            params.left,
            params.event,
            params.numwant,
            params.compact,
        )
        return params, call

    def answer_announce(self, request: AnnounceParams, announced: Announced) -> bytes:
        if announced.full:
            return failure("this torrent has too many peers")
        compact = request.compact
        stats = announced.stats
        if compact:
            compact4, compact6 = torrents.compact_peers(announced)
            settings = self.settings
            return encode_compact_response(
                settings.announce_interval,
                settings.announce_min_interval,
                stats.seeders,
                stats.leechers,
                compact4,
                compact6,
            )
        response = AnnounceResponse(
            interval=self.settings.announce_interval,
            min_interval=self.settings.announce_min_interval,
            complete=stats.seeders,
            incomplete=stats.leechers,
            peers=tuple(map(torrents.tracker_peer, announced.peers)),  # with their ids
        )
        return response.encode(compact=compact, no_peer_id=request.no_peer_id)

    @staticmethod
    def scrape_hashes(query: bytes | str) -> bytes | tuple[bytes, ...]:
        """A finished answer (a failure), or the info_hashes to look up."""
        try:
            hashes = parse_scrape(query)
        except TrackerError as exc:
            return failure(str(exc))
        if not hashes:
            return failure("full scrape is not supported: name the info_hash")
        return hashes

    @staticmethod
    def answer_scrape(hashes: tuple[bytes, ...], stats: list[SwarmStats]) -> bytes:
        entries = map(torrents.scrape_entry, stats)
        return encode_scrape(dict(zip(hashes, entries, strict=True)))


# --------------------------------------------------------------------------- the listener

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_ROUTES: Final = {b"/announce": "announce", b"/scrape": "scrape"}
TRACKER_REQUESTS: Final = (b"GET /announce", b"GET /scrape")
_ANNOUNCE: Final = b"GET /announce?"  # the request line nearly every request has


def begins(buffer: bytes | bytearray, prefixes: tuple[bytes, ...]) -> bool | None:
    """Whether ``buffer`` begins a request line ``prefix`` (then a space or ``?``) for
    one of ``prefixes``; ``None``: too few bytes yet to tell."""
    undecided = False
    for prefix in prefixes:
        size = len(prefix)
        if len(buffer) <= size:
            undecided = undecided or prefix.startswith(buffer)
        elif buffer.startswith(prefix) and buffer[size] in b" ?":
            return True
    return None if undecided else False


class Gate(Protocol):
    """What the API port puts around the tracker (``rendezvous.front_door``): access as
    its middleware grants it, and the way back to aiohttp for every other request."""

    def admit_now(self, authorization: str | None, remote: str | None, close: bool) -> Any:
        """``None``: serve the request; bytes: answer these instead (a refusal); anything
        else: an admission ``admit`` must settle with a networked store."""

    async def admit(self, admission: Any, remote: str | None, close: bool) -> bytes | None:
        """``admit_now``'s networked half: ``None`` or the refusal."""

    def hand_off(self, transport: asyncio.Transport, data: bytes) -> None:
        """aiohttp serves ``transport`` from here on, starting with ``data``."""


_OK_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "


def response(status: int, body: bytes, *, close: bool = False) -> bytes:
    if status == 200 and not close:  # every answer but refusals
        return b"%s%d\r\n\r\n%s" % (_OK_HEAD, len(body), body)
    head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % (
        status,
        _REASONS[status],
        len(body),
    )
    if status == 405:
        head += b"Allow: GET\r\n"
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


class _Request:
    __slots__ = ("authorization", "body", "head", "url")

    def __init__(self) -> None:
        self.url = b""
        self.head = 0  # bytes of the URL and headers
        self.body = False
        self.authorization: str | None = None  # read only on the API port


class HttpTrackerProtocol(asyncio.Protocol):
    """One client connection (see the module docstring for what it accepts)."""

    def __init__(
        self,
        tracker: HttpTracker,
        store: Store,
        clock: Callable[[], float],
        connections: set[HttpTrackerProtocol],
        counts: TrackerCounts,
        gate: Gate | None = None,
    ) -> None:
        """``gate``: on the API port, where other requests are aiohttp's (see ``_sift``)."""
        self.tracker = tracker
        self.gate = gate
        self.unfed = bytearray()  # API port: bytes not given to the parser yet
        self.in_message = False  # the parser has begun a request it has not completed
        self.yielding = False  # API port: handing the connection back to aiohttp
        self.counts = counts
        self.store = store
        self.local = store if isinstance(store, MemoryStore) else None
        self.clock = clock
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.request = _Request()
        self.head_bytes = 0
        # Answers in request order: bytes when ready, a future while the store works.
        self.answers: deque[bytes | asyncio.Future[bytes]] = deque()
        self.closing = False  # answer what is queued, then close
        self.keep_alive = True  # the request being answered's
        self.idle: asyncio.TimerHandle | None = None
        self.remote: str | None = None
        self.last_active = 0.0
        self.paused = False

    # ---- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP server's
        peer = self.transport.get_extra_info("peername")
        self.remote = peer[0] if peer else None
        self.connections.add(self)
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()
        self.idle = loop.call_later(IDLE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None
        if self.idle is not None:
            self.idle.cancel()
        for answer in self.answers:
            if isinstance(answer, asyncio.Future):
                answer.cancel()

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests until it does
        (else a pipelining client could grow the write buffer without bound)."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not (self.paused or self.yielding):
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.gate is not None:
            self._sift(data)
        else:
            self._feed(data)

    def _sift(self, data: bytes) -> None:
        """The API port: the parser is fed one request head at a time, so that the first
        request that is not the tracker's goes, with all that follows it, to aiohttp
        (after the answers before it). A tracker request has no body: one that goes on
        past its head is refused."""
        unfed = self.unfed
        unfed += data
        while unfed and not self.closing and not self.yielding and self.transport is not None:
            verdict = True if unfed.startswith(_ANNOUNCE) else begins(unfed, TRACKER_REQUESTS)
            if verdict is None:
                return
            if not verdict:
                self._yield()
                return
            end = unfed.find(b"\r\n\r\n")
            if end < 0:
                if len(unfed) > MAX_HEAD:
                    self._refuse(431, f"a request head is at most {MAX_HEAD} bytes")
                return
            head = bytes(unfed[: end + 4])
            del unfed[: end + 4]
            self._feed(head)
            if self.in_message and not self.closing:
                self._refuse(400, "a tracker request has no body")

    def _yield(self) -> None:
        """Give the connection back to aiohttp once every answer before it is written."""
        self.yielding = True
        if self.transport is not None:
            self.transport.pause_reading()
        if not self.answers:
            self._give_back()

    def _give_back(self) -> None:
        transport, gate = self.transport, self.gate
        if transport is None or gate is None:
            return
        self.transport = None
        self.connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        data = bytes(self.unfed)
        self.unfed.clear()
        gate.hand_off(transport, data)
        if not transport.is_closing():
            transport.resume_reading()

    def _feed(self, data: bytes) -> None:
        # Bytes since a request last completed (each completion resets it): a head that
        # keeps coming is cut off within MAX_HEAD plus one read.
        self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "no protocol upgrades here")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request: {exc}")
        else:
            if self.head_bytes > MAX_HEAD and not self.closing:  # a head still arriving
                self._refuse(431, f"a request head is at most {MAX_HEAD} bytes")

    # ---- parser callbacks

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.in_message = True

    def on_url(self, url: bytes) -> None:
        self.request.url += url
        self.request.head += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.request.head += len(name) + len(value) + 4
        if self.gate is not None and name.lower() == b"authorization":
            self.request.authorization = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.request.body = True

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.closing:
            return
        self.head_bytes = 0
        request, parser = self.request, self.parser
        keep_alive = self.keep_alive = parser.should_keep_alive()
        if request.head > MAX_HEAD:
            self._refuse(431, f"a request head is at most {MAX_HEAD} bytes")
            return
        if request.body:
            self._refuse(400, "a tracker request has no body")
            return
        if parser.should_upgrade():
            self._refuse(400, "no protocol upgrades here")
            return
        method = parser.get_method()
        path, _, query = request.url.partition(b"?")
        route = _ROUTES.get(path)
        if route is None:
            reason = failure("not a tracker path: use /announce or /scrape")
            self._answer(response(404, reason, close=not keep_alive))
            self.counts.errors += 1
        elif method != b"GET":
            self._answer(response(405, failure("use GET"), close=not keep_alive))
            self.counts.errors += 1
        else:
            self._serve(route, query)
        if not keep_alive:
            self.closing = True
        self._flush()
        self.last_active = asyncio.get_running_loop().time()

    # ---- answering

    def _serve(self, route: str, query: bytes) -> None:
        close = not self.keep_alive  # RFC 9112 9.6: say so in the final response
        gate = self.gate
        if gate is not None:  # the API port: access as its middleware grants it
            admitted = gate.admit_now(self.request.authorization, self.remote, close)
            if isinstance(admitted, bytes):
                self.counts.errors += 1
                self._answer(admitted)
                return
            if admitted is not None:
                self._later(self._admit_then(gate, admitted, route, query, close))
                return
        answer = self._respond(route, query, close)
        if isinstance(answer, bytes):
            self._answer(answer)
        else:
            self._later(answer)

    async def _admit_then(
        self, gate: Gate, admission: Any, route: str, query: bytes, close: bool
    ) -> bytes:
        refusal = await gate.admit(admission, self.remote, close)
        if refusal is not None:
            self.counts.errors += 1
            return refusal
        answer = self._respond(route, query, close)
        return answer if isinstance(answer, bytes) else await answer

    def _respond(self, route: str, query: bytes, close: bool) -> bytes | Coroutine[Any, Any, bytes]:
        """The answer: now, or (on a networked store) the coroutine that makes it."""
        remote, tracker, now, counts = self.remote, self.tracker, self.clock(), self.counts
        if route == "announce":
            prepared = tracker.announce_call(query, remote)
            if isinstance(prepared, bytes):
                counts.errors += 1
                return response(200, prepared, close=close)
            if self.local is None:
                return self._announce(*prepared, close)
            request, call = prepared
            announced = torrents.announce_now(self.local, call, now)
            counts.announces += 1
            return response(200, tracker.answer_announce(request, announced), close=close)
        hashes = tracker.scrape_hashes(query)
        if isinstance(hashes, bytes):
            counts.errors += 1
            return response(200, hashes, close=close)
        if self.local is None:
            return self._scrape(hashes, close)
        stats = self.local.stats_now([torrents.swarm_of(h) for h in hashes], now=now)
        counts.scrapes += 1
        return response(200, tracker.answer_scrape(hashes, stats), close=close)

    async def _announce(
        self, request: AnnounceParams, call: torrents.StoreAnnounce, close: bool
    ) -> bytes:
        announced = await torrents.announce(self.store, call, self.clock())
        self.counts.announces += 1
        return response(200, self.tracker.answer_announce(request, announced), close=close)

    async def _scrape(self, hashes: tuple[bytes, ...], close: bool) -> bytes:
        stats = await self.store.stats([torrents.swarm_of(h) for h in hashes], now=self.clock())
        self.counts.scrapes += 1
        return response(200, self.tracker.answer_scrape(hashes, stats), close=close)

    def _later(self, work: Coroutine[Any, Any, bytes]) -> None:
        """Run ``work`` once the connection's previous store call is done: pipelined
        requests take effect in order, as they would one at a time."""
        previous = next((a for a in reversed(self.answers) if isinstance(a, asyncio.Future)), None)
        task = asyncio.ensure_future(_after(previous, work))
        self.answers.append(task)
        task.add_done_callback(lambda _: self._flush())
        if len(self.answers) >= MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def _answer(self, payload: bytes) -> None:
        self.answers.append(payload)

    def _flush(self) -> None:
        """Write the answers that are ready, in order; close when asked and done."""
        transport = self.transport
        if transport is None:
            return
        out: list[bytes] = []
        answers = self.answers
        while answers:
            first = answers[0]
            if isinstance(first, asyncio.Future):
                if not first.done():
                    break
                answers.popleft()
                try:
                    out.append(first.result())
                except StoreError as exc:
                    log.warning("http tracker: store unavailable: %s", exc)
                    self.counts.errors += 1
                    out.append(response(200, failure(STORE_DOWN)))
                except asyncio.CancelledError:
                    continue
                except Exception:  # a bug: answer, and do not trust the stream further
                    log.exception("http tracker: request failed")
                    out.append(response(503, failure("internal error"), close=True))
                    self.closing = True
                    answers.clear()
            else:
                answers.popleft()
                out.append(first)
        if out:
            transport.write(b"".join(out))
        if (
            self.paused
            and len(answers) < MAX_PIPELINED // 2
            and not (self.closing or self.yielding)
        ):
            self.paused = False
            transport.resume_reading()
        if self.closing and not answers:
            transport.close()
        elif self.yielding and not answers:
            self._give_back()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` after what is queued, then close (the stream cannot be
        trusted past a malformed request)."""
        if self.closing:
            return
        self.closing = True
        self.counts.errors += 1
        self._answer(response(status, failure(reason), close=True))
        self._flush()

    def _check_idle(self) -> None:
        """Close a connection with nothing asked for ``IDLE_TIMEOUT`` seconds (one timer
        per connection, re-armed for what is left rather than per request)."""
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        left = self.last_active + IDLE_TIMEOUT - loop.time()
        if left <= 0 and not self.answers:
            self.transport.close()
        else:
            self.idle = loop.call_later(max(left, 1.0), self._check_idle)


async def _after(previous: asyncio.Future[bytes] | None, work: Coroutine[Any, Any, bytes]) -> bytes:
    if previous is not None:
        await asyncio.wait([previous])
    return await work


class HttpTrackerServer:
    """The listening socket and its connections."""

    def __init__(
        self,
        server: asyncio.Server,
        connections: set[HttpTrackerProtocol],
        counts: TrackerCounts,
    ) -> None:
        self.server = server
        self.connections = connections
        self.counts = counts

    @property
    def sockname(self) -> tuple[str, int]:
        address = self.server.sockets[0].getsockname()
        return address[0], address[1]

    async def close(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        await self.server.wait_closed()


async def open_http_tracker(
    host: str,
    port: int,
    tracker: HttpTracker,
    store: Store,
    clock: Callable[[], float],
    counts: TrackerCounts,
) -> HttpTrackerServer:
    """The tracker on ``host:port``; what it answers is counted into ``counts`` (shared
    with the API port's)."""
    connections: set[HttpTrackerProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpTrackerProtocol(tracker, store, clock, connections, counts),
        host,
        port,
        reuse_address=True,
    )
    return HttpTrackerServer(server, connections, counts)
