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
import logging
import socket
from collections.abc import Callable
from typing import cast

from rendezvous import torrents
from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.connection_ids import ConnectionIds
from rendezvous.bittorrent.udp import (
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    ScrapeRequest,
    ScrapeResponse,
    parse_request,
    peek_transaction_id,
)
from rendezvous.settings import RendezvousSettings
from rendezvous.store import Announced, Store, StoreError

log = logging.getLogger(__name__)

Address = tuple[str, int] | tuple[str, int, int, int]
MAX_PENDING = 1024  # store calls in flight; beyond, requests are dropped (clients retry)


class UdpTracker:
    """The sans-IO core of one tracker socket (``ipv6``: the socket's family)."""

    def __init__(self, settings: RendezvousSettings, ids: ConnectionIds, *, ipv6: bool) -> None:
        self.settings = settings
        self.ids = ids
        self.ipv6 = ipv6

    def handle(
        self, data: bytes, addr: Address, now: float
    ) -> bytes | AnnounceRequest | ScrapeRequest | None:
        """A response datagram, a validated request for the store, or None (ignore)."""
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
        return request

    def announce_of(self, request: AnnounceRequest, addr: Address) -> torrents.Announce | None:
        ip = torrents.source_ip(addr[0])
        if ip is None:
            return None
        numwant = None if request.num_want < 0 else request.num_want
        return torrents.Announce(
            request.info_hash,
            request.peer_id,
            ip,
            request.port,
            request.left,
            request.event,
            numwant,
        )

    def answer_announce(self, request: AnnounceRequest, announced: Announced) -> bytes:
        if announced.full:
            return ErrorResponse(request.transaction_id, "this torrent has too many peers").encode()
        v4, v6 = torrents.compact_peers(announced.peers)
        return AnnounceResponse(
            request.transaction_id,
            self.settings.announce_interval,
            announced.stats.leechers,
            announced.stats.seeders,
            compact=v6 if self.ipv6 else v4,  # BEP 15: the request's family only
        ).encode(ipv6=self.ipv6)

    @staticmethod
    def answer_scrape(request: ScrapeRequest, entries: list[torrents.ScrapeEntry]) -> bytes:
        return ScrapeResponse(request.transaction_id, tuple(entries)).encode()


class UdpTrackerProtocol(asyncio.DatagramProtocol):
    """Runs a ``UdpTracker`` on a datagram socket, with the store calls as tasks."""

    def __init__(self, tracker: UdpTracker, store: Store, clock: Callable[[], float]) -> None:
        self.tracker = tracker
        self.store = store
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (asyncio's are not DatagramTransport subclasses).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        result = self.tracker.handle(data, addr, self.clock())
        if result is None:
            return
        if isinstance(result, bytes):
            self._send(result, addr)
        elif len(self.pending) < MAX_PENDING:
            task = asyncio.create_task(self._serve(result, addr))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _serve(self, request: AnnounceRequest | ScrapeRequest, addr: Address) -> None:
        tracker, now = self.tracker, self.clock()
        try:
            if isinstance(request, AnnounceRequest):
                peer = tracker.announce_of(request, addr)
                if peer is None:
                    return
                announced = await torrents.announce(self.store, tracker.settings, peer, now)
                self._send(tracker.answer_announce(request, announced), addr)
            else:
                entries = await torrents.scrape(self.store, request.info_hashes, now)
                self._send(tracker.answer_scrape(request, entries), addr)
        except StoreError as exc:
            log.warning("udp tracker: store unavailable: %s", exc)
            message = "tracker store unavailable, retry later"
            self._send(ErrorResponse(request.transaction_id, message).encode(), addr)

    def _send(self, payload: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(payload, addr)

    async def close(self) -> None:
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()


async def open_udp_tracker(
    host: str,
    port: int,
    settings: RendezvousSettings,
    ids: ConnectionIds,
    store: Store,
    clock: Callable[[], float],
) -> UdpTrackerProtocol:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tracker = UdpTracker(settings, ids, ipv6=family == socket.AF_INET6)
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpTrackerProtocol(tracker, store, clock), local_addr=(host, port), family=family
    )
    return protocol
