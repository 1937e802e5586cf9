"""The connectivity socket: one UDP socket per ``Peer`` carrying STUN and every direct
path's datagrams (asyncio shim over ``client_sdk.connect.punch``).

``ConnectivitySocket.open()`` binds ``0.0.0.0`` on a random high port (netcheck's
``bind_random_port``). Received datagrams go, in order, to:

1. the STUN client (``client_sdk.netcheck.transport.ProbeSocket.attach``): a Binding
   response to a transaction it is waiting for -- how ``reflexive_addresses`` learns this
   socket's own server-reflexive addresses (from each server, and from a server's RFC
   5780 OTHER-ADDRESS too: behind a NAT that maps per destination the two differ, which
   is how the peer learns we are "hard", ``candidates.mapping_varies``);
2. a ``Punch`` by the secure channel's header: a message 1 to the punch expecting that
   peer id (so only peers we are punching with get an answer: an unsolicited message 1
   is dropped), anything else by the receiver index (our session's own index).

Everything else is dropped. Each punch's timers run on the event loop (``call_at``):
``Link`` is that driver, and what a ``PeerConnection``'s path is. A link's ``owner``
(``LinkOwner``) carries its datagrams: the connectivity socket, a ``RelaySocket``, or a
``predict.SocketFan`` that adopted it (port prediction: the link's datagrams then also
use the fan's sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from client_sdk.connect.candidates import Address, usable_ipv4
from client_sdk.connect.punch import PathFound, Punch, PunchFailed, Received, Spray
from client_sdk.netcheck.stun import binding_request, new_transaction_id
from client_sdk.netcheck.transport import DEFAULT_SCHEDULE, ProbeSocket, Schedule, bind_random_port
from client_sdk.secure.session import MessageType, initiation_peer_id, parse_header

__all__ = ["OTHER_SCHEDULE", "ConnectivitySocket", "Link", "LinkOwner"]

log = logging.getLogger(__name__)

# Asking a server's OTHER-ADDRESS, once its main address answered: 0 and 0.25 s, give up
# at 0.5 s (a silent alternate delays the candidates by that much at most).
OTHER_SCHEDULE = Schedule.rto(0.25, 2, 0.25)


class LinkOwner(Protocol):
    """What a ``Link`` needs from whoever carries its datagrams."""

    def now(self) -> float:
        """The event loop's clock."""
        ...

    def sendto(self, datagram: bytes, addr: Address) -> None:
        """Send (best effort, never raises)."""
        ...

    def _settled(self, link: Link) -> None:
        """The link found its path (message 1s are no longer for it)."""
        ...

    def _forget(self, link: Link) -> None:
        """The link ended: route nothing more to it."""
        ...


class Link:
    """Drives one ``Punch`` on its owner (the connectivity socket, a TURN allocation, a
    prediction fan): sends what it queues, keeps its timer, and turns its events into
    futures and a receive queue. A ``PeerConnection``'s ``PathLink``."""

    def __init__(self, owner: LinkOwner, punch: Punch) -> None:
        self.owner: LinkOwner = owner
        self.punch = punch
        loop = asyncio.get_running_loop()
        self.found: asyncio.Future[PathFound] = loop.create_future()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)
        self.inbox_dropped = 0
        self.failure: str | None = None
        self.on_closed: Callable[[str], None] | None = None
        # Told (source, socket) of every datagram routed here, before the punch sees it
        # (a SocketFan learns which of its sockets hears which address).
        self.tap: Callable[[Address, object], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def remote_peer_id(self) -> str:
        return self.punch.remote_peer_id

    @property
    def established(self) -> bool:
        """The punch found its path and the link has not ended since."""
        found = self.found
        return (
            self.failure is None
            and found.done()
            and not found.cancelled()
            and found.exception() is None
        )

    @property
    def rtt(self) -> float | None:
        return self.punch.rtt

    @property
    def remote_address(self) -> Address | None:
        return self.punch.addr

    @property
    def max_payload(self) -> int:
        return self.punch.max_payload

    def start(
        self,
        targets: Sequence[Address],
        spray: Spray | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Start the punch toward ``targets``; ``spray``: port prediction toward a hard
        peer (``Punch.start``)."""
        self.punch.start(self.owner.now(), targets, spray, rng=rng)
        self.service()

    def send(self, data: bytes) -> None:
        self.punch.send(data, self.owner.now())
        self.service()

    def close(self, reason: str = "closed") -> None:
        if self.failure is None:
            self.punch.close()
            self._end(reason)

    def receive(self, data: bytes, addr: Address, via: object = None) -> None:
        """A datagram from ``addr`` that arrived on socket ``via`` (its owner's token)."""
        if self.tap is not None:
            self.tap(addr, via)
        self.punch.receive(data, addr, self.owner.now())
        self.service()

    def service(self) -> None:
        punch = self.punch
        for datagram, destination in punch.datagrams_to_send():
            self.owner.sendto(datagram, destination)
        while (event := punch.next_event()) is not None:
            if isinstance(event, PathFound):
                self.owner._settled(self)
                if not self.found.done():
                    self.found.set_result(event)
            elif isinstance(event, Received):
                try:
                    self.inbox.put_nowait(event.data)
                except asyncio.QueueFull:
                    self.inbox_dropped += 1
            elif isinstance(event, PunchFailed):
                self._end(event.reason)
                return
        deadline = punch.get_timer()
        if deadline != self._timer_at:
            self._cancel_timer()
            if deadline is not None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_at(deadline, self._on_timer, deadline)
                self._timer_at = deadline

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        self._timer_at = None
        # asyncio may run a timer a clock tick early; the punch must see its deadline.
        self.punch.handle_timer(max(self.owner.now(), deadline))
        self.service()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _end(self, reason: str) -> None:
        self.failure = reason
        self._cancel_timer()
        self.owner._forget(self)
        if not self.found.done():
            self.found.set_exception(ConnectionError(reason))
            self.found.exception()  # retrieved: nobody may be waiting any more
        with contextlib.suppress(asyncio.QueueFull):
            self.inbox.put_nowait(None)  # wakes a reader
        if self.on_closed is not None:
            self.on_closed(reason)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: ConnectivitySocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for probes to candidates that lead nowhere: expected while punching.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class ConnectivitySocket:
    """See the module docstring."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._stun: ProbeSocket | None = None
        self._by_peer: dict[str, Link] = {}
        self._by_index: dict[int, Link] = {}
        self.dropped = 0
        self.local_port = 0

    @classmethod
    async def open(cls) -> ConnectivitySocket:
        owner = cls()
        sock = bind_random_port(socket.AF_INET, "0.0.0.0")
        owner.local_port = int(sock.getsockname()[1])
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(owner), sock=sock)
        except BaseException:
            sock.close()
            raise
        owner._transport = transport
        owner._stun = ProbeSocket.attach(owner._transport)
        return owner

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def sendto(self, datagram: bytes, addr: Address) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram, addr)

    async def binding(
        self, server: Address, schedule: Schedule = DEFAULT_SCHEDULE
    ) -> tuple[Address | None, Address | None]:
        """One Binding transaction with ``server`` (a STUN server) from this socket:
        (this socket's mapped address as it sees it, the server's OTHER-ADDRESS, RFC 5780
        §7.4, if it gave one); (None, None) when it does not answer in time."""
        if self._stun is None:
            return None, None
        tid = new_transaction_id()
        got = await self._stun.transact(server, binding_request(tid), tid, schedule)
        if got is None:
            return None, None
        return got[0].message.mapped, got[0].message.other_address

    async def reflexive_address(
        self, server: Address, schedule: Schedule = DEFAULT_SCHEDULE
    ) -> Address | None:
        """This socket's mapped address as ``server`` sees it; None when it does not
        answer in time."""
        mapped, _ = await self.binding(server, schedule)
        return mapped

    async def reflexive_addresses(
        self, servers: Sequence[Address], *, follow_other: bool = True
    ) -> list[Address]:
        """The distinct mapped addresses from ``servers``, asked at once. With
        ``follow_other``, a server whose answer names an OTHER-ADDRESS on another IP and
        port (RFC 5780) is asked there too, from this same socket (``OTHER_SCHEDULE``):
        a NAT that maps per destination shows a second port (RFC 4787 §4.1). Nothing is
        cached: each call asks again."""

        async def ask(server: Address) -> list[Address]:
            mapped, other = await self.binding(server)
            if mapped is None:
                return []
            if (
                not follow_other
                or other is None
                or usable_ipv4(other[0]) is None
                or not 0 < other[1] < 65536
                or other[0] == server[0]
                or other[1] == server[1]
                or other in servers
            ):
                return [mapped]
            second, _ = await self.binding(other, OTHER_SCHEDULE)
            return [mapped] if second is None else [mapped, second]

        answers = await asyncio.gather(*(ask(s) for s in servers))
        return list(dict.fromkeys(a for found in answers for a in found))

    def add(self, punch: Punch) -> Link:
        """A link for ``punch``, routed from now on (``start`` it at the agreed moment).
        ``ConnectionError`` when a punch with that peer is already under way."""
        if self.closed:
            raise ConnectionError("the connectivity socket is closed")
        if punch.remote_peer_id in self._by_peer:
            raise ConnectionError(f"already punching with {punch.remote_peer_id}")
        link = Link(self, punch)
        self._by_peer[punch.remote_peer_id] = link
        self._by_index[punch.local_index] = link
        return link

    def close(self) -> None:
        for link in list(self._by_index.values()) + list(self._by_peer.values()):
            link.close("the connectivity socket closed")
        if self._stun is not None:
            self._stun.close()
        if self._transport is not None:
            self._transport.close()

    # -- called by the protocol and the links ----------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self._stun is not None and self._stun.feed(data, addr):
            return
        if len(addr) < 2 or not isinstance(addr[0], str) or not isinstance(addr[1], int):
            return
        source = (addr[0], addr[1])
        header = parse_header(data)
        link: Link | None = None
        if header is not None:
            kind, receiver = header
            if kind is MessageType.INITIATION:
                peer_id = initiation_peer_id(data)
                link = self._by_peer.get(peer_id) if peer_id is not None else None
            else:
                link = self._by_index.get(receiver)
        if link is None:
            self.dropped += 1
            return
        link.receive(data, source, via=self)

    def _settled(self, link: Link) -> None:
        """The punch found its path: message 1s from that peer are no longer for it."""
        if self._by_peer.get(link.remote_peer_id) is link:
            del self._by_peer[link.remote_peer_id]

    def _forget(self, link: Link) -> None:
        self._settled(link)
        if self._by_index.get(link.punch.local_index) is link:
            del self._by_index[link.punch.local_index]

    def _lost(self) -> None:
        self._transport = None
        for link in list(self._by_index.values()) + list(self._by_peer.values()):
            link.close("the connectivity socket closed")
