"""The lean signaling WebSocket: RFC 6455 on a plain asyncio transport, after the front
door (``rendezvous.front_door``) has answered the opening handshake.

An idle socket is this protocol object, its ``FrameReader``, its hub ``Connection`` and
one timer -- no task, no request object, no HTTP parser -- which is what lets one process
hold tens of thousands of them. What the socket does is ``Signaling``'s (shared with
aiohttp's ``/v1/ws`` route); this module is the framing and the lifecycle:

* the challenge on connect, a hello within ``Signaling.hello_timeout`` (else 4401);
* messages handled in order: inline on the in-process bus; on a networked bus by a task
  that lives only while messages wait for the store (reading pauses beyond the signal
  queue limit);
* liveness: every ping interval the socket is sent an application ping (its round trip)
  and a ping frame, which every client answers by itself (§5.5.2); a socket silent for a
  whole interval is dropped;
* the closing handshake (§7.1.2): a close frame sent, the TCP connection closed once the
  client's close frame comes, or after ``CLOSE_TIMEOUT``; a client's close is echoed;
  a framing fault is answered with its close code (``FrameError``) and the connection
  closed at once (§7.1.7).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

from rendezvous.signaling import protocol
from rendezvous.signaling.frames import (
    FrameError,
    FrameReader,
    Opcode,
    close_payload,
    frame,
    frame_header,
)
from rendezvous.signaling.hub import Connection
from rendezvous.signaling.session import UNAUTHENTICATED, Refused, Signaling
from rendezvous.store import StoreError
from rendezvous.tenants import Access

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0  # for the client's close frame, once the server sent its own
INTERNAL_ERROR: Final = 1011
_PING: Final = frame(Opcode.PING)


class SignalingSocket(asyncio.Protocol):
    """One client's signaling WebSocket, from its first frame to its last."""

    __slots__ = (
        "_backlog",
        "_challenge",
        "_closed",
        "_closing",
        "_connection",
        "_failed",
        "_heard",
        "_lost",
        "_reader",
        "_signaling",
        "_timer",
        "_transport",
        "_who",
        "_worker",
    )

    def __init__(self, signaling: Signaling, who: Access) -> None:
        self._signaling = signaling
        self._who = who
        self._reader = FrameReader(protocol.MAX_FRAME_BYTES)
        self._transport: asyncio.Transport | None = None
        self._challenge: str | None = None  # until the hello proves a key
        self._connection: Connection | None = None
        self._timer: asyncio.TimerHandle | None = None  # hello deadline, then close deadline
        self._heard = True  # anything received since the last liveness check
        self._closing = False  # the close frame is sent
        self._failed = False  # a framing fault: what else comes is discarded
        self._lost = False
        self._closed: asyncio.Future[None] | None = None  # made when someone waits
        # Messages waiting while a task handles one (networked bus only).
        self._backlog: deque[str] | None = None
        self._worker: asyncio.Task[None] | None = None

    # -- the Socket a Connection sees -------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing or self._lost

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        """Send the close frame (unless one was) and wait until the connection is gone
        (the client's close frame, or ``CLOSE_TIMEOUT``). ``drain`` is moot: the close
        frame follows whatever is buffered, and the timeout bounds the wait."""
        started = self._start_close(code, message)
        if not self._lost:
            if self._closed is None:
                self._closed = asyncio.get_running_loop().create_future()
            await self._closed
        return started

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        signaling = self._signaling
        self._challenge, asking = signaling.challenge()
        self._write_text(asking.encode())
        self._timer = asyncio.get_running_loop().call_later(
            signaling.hello_timeout, self._refuse, f"no hello within {signaling.hello_timeout:g} s"
        )
        signaling.waiting.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._signaling.waiting.discard(self)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._worker is None:
            self._leave()  # else the worker leaves once the message in hand is done

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if self._failed:
            return
        try:
            messages = self._reader.feed(data)
        except FrameError as exc:
            self._fail(exc.code, str(exc))
            return
        for opcode, payload in messages:
            if opcode == Opcode.TEXT:
                if not self._closing:
                    self._text(payload.decode())
            elif opcode == Opcode.PING:
                if not self._closing:  # §5.5.2: a pong with the ping's payload
                    self._transport_write(frame(Opcode.PONG, payload))
            elif opcode == Opcode.CLOSE:
                self._client_closed(payload)
                return
            elif opcode == Opcode.BINARY and self._challenge is not None:
                self._refuse("the first message must be a hello (a text message)")
            # Other binary messages carry nothing in this protocol; pongs are only heard.

    # -- messages ---------------------------------------------------------------------

    def _text(self, text: str) -> None:
        backlog = self._backlog
        if backlog is not None:  # a task is handling one: keep the order
            backlog.append(text)
            if len(backlog) >= self._signaling.queue_limit and self._transport is not None:
                self._transport.pause_reading()
            return
        if self._signaling.hub.inline is not None:
            self._handle_now(text)
            return
        self._backlog = deque()
        self._worker = asyncio.get_running_loop().create_task(self._work(text))

    def _handle_now(self, text: str) -> None:
        """A message, on the in-process bus (nothing waits)."""
        signaling = self._signaling
        connection = self._connection
        if connection is None:
            connection = self._hello(text)
            if connection is not None:
                signaling.hub.register_now(connection)
                self._welcome(connection)
            return
        delivery = signaling.plan(connection, self._who, text)
        if delivery is not None:
            reached = signaling.hub.send_now(delivery.address, delivery.payload)
            signaling.outcome(connection, delivery, reached)

    async def _handle(self, text: str) -> None:
        """A message, on a networked bus."""
        signaling = self._signaling
        connection = self._connection
        if connection is None:
            connection = self._hello(text)
            if connection is not None:
                await signaling.hub.register(connection)
                self._welcome(connection)
            return
        delivery = signaling.plan(connection, self._who, text)
        if delivery is not None:
            reached = await signaling.hub.send(delivery.address, delivery.payload)
            signaling.outcome(connection, delivery, reached)

    async def _work(self, text: str) -> None:
        """Handle ``text`` and whatever queues behind it, in order, then end."""
        backlog = self._backlog
        try:
            while not (self._lost or self._closing):
                try:
                    await self._handle(text)
                except StoreError as exc:
                    log.warning("signaling: store unavailable: %s", exc)
                    if self._connection is not None:
                        self._connection.push(self._signaling.unavailable())
                    self._start_close(INTERNAL_ERROR, b"signaling unavailable")
                    break
                if not backlog:
                    break
                text = backlog.popleft()
                transport = self._transport
                if transport is not None and not transport.is_reading() and not self._lost:
                    transport.resume_reading()
        finally:
            self._backlog = self._worker = None
            if self._lost:
                self._leave()

    def _hello(self, text: str) -> Connection | None:
        challenge, transport = self._challenge, self._transport
        if challenge is None or transport is None:
            return None
        try:
            peer_id = self._signaling.hello(challenge, text)
        except Refused as exc:
            self._refuse(str(exc))
            return None
        self._challenge = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._signaling.waiting.discard(self)
        connection = self._signaling.connection(self, transport, peer_id, self._who)
        self._connection = connection
        return connection

    def _welcome(self, connection: Connection) -> None:
        connection.push(self._signaling.welcome(connection))
        connection.start_pings(self._signaling.ping_interval, self._alive)

    def _alive(self) -> bool:
        """Each ping interval: False (and the connection dropped) if the client said
        nothing since the last one, else a ping frame for it to answer."""
        transport = self._transport
        if self._lost or self._closing or transport is None:
            return False
        if not self._heard:
            log.info("signaling: %s went silent, dropping it", self._peer())
            transport.abort()
            return False
        self._heard = False
        transport.write(_PING)
        return True

    def _leave(self) -> None:
        """The connection is gone: out of the hub (once)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.end()
        hub = self._signaling.hub
        if hub.inline is not None:
            hub.unregister_now(connection)
        else:
            self._signaling.spawn(hub.unregister(connection))

    # -- closing ----------------------------------------------------------------------

    def _refuse(self, problem: str) -> None:
        if self._closing or self._lost:
            return
        self._write_text(self._signaling.refusal(problem).encode())
        self._start_close(UNAUTHENTICATED, b"unauthenticated")

    def _start_close(self, code: int, reason: bytes) -> bool:
        """Send the close frame; the connection closes when the client answers, or after
        ``CLOSE_TIMEOUT``. False: it was sent before."""
        transport = self._transport
        if self._closing or self._lost or transport is None:
            return False
        if self._connection is not None:
            self._connection.flush()  # this loop turn's messages go before the close
        self._closing = True
        transport.write(frame(Opcode.CLOSE, close_payload(code, reason.decode(errors="replace"))))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
        return True

    def _client_closed(self, payload: bytes) -> None:
        """The client's close frame: echo its code (§5.5.1) unless ours went first, then
        close the TCP connection (§7.1.1: the server closes it first)."""
        transport = self._transport
        if transport is None:
            return
        if not self._closing:
            if self._connection is not None:
                self._connection.flush()
            self._closing = True
            transport.write(frame(Opcode.CLOSE, payload[:2]))
        transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """A framing fault (§7.1.7): the close frame with its code, and no more reading
        of frames. Our side of the TCP connection is shut at once, the rest when the
        client's ends (closing it with unread data would reset it, and the client might
        never see why) or after ``CLOSE_TIMEOUT``."""
        transport = self._transport
        if transport is None or self._lost:
            return
        self._failed = True
        if not self._closing:
            self._closing = True
            if self._connection is not None:
                self._connection.flush()
            transport.write(frame(Opcode.CLOSE, close_payload(code, reason)))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    # -- writing ----------------------------------------------------------------------

    def _write_text(self, data: bytes) -> None:
        self._transport_write(frame_header(Opcode.TEXT, len(data)) + data)

    def _transport_write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _peer(self) -> str:
        connection = self._connection
        return connection.peer_id if connection is not None else "a peer"
