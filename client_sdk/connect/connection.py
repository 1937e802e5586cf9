"""``PeerConnection``: an end-to-end secure datagram connection to another peer, over a
path (issue #6).

A connection does not care how its datagrams travel: it talks to a ``PathLink``, which
sends a payload sealed for the peer, queues what the peer sent, and says which ``kind``
of path it is. ``client_sdk.connect.udp.Link`` is the ``"direct"`` one (a hole-punched
UDP path); the relay fallback will add a ``"relay"`` one (the same secure session over
a TURN allocation) without changing this class.

Semantics are those of the datagrams underneath: each ``send`` is one datagram of at
most ``MAX_PAYLOAD`` (1171) bytes, delivered at most once, possibly out of order or not
at all; ``recv`` returns the next one. Keepalives hold the NAT mappings; a peer silent
for the idle timeout (three keepalive intervals unless configured) ends the connection.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from client_sdk.connect.candidates import Address
from client_sdk.secure.handshake import ChannelError
from client_sdk.secure.session import MAX_PAYLOAD

__all__ = ["ConnectError", "ConnectionClosed", "PathKind", "PathLink", "PeerConnection"]

PathKind = Literal["direct", "relay"]


class ConnectError(Exception):
    """No connection to the peer: it is unreachable, did not accept, or no path was found
    in time (the message says which)."""


class ConnectionClosed(ConnectError):
    """The connection ended (closed here, idle timeout, or the socket closed)."""


class PathLink(Protocol):
    """What a connection needs from the path under it."""

    @property
    def kind(self) -> PathKind: ...

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
    def inbox(self) -> asyncio.Queue[bytes | None]: ...

    def send(self, data: bytes) -> None: ...

    def close(self, reason: str = "closed") -> None: ...


class PeerConnection:
    """A connection to ``remote_peer_id`` (from ``Peer.connect`` or ``Peer.accept``)."""

    def __init__(self, link: PathLink, *, elapsed: float | None = None) -> None:
        self._link = link
        self.elapsed = elapsed  # seconds connect/accept took, for diagnostics

    @property
    def remote_peer_id(self) -> str:
        return self._link.remote_peer_id

    @property
    def peer_id(self) -> str:
        """Alias of ``remote_peer_id``."""
        return self._link.remote_peer_id

    @property
    def path(self) -> PathKind:
        return self._link.kind

    @property
    def rtt(self) -> float | None:
        """Round-trip time in seconds, measured during the handshake."""
        return self._link.rtt

    @property
    def remote_address(self) -> Address | None:
        """Where the peer's datagrams come from (its NAT's public side, on a direct path)."""
        return self._link.remote_address

    @property
    def closed(self) -> bool:
        return self._link.failure is not None

    async def send(self, data: bytes) -> None:
        """Send one datagram of 1 to ``MAX_PAYLOAD`` bytes: ``ValueError`` when the size is
        wrong, ``ConnectionClosed`` when the connection has ended."""
        if not data or len(data) > min(MAX_PAYLOAD, self._link.max_payload):
            raise ValueError(
                f"a datagram carries 1 to {min(MAX_PAYLOAD, self._link.max_payload)} bytes, "
                f"not {len(data)}"
            )
        failure = self._link.failure
        if failure is not None:
            raise ConnectionClosed(failure)
        try:
            self._link.send(data)
        except ChannelError as exc:
            raise ConnectionClosed(str(exc)) from None

    async def recv(self) -> bytes:
        """The next datagram from the peer; ``ConnectionClosed`` once the connection has
        ended and everything received before was read."""
        inbox = self._link.inbox
        if inbox.empty() and self._link.failure is not None:
            raise ConnectionClosed(self._link.failure)
        data = await inbox.get()
        if data is None:
            inbox.put_nowait(None)  # stays ended for the next reader
            raise ConnectionClosed(self._link.failure or "closed")
        return data

    async def close(self) -> None:
        self._link.close("closed")

    async def __aenter__(self) -> PeerConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PeerConnection {self.remote_peer_id} {self.path} {state}>"
