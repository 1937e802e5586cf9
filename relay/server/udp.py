"""The asyncio shims around the sans-IO datagram cores.

Listening sockets are served either by the C data plane (``relay.server.batched``:
batched recvmmsg/sendmmsg, Linux) or through the event loop's datagram transport
(``DatagramShim``). Either way a ``Dispatcher`` sends each reply: from a listening socket
(the reply names its index) or through a ``Sink`` (a relayed socket, a client connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence

from relay.endpoint import Endpoint
from relay.server import batched as batched_io
from relay.server.counters import StunCounters
from relay.server.listeners import Listener
from relay.server.types import Address, Reply

log = logging.getLogger(__name__)

# (data, client address, listener index, now) -> reply
Handler = Callable[[bytes, Address, int, float], Reply | None]

# Room for bursts: the kernel default (~200 KiB) drops under a load test long before the
# process is saturated. Best effort: capped by net.core.rmem_max / wmem_max.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class Dispatcher:
    """Sends replies: from listening socket ``n`` when the reply names ``n``, else through
    the ``Sink`` it names. UDP may drop: a refused send is counted, never raised."""

    __slots__ = ("_counters", "batched", "sockets")

    def __init__(self, sockets: Sequence[socket.socket], counters: StunCounters) -> None:
        self.sockets = sockets
        self.batched: batched_io.BatchedListeners | None = None
        self._counters = counters

    def send(self, reply: Reply) -> None:
        payload, sink, destination = reply
        try:
            if isinstance(sink, int):
                if self.batched is not None:
                    self.batched.queue(sink, payload, destination)
                else:
                    self.sockets[sink].sendto(payload, destination)
            else:
                sink.send(payload, destination)
        except (OSError, ValueError) as exc:  # buffer full, unroutable: UDP may drop
            self._counters.send_failures += 1
            log.debug("send to %s failed: %s", destination, exc)


class DatagramShim(asyncio.DatagramProtocol):
    """Feeds each datagram to ``handle`` and passes the reply to the dispatcher."""

    __slots__ = ("_dispatcher", "_handle", "_index", "_time")

    def __init__(
        self, handle: Handler, index: int, dispatcher: Dispatcher, time: Callable[[], float]
    ) -> None:
        self._handle = handle
        self._index = index
        self._dispatcher = dispatcher
        self._time = time

    def datagram_received(self, data: bytes, addr: Address) -> None:
        reply = self._handle(data, addr, self._index, self._time())
        if reply is not None:
            self._dispatcher.send(reply)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends (port unreachable, ...): expected on the internet.
        log.debug("socket %d: %s", self._index, exc)


def bind_udp(address: Endpoint, *, reuse_port: bool) -> socket.socket:
    """A non-blocking UDP socket bound to ``address``."""
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if address.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        sock.bind((address.host, address.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listening:
    """The bound sockets of a set of listeners, served until ``close()``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        # The C data plane serving them, when batched: relayed sockets join it too.
        self.dataplane: batched_io.DataPlane | None = None
        self._closers: list[Callable[[], None]] = []

    def add(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()


async def open_listeners(
    listeners: Sequence[Listener],
    handle: Handler,
    counters: StunCounters,
    *,
    reuse_port: bool,
    batched: bool = True,
    bound: Sequence[socket.socket] | None = None,
) -> Listening:
    """Bind every listener (or take ``bound``, one socket per listener, already bound)
    and start feeding ``handle``.

    With ``batched`` (and the data plane built) the sockets are served by
    ``relay.server.batched``; otherwise through the event loop's datagram transports.
    """
    loop = asyncio.get_running_loop()
    sockets: list[socket.socket] = []
    dispatcher = Dispatcher(sockets, counters)
    listening = Listening(dispatcher)
    try:
        if bound is not None:
            for sock in bound:
                sock.setblocking(False)
                sockets.append(sock)
        else:
            for listener in listeners:
                sockets.append(bind_udp(listener.address, reuse_port=reuse_port))
        if batched and batched_io.available():
            if [listener.index for listener in listeners] != list(range(len(listeners))):
                raise ValueError("listener indexes must be 0, 1, ... in order")
            served = batched_io.BatchedListeners(sockets, handle, dispatcher, counters, loop.time)
            for sock in sockets:
                listening.add(sock.close)
            served.start(loop)
            listening.add(served.stop)
            dispatcher.batched = served
            listening.dataplane = served.dataplane
        else:
            for listener, sock in zip(listeners, sockets, strict=True):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda i=listener.index: DatagramShim(handle, i, dispatcher, loop.time),  # type: ignore[misc]
                    sock=sock,
                )
                listening.add(transport.close)
    except BaseException:
        listening.close()
        for sock in sockets:
            sock.close()
        raise
    return listening
