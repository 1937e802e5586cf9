"""This instance's signaling sockets, and the bus between instances.

A socket costs little while idle (a signaling server holds many): no task or queue of its
own. What it is sent is framed and written straight to its transport, coalesced into one
write per event-loop turn; a peer that reads too slowly, so that more than ``limit``
messages go out while its transport's buffer is over the high-water mark, is closed (1013,
try again later) instead of growing memory. A second socket of the same peer replaces the
first (closed with 4000).

Whichever server carries a socket -- aiohttp's ``/v1/ws`` route or the lean listener
(``rendezvous.signaling.websocket``) -- its ``Connection`` sees it as a ``Socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import WSCloseCode

from rendezvous.signaling.bus import Bus, MemoryBus
from rendezvous.signaling.frames import Opcode, frame_header

log = logging.getLogger(__name__)

REPLACED = 4000


class Socket(Protocol):
    """What a ``Connection`` needs of its WebSocket besides the transport it writes to
    (``aiohttp.web.WebSocketResponse`` is one)."""

    @property
    def closed(self) -> bool:
        """True once the closing handshake has begun."""
        ...

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        """Close with ``code``: send the close frame, wait (bounded) for the peer's."""
        ...


class Connection:
    __slots__ = (
        "_backlog",
        "_closing",
        "_high_water",
        "_limit",
        "_loop",
        "_pending",
        "_ping",
        "_pinger",
        "_transport",
        "address",
        "peer_id",
        "rtt_ms",
        "ws",
    )

    def __init__(
        self,
        ws: Socket,
        transport: asyncio.Transport,
        peer_id: str,
        limit: int,
        *,
        address: str | None = None,
    ) -> None:
        """``transport``: the socket's, once ``ws`` is prepared (``request.transport``).
        ``ws`` must not compress (its frames are written here, uncompressed).
        ``address``: where signals for this peer are sent (``Access.address``: its peer id
        within its tenant's namespace); the peer id itself by default."""
        self.ws = ws
        self.peer_id = peer_id
        self.address = peer_id if address is None else address
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._high_water = transport.get_write_buffer_limits()[1]
        self._backlog = 0  # messages written while the buffer was over the high water
        self._pending: list[bytes] | None = None  # frame parts for this loop turn's write
        self._closing: asyncio.Task[bool] | None = None
        # Round trip to the peer over this socket, measured with ping/pong (punching).
        self.rtt_ms: float | None = None
        self._ping: tuple[str, float] | None = None  # (nonce, monotonic time sent)
        self._pinger: asyncio.TimerHandle | None = None

    def start_pings(self, interval: float, alive: Callable[[], bool] | None = None) -> None:
        """Ping now (the round trip punching needs) and every ``interval`` seconds.
        ``alive``, when given, is asked first each time; False (the socket is found dead
        and has been dropped) stops the pings."""
        if alive is not None and not alive():
            return
        self.ping()
        self._pinger = self._loop.call_later(interval, self.start_pings, interval, alive)

    def ping(self) -> None:
        nonce = secrets.token_hex(8)
        self._ping = (nonce, time.monotonic())
        self.push(json.dumps({"type": "ping", "nonce": nonce}))

    def pong(self, nonce: str) -> None:
        """A pong: the round trip, smoothed (an unknown or late nonce is ignored)."""
        if self._ping is None or nonce != self._ping[0]:
            return
        sample = (time.monotonic() - self._ping[1]) * 1000
        self._ping = None
        self.rtt_ms = sample if self.rtt_ms is None else 0.5 * self.rtt_ms + 0.5 * sample

    def push(self, message: str | bytes) -> None:
        """Send ``message`` (JSON text) to the peer, in this loop turn's write."""
        data = message.encode() if isinstance(message, str) else message
        pending = self._pending
        if pending is None:
            self._pending = [frame_header(Opcode.TEXT, len(data)), data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(frame_header(Opcode.TEXT, len(data)))
            pending.append(data)

    def flush(self) -> None:
        """Write what this loop turn pushed (now, instead of at the turn's end)."""
        parts, self._pending = self._pending, None
        transport = self._transport
        if not parts or self._closing is not None or self.ws.closed or transport.is_closing():
            return
        transport.write(b"".join(parts))
        if transport.get_write_buffer_size() <= self._high_water:
            self._backlog = 0
            return
        self._backlog += len(parts) // 2
        if self._backlog > self._limit:
            log.info("signaling: %s reads too slowly, closing", self.peer_id)
            self.close(WSCloseCode.TRY_AGAIN_LATER, b"too slow")

    def close(self, code: int, message: bytes) -> None:
        """Start the closing handshake. No drain: a peer that does not read would hold it
        forever (the close frame queues behind what it has not read; aiohttp then waits a
        bounded time for the peer's answer)."""
        if self._closing is None:
            closing = self.ws.close(code=code, message=message, drain=False)
            self._closing = asyncio.create_task(closing)

    def end(self) -> None:
        """The socket is done: send what is pending, stop pinging."""
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        if self._pending is not None:
            self.flush()

    async def stop(self) -> None:
        """``end``, and finish the closing handshake this side started."""
        self.end()
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing


class Hub:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.local: dict[str, Connection] = {}
        # The in-process bus waits for nothing: callers that must not suspend (the lean
        # listener, which has no task per socket) use the ``*_now`` methods with it.
        self.inline: MemoryBus | None = bus if isinstance(bus, MemoryBus) else None

    async def start(self) -> None:
        await self.bus.start(self._deliver)

    def _deliver(self, address: str, payload: bytes) -> None:
        connection = self.local.get(address)
        if connection is not None:
            connection.push(payload)

    def _claim(self, connection: Connection) -> None:
        previous = self.local.get(connection.address)
        if previous is not None:
            previous.close(REPLACED, b"replaced by a newer connection")
        self.local[connection.address] = connection

    def _release(self, connection: Connection) -> bool:
        if self.local.get(connection.address) is not connection:
            return False
        del self.local[connection.address]
        return True

    async def register(self, connection: Connection) -> None:
        self._claim(connection)
        await self.bus.attach(connection.address)

    async def unregister(self, connection: Connection) -> None:
        if self._release(connection):
            await self.bus.detach(connection.address)

    async def send(self, address: str, payload: bytes) -> bool:
        """Deliver to the connection at ``address`` on whichever instance holds it;
        False: nowhere."""
        return await self.bus.publish(address, payload) > 0

    def register_now(self, connection: Connection) -> None:
        """``register`` on the in-process bus (``inline`` is set)."""
        self._claim(connection)
        self._now().attach_now(connection.address)

    def unregister_now(self, connection: Connection) -> None:
        if self._release(connection):
            self._now().detach_now(connection.address)

    def send_now(self, address: str, payload: bytes) -> bool:
        return self._now().publish_now(address, payload) > 0

    def _now(self) -> MemoryBus:
        if self.inline is None:
            raise RuntimeError("this hub's bus is networked: use the coroutines")
        return self.inline

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every socket (on shutdown: 1001, going away) and wait for it."""
        closing = [
            c.ws.close(code=code, message=b"server shutting down") for c in self.local.values()
        ]
        await asyncio.gather(*closing, return_exceptions=True)
