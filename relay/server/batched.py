"""Listening UDP sockets served by the C data plane (``relay.server._dataplane``).

A Python server pays a fixed cost per datagram for each trip through the event loop and
each system call. Here every readable listening socket is drained with ``recvmmsg(2)``,
up to 64 datagrams per call; ChannelData on a route the TURN core installed is relayed
inside the data plane (``relay.turn.routes``), and everything else comes back as
``(data, address)`` for the sans-IO handler. Replies that go back out of the same socket
are queued and leave in one ``sendmmsg(2)`` per wakeup; the rest go through the
``Dispatcher`` (a reply from another listening socket for RFC 5780 CHANGE-REQUEST, a
relayed socket, a TCP connection).

Linux only, and only when the extension was built: ``available()`` says so, and the relay
falls back to the event loop's datagram transports otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from relay.server.counters import DropReason, StunCounters
from relay.server.types import Address, Reply

if TYPE_CHECKING:
    from relay.server.udp import Dispatcher

try:
    from relay.server import _dataplane
    from relay.server._dataplane import DataPlane, Route
except ImportError:  # not built: another OS, or no C compiler at install time
    _dataplane = None  # type: ignore[assignment]
    DataPlane = Route = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Address, int, float], Reply | None]

__all__ = ["BatchedListeners", "DataPlane", "Route", "available", "sockaddr"]


def available() -> bool:
    """Whether the data plane extension is built for this platform."""
    return _dataplane is not None


def new_data_plane(sockets: Sequence[socket.socket]) -> DataPlane:
    if _dataplane is None:
        raise RuntimeError("relay.server._dataplane is not built")
    return _dataplane.DataPlane([(s.fileno(), int(s.family)) for s in sockets])


def sockaddr(family: socket.AddressFamily, address: Address) -> bytes:
    """``address`` as the ``struct sockaddr`` bytes the kernel writes (route keys)."""
    if _dataplane is None:
        raise RuntimeError("relay.server._dataplane is not built")
    return _dataplane.sockaddr(int(family), address)


class BatchedListeners:
    """All listening UDP sockets of one relay process, on one ``DataPlane``."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        handle: Handler,
        dispatcher: Dispatcher,
        counters: StunCounters,
        time: Callable[[], float],
    ) -> None:
        self.sockets = tuple(sockets)
        self.dataplane = new_data_plane(self.sockets)
        self._handle = handle
        self._dispatcher = dispatcher
        self._counters = counters
        self._time = time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for index, sock in enumerate(self.sockets):
            loop.add_reader(sock.fileno(), self._readable, index)

    def stop(self) -> None:
        if self._loop is not None:
            for sock in self.sockets:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(sock.fileno())
            self._loop = None
        self.dataplane.close()

    def _readable(self, index: int) -> None:
        dataplane = self.dataplane
        now = self._time()
        misses = dataplane.drain_listener(index, now)
        if misses is not None:
            handle, queue, dispatch = self._handle, dataplane.queue, self._dispatcher.send
            for data, addr in misses:
                reply = handle(data, addr, index, now)
                if reply is None:
                    continue
                if reply[1] != index or not queue(index, reply[0], reply[2]):
                    dispatch(reply)
        dataplane.flush(index)
        if dataplane.truncated or dataplane.send_failures:
            self.fold_counters()

    def fold_counters(self) -> None:
        """Add the data plane's drops and refused sends to the STUN counters."""
        dataplane, counters = self.dataplane, self._counters
        counters.dropped[DropReason.TOO_LARGE] += dataplane.truncated
        counters.send_failures += dataplane.send_failures
        dataplane.truncated = dataplane.send_failures = 0

    def queue(self, index: int, payload: bytes, destination: Address) -> None:
        """Send ``payload`` to ``destination`` from listener ``index``, batched with the
        other sends of this event-loop iteration. Raises OSError/ValueError as sendto."""
        if self._loop is None or not self.dataplane.queue(index, payload, destination):
            self.sockets[index].sendto(payload, destination)  # too large to batch
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.dataplane.closed:
            self.dataplane.flush()
            if self.dataplane.send_failures:
                self.fold_counters()
