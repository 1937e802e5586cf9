"""Relayed UDP sockets on the event loop: the I/O side of ``RelayPorts``/``RelaySocket``.

Each allocation's relayed transport address is a UDP socket bound to the relay IP of its
family, on a random port in ``[min_port, max_port]``. With the C data plane
(``relay.server.batched``) every relayed socket joins its epoll set: the event loop wakes
once for all ready relayed sockets, ChannelData on installed routes is relayed there, and
the remaining datagrams come back for the TURN core. Without it each socket has its own
reader, and datagrams are read with ``recvfrom_into`` into one buffer shared by every
relayed socket (the loop is single threaded). Either way the core's reply goes to the
dispatcher (``serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Mapping

from relay.server.batched import DataPlane
from relay.server.types import Address, Reply
from relay.turn.allocation import Allocation

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
BIND_ATTEMPTS = 64


class UdpRelaySocket:
    """One relayed transport address (RFC 8656 §2.2)."""

    __slots__ = ("_fd", "_ports", "_sock", "address", "allocation", "family", "send")

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        ports: UdpRelayPorts,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self.family = socket.AddressFamily(sock.family)
        self.address = address
        self.allocation: Allocation | None = None
        self._ports = ports
        # The Sink interface, bound straight to the socket: no Python frame per datagram.
        self.send: Callable[[bytes, Address], object] = sock.sendto
        ports.watch(self)

    def fileno(self) -> int:
        return self._fd

    def _readable(self) -> None:
        # One datagram per wakeup: readiness is level-triggered, so the loop calls again
        # while more are queued, and the common case (one datagram per peer per
        # iteration) costs no extra recvfrom that ends in EAGAIN.
        ports = self._ports
        try:
            size, addr = self._sock.recvfrom_into(ports.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ICMP errors for earlier sends surface here
            log.debug("relay %s: %s", self.address, exc)
            return
        reply = ports.handle(self, bytes(ports.view[:size]), addr, ports.time())
        if reply is not None:
            ports.send(reply)

    def close(self) -> None:
        if self._fd >= 0:
            self._ports.unwatch(self)
            self._sock.close()
            self._fd = -1


class UdpRelayPorts:
    """Binds relayed sockets in the configured port range on the relay addresses.

    ``relay_ips`` maps each family to ``(bind_ip, advertised_ip)``: they differ behind a
    1:1 NAT (``--external-ip PUBLIC/PRIVATE``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        relay_ips: Mapping[socket.AddressFamily, tuple[str, str]],
        *,
        min_port: int,
        max_port: int,
        time: Callable[[], float],
    ) -> None:
        self.loop = loop
        self.relay_ips = dict(relay_ips)
        self.min_port = min_port
        self.max_port = max_port
        self.time = time
        # Set by ``serve`` once the core and the dispatcher exist: a peer's datagram goes
        # to ``handle`` (the TURN core) and its reply to ``send`` (the dispatcher).
        self.handle: Callable[[UdpRelaySocket, bytes, Address, float], Reply | None] = (
            lambda relay, data, addr, now: None
        )
        self.send: Callable[[Reply], None] = lambda reply: None
        self.buffer = bytearray(MAX_DATAGRAM)
        self.view = memoryview(self.buffer)
        self._random = random.SystemRandom()
        self._dataplane: DataPlane | None = None
        self._by_fd: dict[int, UdpRelaySocket] = {}  # the sockets in the data plane

    def serve(
        self,
        handle: Callable[[UdpRelaySocket, bytes, Address, float], Reply | None],
        send: Callable[[Reply], None],
        dataplane: DataPlane | None = None,
    ) -> None:
        """Start relaying: before any relayed socket is bound."""
        self.handle = handle
        self.send = send
        if dataplane is not None and not self._by_fd:
            self._dataplane = dataplane
            self.loop.add_reader(dataplane.epoll_fd, self._drain)

    def stop(self) -> None:
        if self._dataplane is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self._dataplane.epoll_fd)
            self._dataplane = None

    def watch(self, relay: UdpRelaySocket) -> None:
        fd = relay.fileno()
        if self._dataplane is not None:
            self._dataplane.add_relay(fd)
            self._by_fd[fd] = relay
        else:
            self.loop.add_reader(fd, relay._readable)

    def unwatch(self, relay: UdpRelaySocket) -> None:
        fd = relay.fileno()
        if self._by_fd.pop(fd, None) is not None:
            if self._dataplane is not None and not self._dataplane.closed:
                self._dataplane.remove_relay(fd)
        else:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(fd)

    def _drain(self) -> None:
        """Some relayed sockets are readable: the data plane relays what it has routes
        for and returns the rest for the core."""
        dataplane = self._dataplane
        if dataplane is None:
            return
        now = self.time()
        misses = dataplane.drain_relays(now)
        if misses is not None:
            by_fd, handle, send = self._by_fd, self.handle, self.send
            for fd, data, addr in misses:
                relay = by_fd.get(fd)
                if relay is not None:
                    reply = handle(relay, data, addr, now)
                    if reply is not None:
                        send(reply)

    def families(self) -> frozenset[socket.AddressFamily]:
        return frozenset(self.relay_ips)

    def _open(
        self, family: socket.AddressFamily, port: int, *, shared: bool
    ) -> tuple[socket.socket, str] | None:
        """A non-blocking UDP socket bound to ``port`` on the relay address of ``family``
        (``shared``: with SO_REUSEPORT), and the address to advertise for it."""
        ips = self.relay_ips.get(family)
        if ips is None or not self.min_port <= port <= self.max_port:
            return None
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ips[0], port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        return sock, ips[1]

    def _relay(self, sock: socket.socket, advertised: str, port: int) -> UdpRelaySocket:
        return UdpRelaySocket(sock, (advertised, port), self)

    def hold(self, family: socket.AddressFamily, port: int) -> socket.socket | None:
        """A socket that keeps ``port`` for a reservation and receives nothing: bound with
        SO_REUSEPORT (so the claiming worker can bind it too) and connected to itself."""
        opened = self._open(family, port, shared=True)
        if opened is None:
            return None
        sock = opened[0]
        try:
            sock.connect(sock.getsockname())
        except OSError:
            sock.close()
            return None
        return sock

    def claim(self, family: socket.AddressFamily, port: int) -> UdpRelaySocket | None:
        """Bind a held port (any worker): SO_REUSEPORT to join the holder, then off, so
        that no further bind of the port succeeds (a token is good once)."""
        opened = self._open(family, port, shared=True)
        if opened is None:
            return None
        sock, advertised = opened
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        return self._relay(sock, advertised, port)

    def bind(self, family: socket.AddressFamily, port: int | None) -> UdpRelaySocket | None:
        """``port``, or a random free port in range."""
        candidates = (
            [port]
            if port is not None
            else [self._random.randint(self.min_port, self.max_port) for _ in range(BIND_ATTEMPTS)]
        )
        for candidate in candidates:
            opened = self._open(family, candidate, shared=False)
            if opened is not None:
                return self._relay(opened[0], opened[1], candidate)
            if family not in self.relay_ips:
                return None
        return None
