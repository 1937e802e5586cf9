"""TURN and STUN over TCP and TLS (RFC 8656 §3.1, RFC 8489 §6.2.2): one protocol object per
client connection. It splits the byte stream into STUN and ChannelData frames
(``relay.turn.framing.StreamFramer``), feeds each to the sans-IO core with itself as the
client transport, and is the ``Sink`` the core's replies to this client go through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.server.counters import DropReason, StunCounters
from relay.server.types import Address, Reply, Transport
from relay.stun import StunError
from relay.turn.framing import StreamFramer

log = logging.getLogger(__name__)

# (frame, client address, connection, now) -> reply
StreamHandler = Callable[[bytes, Address, Transport, float], Reply | None]

# A client that does not keep up: relayed data beyond this much unsent is dropped, as UDP
# would drop it, instead of growing the buffer without bound.
MAX_WRITE_BUFFER = 1024 * 1024
# A connection that holds no allocation and completes no frame for this long is closed (an
# HTTP client, a half-open connection, a slowloris). One with an allocation lives as long
# as the allocation (RFC 8656 §3.1).
IDLE_TIMEOUT = 120.0


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS client connection."""

    def __init__(
        self,
        handle: StreamHandler,
        send: Callable[[Reply], None],
        listener_index: int,
        counters: StunCounters,
        *,
        channel_max: int,
        on_closed: Callable[[StreamConnection], None],
        may_idle_out: Callable[[StreamConnection], bool],
    ) -> None:
        self.listener_index = listener_index
        self._handle = handle
        self._send = send
        self._counters = counters
        self._framer = StreamFramer(channel_max=channel_max)
        self._on_closed = on_closed
        self._may_idle_out = may_idle_out
        self._transport: asyncio.Transport | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_frame = 0.0
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if len(peer) == 2 else (peer[0], peer[1], peer[2], peer[3])
        loop = asyncio.get_running_loop()
        self._last_frame = loop.time()
        self._idle = loop.call_later(IDLE_TIMEOUT, self._check_idle)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except StunError as exc:
            # No way to find the next frame boundary: close (RFC 8656 §12.5 framing).
            log.debug("closing %s: %s", self.peer, exc)
            self._counters.dropped[DropReason.BAD_FRAMING] += 1
            self.close()
            return
        if not frames:
            return
        now = asyncio.get_running_loop().time()
        self._last_frame = now
        for frame in frames:
            reply = self._handle(frame, self.peer, self, now)
            if reply is not None:
                self._send(reply)

    def send(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._counters.send_failures += 1
            return
        transport.write(data)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_frame
        if idle >= IDLE_TIMEOUT and self._may_idle_out(self):
            log.debug("closing idle connection %s", self.peer)
            self.close()
        else:
            self._idle = loop.call_later(max(1.0, IDLE_TIMEOUT - idle), self._check_idle)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None
        self._on_closed(self)
