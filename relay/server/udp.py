"""The asyncio shim around a sans-IO datagram core: one protocol object per bound socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from typing import cast

from relay.endpoint import Endpoint
from relay.server import mmsg
from relay.server.binding import Address, Reply
from relay.server.counters import StunCounters
from relay.server.listeners import Listener

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Address, int], Reply | None]

# Room for bursts: the kernel default (~200 KiB) drops under a load test long before the
# process is saturated. Best effort: capped by net.core.rmem_max / wmem_max.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class DatagramShim(asyncio.DatagramProtocol):
    """Feeds each datagram to ``handle`` and sends the reply from the socket it names."""

    __slots__ = ("_counters", "_handle", "_index", "_transports")

    def __init__(
        self,
        handle: Handler,
        index: int,
        transports: list[asyncio.DatagramTransport | None],
        counters: StunCounters,
    ) -> None:
        self._counters = counters
        self._handle = handle
        self._index = index
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports[self._index] = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        reply = self._handle(data, addr, self._index)
        if reply is not None:
            transport = self._transports[reply[1]]
            if transport is not None:
                try:
                    transport.sendto(reply[0], reply[2])
                except OSError as exc:  # e.g. an unroutable destination: not our problem
                    self._counters.send_failures += 1
                    log.debug("sendto %s failed: %s", reply[2], exc)

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

    def __init__(self) -> None:
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
) -> Listening:
    """Bind every listener and start feeding ``handle``.

    With ``batched`` (and on Linux) the sockets are served with recvmmsg/sendmmsg
    (``relay.server.mmsg``); otherwise through the event loop's datagram transports.
    """
    loop = asyncio.get_running_loop()
    listening = Listening()
    sockets: list[socket.socket] = []
    try:
        for listener in listeners:
            sockets.append(bind_udp(listener.address, reuse_port=reuse_port))
        if batched and mmsg.available():
            for listener, sock in zip(listeners, sockets, strict=True):
                served = mmsg.BatchedDatagramSocket(sock, listener.index, handle, sockets, counters)
                served.start(loop)
                listening.add(sock.close)
                listening.add(lambda served=served: served.stop(loop))  # type: ignore[misc]
        else:
            transports: list[asyncio.DatagramTransport | None] = [None] * len(listeners)
            for listener, sock in zip(listeners, sockets, strict=True):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda i=listener.index: DatagramShim(handle, i, transports, counters),  # type: ignore[misc]
                    sock=sock,
                )
                listening.add(transport.close)
    except BaseException:
        listening.close()
        for sock in sockets:
            sock.close()
        raise
    return listening
