"""The BitTorrent UDP tracker (BEP 15) on the rendezvous store.

``UdpTracker`` is the protocol core: ``handle(data, addr, now)`` answers what needs no
store at once (connect, malformed requests, unknown connection ids) and hands back the
announce or scrape it has validated; ``answer_announce``/``answer_scrape`` turn the
store's result into the response datagram. ``UdpTrackerProtocol`` is the asyncio shim
that runs the store calls, a bounded number at a time.

Connection ids are stateless HMACs (``ConnectionIds``), valid for 2 minutes on any
instance sharing the secret (BEP 15). A malformed request gets an error packet when it
holds a transaction id to address it to, and nothing otherwise; the announce's ``ip``
field is ignored (the peer's address is the one the packet came from).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from relay.server import batched as batched_io
from rendezvous import torrents
from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.connection_ids import ConnectionIds
from rendezvous.bittorrent.udp import (
    AnnounceRequest,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    ScrapeRequest,
    ScrapeResponse,
    UdpAnnounce,
    encode_announce_response,
    parse_request,
    peek_transaction_id,
    quick_announce,
)
from rendezvous.metrics import TrackerCounts
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, Store, StoreError, SwarmStats
from rendezvous.store.memory import MemoryStore

log = logging.getLogger(__name__)

Address = tuple[str, int] | tuple[str, int, int, int]
MAX_PENDING = 1024  # store calls in flight; beyond, requests are dropped (clients retry)


class UdpTracker:
    """The sans-IO core of one tracker socket (``ipv6``: the socket's family)."""

    def __init__(self, settings: RendezvousSettings, ids: ConnectionIds, *, ipv6: bool) -> None:
        self.settings = settings
        self.ids = ids
        self.ipv6 = ipv6
        self.planner = torrents.Planner(settings)

    def handle(
        self, data: bytes, addr: Address, now: float
    ) -> bytes | UdpAnnounce | ScrapeRequest | None:
        """A response datagram, a validated request for the store, or None (ignore)."""
        quick = quick_announce(data)
        if quick is not None:  # the common announce, read in one unpack
            if not self.ids.valid(quick.connection_id, addr, now):
                return ErrorResponse(quick.transaction_id, "connection id expired").encode()
            return quick
        try:
            request = parse_request(data)
        except TrackerError as exc:
            transaction_id = peek_transaction_id(data)
            if transaction_id is None:
                return None
            return ErrorResponse(transaction_id, str(exc)).encode()
        if isinstance(request, ConnectRequest):
            connection_id = self.ids.issue(addr, now)
            return ConnectResponse(request.transaction_id, connection_id).encode()
        if not self.ids.valid(request.connection_id, addr, now):
            return ErrorResponse(request.transaction_id, "connection id expired").encode()
        if isinstance(request, AnnounceRequest):
            return UdpAnnounce.of(request)
        return request

    def plan(self, request: UdpAnnounce, addr: Address) -> torrents.StoreAnnounce | None:
        """The store call of a validated announce (None: the source is not an IP)."""
        address = torrents.source_address(addr[0])
        if address is None:
            return None
        numwant = None if request.num_want < 0 else request.num_want
        return self.planner.plan(
            request.info_hash,
            request.peer_id,
            address,
            request.port,
            request.left,
            request.event,
            numwant,
        )

    def answer_announce(self, request: UdpAnnounce, announced: Announced) -> bytes:
        if announced.full:
            return ErrorResponse(request.transaction_id, "this torrent has too many peers").encode()
        v4, v6 = torrents.compact_peers(announced)
        stats = announced.stats
        return encode_announce_response(
            request.transaction_id,
            self.settings.announce_interval,
            stats.leechers,
            stats.seeders,
            v6 if self.ipv6 else v4,  # BEP 15: the request's family only
        )

    @staticmethod
    def answer_scrape(request: ScrapeRequest, stats: list[SwarmStats]) -> bytes:
        entries = tuple(torrents.scrape_entry(s) for s in stats)
        return ScrapeResponse(request.transaction_id, entries).encode()


Batch = list[tuple[UdpAnnounce | ScrapeRequest, Address]]


class UdpTrackerSocket:
    """Runs a ``UdpTracker`` on one bound datagram socket.

    Where the relay's C data plane is built (``relay.server.batched``), the socket is
    drained with ``recvmmsg(2)`` and answered with ``sendmmsg(2)``, up to 64 datagrams per
    system call; elsewhere (or with ``batched=False``) through an event-loop datagram
    transport. The store calls of the requests that arrive together run as one task (a
    task per datagram would cost more than the announce itself): one after the other on
    an in-process store, concurrently on a networked one. At most ``MAX_PENDING``
    requests wait for the store; beyond, requests are dropped and the clients retry
    (BEP 15 retransmission).
    """

    def __init__(
        self,
        sock: socket.socket,
        tracker: UdpTracker,
        store: Store,
        clock: Callable[[], float],
        *,
        batched: bool = True,
    ) -> None:
        self.socket = sock
        self.tracker = tracker
        self.store = store
        self.clock = clock
        self.sockname: Address = sock.getsockname()
        self.pending: set[asyncio.Task[None]] = set()
        self.queued: Batch = []
        self.in_flight = 0  # requests queued or in a running batch
        self.counts = TrackerCounts()
        # The in-process store answers at once: no task, no coroutine per request.
        self._local = store if isinstance(store, MemoryStore) else None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._dataplane = (
            batched_io.new_data_plane([sock]) if batched and batched_io.available() else None
        )
        self._flush_scheduled = False
        self._closed = False

    @property
    def batched(self) -> bool:
        return self._dataplane is not None

    async def start(self) -> None:
        if self._dataplane is not None:
            self.socket.setblocking(False)
            self._loop.add_reader(self.socket.fileno(), self._readable)
        else:
            shim = _Datagrams(self)
            transport, _ = await self._loop.create_datagram_endpoint(lambda: shim, sock=self.socket)
            self._transport = transport

    def _readable(self) -> None:
        dataplane = self._dataplane
        if dataplane is None:
            return
        now = self.clock()
        received = dataplane.drain_listener(0, now)
        if received is not None:
            receive = self.received
            for data, addr in received:
                receive(data, addr, now)
        dataplane.flush(0)

    def received(self, data: bytes, addr: Address, now: float) -> None:
        result = self.tracker.handle(data, addr, now)
        if result is None:
            self.counts.dropped += 1
            return
        if isinstance(result, bytes):
            self.send(result, addr)
        elif self._local is not None:
            self.send(self._answer_now(self._local, result, addr, now), addr)
        elif self.in_flight < MAX_PENDING:
            if not self.queued:
                self._loop.call_soon(self._start_batch)
            self.queued.append((result, addr))
            self.in_flight += 1
        else:
            self.counts.dropped += 1

    def _answer_now(
        self,
        store: MemoryStore,
        request: UdpAnnounce | ScrapeRequest,
        addr: Address,
        now: float,
    ) -> bytes:
        tracker = self.tracker
        if isinstance(request, ScrapeRequest):
            stats = store.stats_now([torrents.swarm_of(h) for h in request.info_hashes], now=now)
            return tracker.answer_scrape(request, stats)
        call = tracker.plan(request, addr)
        if call is None:
            return b""
        return tracker.answer_announce(request, torrents.announce_now(store, call, now))

    def _start_batch(self) -> None:
        batch, self.queued = self.queued, []
        task = asyncio.create_task(self._serve_batch(batch))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _serve_batch(self, batch: Batch) -> None:
        try:
            await asyncio.gather(*(self._serve(request, addr) for request, addr in batch))
        finally:
            self.in_flight -= len(batch)

    async def _serve(self, request: UdpAnnounce | ScrapeRequest, addr: Address) -> None:
        tracker = self.tracker
        try:
            if isinstance(request, UdpAnnounce):
                call = tracker.plan(request, addr)
                if call is not None:
                    announced = await torrents.announce(self.store, call, self.clock())
                    self.send(tracker.answer_announce(request, announced), addr)
            else:
                swarms = [torrents.swarm_of(h) for h in request.info_hashes]
                stats = await self.store.stats(swarms, now=self.clock())
                self.send(tracker.answer_scrape(request, stats), addr)
        except StoreError as exc:
            log.warning("udp tracker: store unavailable: %s", exc)
            message = "tracker store unavailable, retry later"
            self.send(ErrorResponse(request.transaction_id, message).encode(), addr)

    def send(self, payload: bytes, addr: Address) -> None:
        if self._closed or not payload:
            return
        # Count by the answer's action (BEP 15: byte 3 of its first word).
        action, counts = payload[3], self.counts
        if action == 1:
            counts.announces += 1
        elif action == 0:
            counts.connects += 1
        elif action == 2:
            counts.scrapes += 1
        else:
            counts.errors += 1
        dataplane = self._dataplane
        if dataplane is None:
            if self._transport is not None:
                self._transport.sendto(payload, addr)
            return
        if not dataplane.queue(0, payload, addr):  # too large to batch
            try:
                self.socket.sendto(payload, addr)
            except OSError as exc:
                log.debug("udp tracker: send to %s failed: %s", addr, exc)
            return
        if not self._flush_scheduled:  # replies from a store batch leave together
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._dataplane is not None and not self._closed:
            self._dataplane.flush(0)

    async def close(self) -> None:
        self._closed = True
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        if self._dataplane is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.socket.fileno())
            self._dataplane.close()
            self.socket.close()
        elif self._transport is not None:
            self._transport.close()


class _Datagrams(asyncio.DatagramProtocol):
    """The event-loop transport's callbacks, for ``UdpTrackerSocket``."""

    def __init__(self, owner: UdpTrackerSocket) -> None:
        self.received = owner.received
        self.clock = owner.clock

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received(data, addr, self.clock())

    def error_received(self, exc: Exception) -> None:
        log.debug("udp tracker: %s", exc)


async def open_udp_tracker(
    host: str,
    port: int,
    settings: RendezvousSettings,
    ids: ConnectionIds,
    store: Store,
    clock: Callable[[], float],
    *,
    batched: bool = True,
) -> UdpTrackerSocket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        tracker = UdpTracker(settings, ids, ipv6=family == socket.AF_INET6)
        server = UdpTrackerSocket(sock, tracker, store, clock, batched=batched)
        await server.start()
    except BaseException:
        sock.close()
        raise
    return server
