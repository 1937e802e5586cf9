"""``PeerConnection``: an end-to-end secure datagram connection to another peer, over
whichever path works best at the moment (issue #6).

A connection owns up to two ``PathLink``s, each a secure session of its own on one path:
``"direct"`` (a hole-punched UDP path, ``client_sdk.connect.udp.Link`` on the
connectivity socket) and ``"relay"`` (the same kind of link on a TURN allocation,
``client_sdk.connect.relay``). It sends on the *active* one -- the direct path when it is
established, else the relay -- and reads what arrives on either into one inbox:

* **Upgrade**: a connection that started on the relay while the direct punch was still
  looking moves to the direct path the moment that punch authenticates (as DCUtR and
  Tailscale do); ``path_changes()`` reports it.
* **Fallback**: the relay link stays up beside a direct path (its keepalives are cheap),
  so when the direct path dies -- data unanswered for ``dead_after``, or nothing at all
  for the idle timeout -- the connection carries on over the relay instead of ending.
* **Re-punch**: the connector punches again later for a connection without a direct
  path (``Connector``); the new direct link is attached here and upgrades it.
* The connection ends when no path is left, established or still being punched (or on
  ``close()``). While it has none established, what it sends is dropped.

Semantics are those of the datagrams underneath: each ``send`` is one datagram of at most
``MAX_PAYLOAD`` (1171) bytes, delivered at most once, possibly out of order or not at
all (also around a path change); ``recv`` returns the next one. Keepalives hold the NAT
mappings; a path silent for the idle timeout (three keepalive intervals unless
configured) has died.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from client_sdk.connect.candidates import Address
from client_sdk.connect.punch import PathFound
from client_sdk.secure.handshake import ChannelError
from client_sdk.secure.session import MAX_PAYLOAD

__all__ = [
    "ConnectError",
    "ConnectionClosed",
    "PathChanged",
    "PathKind",
    "PathLink",
    "PeerConnection",
]

PathKind = Literal["direct", "relay"]
PREFERENCE: tuple[PathKind, ...] = ("direct", "relay")  # best first
INBOX_SIZE = 1024


class ConnectError(Exception):
    """No connection to the peer: it is unreachable, did not accept, or no path was found
    in time (the message says which)."""


class ConnectionClosed(ConnectError):
    """The connection ended (closed here, every path died, or the socket closed)."""


class PathLink(Protocol):
    """What a connection needs from one path's secure session (``udp.Link``)."""

    inbox: asyncio.Queue[bytes | None]
    found: asyncio.Future[PathFound]
    on_closed: Callable[[str], None] | None

    @property
    def remote_peer_id(self) -> str: ...

    @property
    def rtt(self) -> float | None: ...

    @property
    def remote_address(self) -> Address | None: ...

    @property
    def max_payload(self) -> int: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def established(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def close(self, reason: str = "closed") -> None: ...


@dataclass(frozen=True)
class PathChanged:
    """The connection moved from ``previous`` to ``path`` (None: it ended, ``reason``)."""

    previous: PathKind | None
    path: PathKind | None
    remote_address: Address | None = None
    reason: str = ""


class PeerConnection:
    """A connection to ``remote_peer_id`` (from ``Peer.connect`` or ``Peer.accept``).
    The connector ``attach``es its links; see the module docstring."""

    def __init__(
        self,
        remote_peer_id: str,
        *,
        elapsed: float | None = None,
        session: str = "",
        dialled: bool = False,
    ) -> None:
        self._remote_peer_id = remote_peer_id
        self.elapsed = elapsed  # seconds connect/accept took, for diagnostics
        self.session = session  # the dialler's id for this connection (its punches')
        self.dialled = dialled  # we dialled it (we are the side that punches again)
        self.dropped = 0  # datagrams sent while no path was established
        self.on_closed: Callable[[PeerConnection], None] | None = None
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=INBOX_SIZE)
        self._links: dict[PathKind, PathLink] = {}  # established or still looking
        self._active: PathLink | None = None
        self._kind: PathKind | None = None
        self._failure: str | None = None
        self._watchers: set[asyncio.Queue[PathChanged | None]] = set()

    # -- the connector's side --------------------------------------------------------------

    def attach(self, kind: PathKind, link: PathLink, *, replace: bool = False) -> None:
        """Add ``link`` as the ``kind`` path: used at once if it is established and better
        than the active one, else when its punch succeeds. A closed connection closes it;
        so does one that has a ``kind`` path already, unless ``replace`` (the peer punched
        again: it found that path dead), which closes the old one."""
        if self._failure is not None or (kind in self._links and not replace):
            link.close(self._failure or f"the connection already has a {kind} path")
            return
        old = self._links.get(kind)
        self._links[kind] = link
        if old is not None:
            old.close("replaced by a new punch")
        while not link.inbox.empty():  # anything that arrived before the connection
            data = link.inbox.get_nowait()
            if data is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    self._inbox.put_nowait(data)
        link.inbox = self._inbox
        link.on_closed = lambda reason: self._ended(kind, link, reason)
        if link.failure is not None:
            self._ended(kind, link, link.failure)
        elif link.found.done():
            self._choose()
        else:
            link.found.add_done_callback(lambda _found: self._choose())

    # -- what the app sees -----------------------------------------------------------------

    @property
    def remote_peer_id(self) -> str:
        return self._remote_peer_id

    @property
    def peer_id(self) -> str:
        """Alias of ``remote_peer_id``."""
        return self._remote_peer_id

    @property
    def path(self) -> PathKind | None:
        """``"direct"`` or ``"relay"``: the path datagrams go on now (the last one once
        closed)."""
        return self._kind

    @property
    def rtt(self) -> float | None:
        """Round-trip time in seconds on the active path, measured by its handshake."""
        return self._active.rtt if self._active is not None else None

    @property
    def remote_address(self) -> Address | None:
        """Where the peer's datagrams come from on the active path: its NAT's public side
        on a direct path, its relayed address on the relay."""
        return self._active.remote_address if self._active is not None else None

    @property
    def closed(self) -> bool:
        return self._failure is not None

    def has_path(self, kind: PathKind) -> bool:
        """Whether a ``kind`` path is established or still being punched."""
        link = self._links.get(kind)
        return link is not None and link.failure is None

    @property
    def max_payload(self) -> int:
        link = self._active
        return min(MAX_PAYLOAD, link.max_payload) if link is not None else MAX_PAYLOAD

    async def send(self, data: bytes) -> None:
        """Send one datagram of 1 to ``MAX_PAYLOAD`` bytes on the active path:
        ``ValueError`` when the size is wrong, ``ConnectionClosed`` once the connection
        has ended."""
        if not data or len(data) > self.max_payload:
            raise ValueError(f"a datagram carries 1 to {self.max_payload} bytes, not {len(data)}")
        link = self._active
        if self._failure is not None:
            raise ConnectionClosed(self._failure)
        if link is None:  # between paths: a new punch is still looking
            self.dropped += 1
            return
        try:
            link.send(data)
        except ChannelError as exc:
            raise ConnectionClosed(str(exc)) from None

    async def recv(self) -> bytes:
        """The next datagram from the peer, on whichever path it came; ``ConnectionClosed``
        once the connection has ended and everything received before was read."""
        inbox = self._inbox
        while True:
            if inbox.empty() and self._failure is not None:
                raise ConnectionClosed(self._failure)
            data = await inbox.get()
            if data is not None:
                return data
            if self._failure is not None:
                inbox.put_nowait(None)  # stays ended for the next reader
                raise ConnectionClosed(self._failure)
            # else: a path that is not needed any more ended; the connection goes on

    def path_changes(self) -> AsyncIterator[PathChanged]:
        """Each change of path from now on (an upgrade from the relay to a direct path, a
        fallback to the relay, the end of the connection: ``path`` None), until the
        connection ends."""
        queue: asyncio.Queue[PathChanged | None] = asyncio.Queue()
        if self._failure is not None:
            queue.put_nowait(None)
        else:
            self._watchers.add(queue)
        return self._changes(queue)

    async def _changes(
        self, queue: asyncio.Queue[PathChanged | None]
    ) -> AsyncIterator[PathChanged]:
        try:
            while (change := await queue.get()) is not None:
                yield change
        finally:
            self._watchers.discard(queue)

    async def close(self) -> None:
        self._end("closed")

    async def __aenter__(self) -> PeerConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PeerConnection {self.remote_peer_id} {self.path} {state}>"

    # -- internals -------------------------------------------------------------------------

    def _choose(self, reason: str = "no path left") -> None:
        """Make the best established path the active one; end the connection with
        ``reason`` when none is left and none is still being looked for."""
        if self._failure is not None:
            return
        best: PathLink | None = None
        kind: PathKind | None = None
        for candidate in PREFERENCE:
            link = self._links.get(candidate)
            if link is not None and link.established:
                best, kind = link, candidate
                break
        if best is None:
            if not any(not link.found.done() for link in self._links.values()):
                self._end(reason)
            return
        if best is not self._active:
            previous = self._kind  # None for the first path
            self._active, self._kind = best, kind
            if previous is not None:
                self._notify(PathChanged(previous, kind, best.remote_address))

    def _ended(self, kind: PathKind, link: PathLink, reason: str) -> None:
        if self._links.get(kind) is link:
            del self._links[kind]
        if self._failure is not None:
            return
        if link is self._active:
            self._active = None
        if self._active is None:
            self._choose(reason)  # another established path, or wait for a punch, or end

    def _end(self, reason: str) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        self._active = None
        for link in list(self._links.values()):
            link.close(reason)
        self._links.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)  # wakes a reader
        self._notify(PathChanged(self._kind, None, None, reason))
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()
        if self.on_closed is not None:
            self.on_closed(self)

    def _notify(self, change: PathChanged) -> None:
        for queue in self._watchers:
            queue.put_nowait(change)
