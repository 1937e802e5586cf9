"""Batched UDP I/O for the hot path: ``recvmmsg(2)`` / ``sendmmsg(2)`` through ctypes.

A Python server pays a fixed cost per datagram for each trip through the event loop and
each system call; on loopback that overhead is the larger part of a STUN Binding's cost.
``BatchedDatagramSocket`` drains a readable socket up to ``BATCH`` datagrams per system
call, feeds each to the sans-IO handler and sends the replies that go back to their
sender from the same socket in one ``sendmmsg``. Replies that leave from another socket
(RFC 5780 CHANGE-REQUEST) or go elsewhere (RESPONSE-PORT) use a plain ``sendto``.

Linux/glibc only (the struct layouts below are glibc's); ``available()`` says whether it
can be used, and the relay falls back to the event loop's datagram transport otherwise.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from relay.server.counters import DropReason, StunCounters
from relay.server.types import Address, Reply

if TYPE_CHECKING:
    from relay.server.udp import Dispatcher

log = logging.getLogger(__name__)

Handler = Callable[[bytes, Address, int, float], Reply | None]

BATCH = 64
BUFFER_SIZE = 2048  # larger than any datagram a STUN server accepts over UDP
# Then yield to the event loop (level-triggered: we come back). Small, so that relayed
# sockets and timers get their turn between batches: latency over a few more wakeups.
MAX_BATCHES_PER_WAKEUP = 2
_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20
_SOCKADDR_IN6_SIZE = 28


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_LEN_OFFSET = _MMsgHdr.msg_len.offset
_FLAGS_OFFSET = _MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset
_IOV_SIZE = ctypes.sizeof(_IoVec)
_IOV_LEN_OFFSET = _IoVec.iov_len.offset
_UINT = struct.Struct("=I")
_INT = struct.Struct("=i")
_SIZE_T = struct.Struct("@N")

_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _recvmmsg = _libc.recvmmsg
        _sendmmsg = _libc.sendmmsg
        _recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        _recvmmsg.restype = ctypes.c_int
        _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        _sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        _libc = None


def available() -> bool:
    """Whether batched I/O can be used on this platform."""
    return _libc is not None


def _decode_sockaddr(raw: bytes) -> Address:
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flowinfo = int.from_bytes(raw[4:8], "big")
    scope_id = int.from_bytes(raw[24:28], sys.byteorder)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id


class _Vector:
    """``BATCH`` message headers, each with its own data buffer and address buffer."""

    def __init__(self, namelen: int) -> None:
        self.data = bytearray(BATCH * BUFFER_SIZE)
        self.names = bytearray(BATCH * _SOCKADDR_IN6_SIZE)
        self.iovs = (_IoVec * BATCH)()
        self.msgs = (_MMsgHdr * BATCH)()
        data_base = ctypes.addressof((ctypes.c_char * len(self.data)).from_buffer(self.data))
        names_base = ctypes.addressof((ctypes.c_char * len(self.names)).from_buffer(self.names))
        for i in range(BATCH):
            self.iovs[i].iov_base = data_base + i * BUFFER_SIZE
            self.iovs[i].iov_len = BUFFER_SIZE
            header = self.msgs[i].msg_hdr
            header.msg_name = names_base + i * _SOCKADDR_IN6_SIZE
            header.msg_namelen = namelen
            header.msg_iov = ctypes.addressof(self.iovs[i])
            header.msg_iovlen = 1
        self.data_view = memoryview(self.data)
        self.names_view = memoryview(self.names)
        self.msgs_view = memoryview(self.msgs).cast("B")
        self.iovs_view = memoryview(self.iovs).cast("B")
        self.msgs_address = ctypes.addressof(self.msgs)


class BatchedDatagramSocket:
    """One bound, non-blocking UDP socket served with recvmmsg/sendmmsg.

    Replies to its own datagrams go out in one ``sendmmsg`` per received batch; datagrams
    that other parts of the relay send from this socket (relayed peer data towards TURN
    clients) are queued with ``queue`` and go out in one ``sendmmsg`` per event-loop
    iteration.
    """

    def __init__(
        self,
        sock: socket.socket,
        index: int,
        handle: Handler,
        dispatcher: Dispatcher,
        counters: StunCounters,
        time: Callable[[], float],
    ) -> None:
        self._sock = sock
        self._counters = counters
        self._fd = sock.fileno()
        self._index = index
        self._handle = handle
        self._dispatcher = dispatcher
        self._time = time
        # Each socket has one family (IPv6 sockets are V6ONLY), so the kernel always
        # writes the same address length and the headers never need resetting.
        self._namelen = 16 if sock.family == socket.AF_INET else _SOCKADDR_IN6_SIZE
        self._rx = _Vector(self._namelen)
        self._tx = _Vector(self._namelen)
        self._addresses: dict[bytes, Address] = {}  # sockaddr bytes -> address
        self._names: dict[Address, bytes] = {}  # and back, for ``queue``
        self._queued = 0  # messages waiting in the send vector
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._fd, self._on_readable)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self._fd)
        self._flush_queue()
        self._loop = None

    def _on_readable(self) -> None:
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            count = _recvmmsg(self._fd, self._rx.msgs_address, BATCH, _MSG_DONTWAIT, None)
            if count <= 0:
                if count < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EINTR):
                    log.debug("recvmmsg: %s", errno.errorcode.get(ctypes.get_errno()))
                return
            self._process(count)
            if count < BATCH:
                return

    def queue(self, payload: bytes, destination: Address) -> None:
        """Send ``payload`` to ``destination`` from this socket, batched."""
        name = self._names.get(destination)
        if name is None or len(payload) > BUFFER_SIZE or self._loop is None:
            self._sock.sendto(payload, destination)  # OSError: the dispatcher counts it
            return
        if self._queued == BATCH:
            self._flush_queue()
        self._put(self._queued, payload, name)
        self._queued += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_queue)

    def _flush_queue(self) -> None:
        self._flush_scheduled = False
        if self._queued:
            queued, self._queued = self._queued, 0
            self._flush(queued)

    def _put(self, slot: int, payload: bytes, name: bytes) -> None:
        tx = self._tx
        out = slot * BUFFER_SIZE
        tx.data_view[out : out + len(payload)] = payload
        at = slot * _SOCKADDR_IN6_SIZE
        tx.names_view[at : at + self._namelen] = name
        _SIZE_T.pack_into(tx.iovs_view, slot * _IOV_SIZE + _IOV_LEN_OFFSET, len(payload))

    def _process(self, count: int) -> None:
        rx = self._rx
        rx_msgs, rx_data, rx_names = rx.msgs_view, rx.data_view, rx.names_view
        namelen, index, handle = self._namelen, self._index, self._handle
        addresses, put = self._addresses, self._put
        now = self._time()
        for i in range(count):
            base = i * _MMSG_SIZE
            if _INT.unpack_from(rx_msgs, base + _FLAGS_OFFSET)[0] & _MSG_TRUNC:
                # Cut to fit the buffer: what is left could even look valid. Drop it.
                self._counters.dropped[DropReason.TOO_LARGE] += 1
                continue
            length = _UINT.unpack_from(rx_msgs, base + _LEN_OFFSET)[0]
            offset = i * BUFFER_SIZE
            data = bytes(rx_data[offset : offset + length])
            name_at = i * _SOCKADDR_IN6_SIZE
            name = bytes(rx_names[name_at : name_at + namelen])
            addr = addresses.get(name)
            if addr is None:
                addr = _decode_sockaddr(name)
                if len(addresses) >= 65536:
                    addresses.clear()
                    self._names.clear()
                addresses[name] = addr
                self._names[addr] = name
            reply = handle(data, addr, index, now)
            if reply is None:
                continue
            payload, send_from, destination = reply
            if send_from != index or destination is not addr or len(payload) > BUFFER_SIZE:
                self._dispatcher.send(reply)
                continue
            if self._queued == BATCH:
                self._flush_queue()
            put(self._queued, payload, name)
            self._queued += 1
        self._flush_queue()

    def _flush(self, queued: int) -> None:
        start = 0
        while start < queued:
            sent = _sendmmsg(
                self._fd, self._tx.msgs_address + start * _MMSG_SIZE, queued - start, 0
            )
            if sent <= 0:
                if sent < 0 and ctypes.get_errno() == errno.EINTR:
                    continue
                # Send buffer full (EAGAIN) or an error for one destination: UDP may
                # drop; skip the message at the head and carry on with the rest.
                self._counters.send_failures += 1
                start += 1
                continue
            start += sent
