"""Bare STUN Binding responder: the ceiling a Python/uvloop UDP server can reach.

Answers every datagram with a fixed-size Binding success response: the
transaction id is copied into a precomputed header and the XOR-MAPPED-ADDRESS
for the sender is cached per address, so the per-packet work is one slice, one
dict lookup, two concatenations and ``transport.sendto``.  Nothing is parsed
or validated.

Variants that inform the design of a real server:

* ``--mode asyncio``: the stock asyncio (selector) loop instead of uvloop.
* ``--work-us N``: busy-spin N microseconds per packet (simulated handler work).
* ``--stun``: a minimal but *correct* handler - parse the header, check the
  cookie/length, walk the attributes, verify FINGERPRINT, and build a response
  with XOR-MAPPED-ADDRESS and FINGERPRINT (no caching).

Prints ``READY <port>`` on stdout once bound; stops on SIGTERM/SIGINT or after
``--max-seconds``.  Binds loopback by default.

Usage::

    .venv/bin/python benchmarks/bare_responder.py --port 0 [--mode asyncio] [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any, cast

MAGIC_COOKIE = 0x2112A442
COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
# Header of a success response whose only attribute is an IPv4 XOR-MAPPED-ADDRESS.
V4_HEADER = struct.pack("!HHI", BINDING_SUCCESS, 12, MAGIC_COOKIE)
CACHE_LIMIT = 4096

Addr = tuple[Any, ...]


def xor_mapped_address(addr: Addr, txid: bytes) -> bytes:
    """Encode an XOR-MAPPED-ADDRESS attribute (header included) for ``addr``."""
    host, port = addr[0], addr[1]
    ip = ipaddress.ip_address(host)
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        xaddr = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!HHBBHI", ATTR_XOR_MAPPED_ADDRESS, 8, 0, 1, xport, xaddr)
    mask = int.from_bytes(COOKIE_BYTES + txid, "big")
    xaddr6 = (int(ip) ^ mask).to_bytes(16, "big")
    return struct.pack("!HHBBH", ATTR_XOR_MAPPED_ADDRESS, 20, 0, 2, xport) + xaddr6


def _not_connected(data: bytes, addr: Addr) -> None:
    raise RuntimeError("transport not connected")


class BareProtocol(asyncio.DatagramProtocol):
    """Copy the transaction id into a template; cache the mapped address."""

    def __init__(self) -> None:
        self.sendto: Callable[[bytes, Addr], None] = _not_connected
        self.cache: dict[Addr, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport is not an asyncio.DatagramTransport subclass.
        self.sendto = cast(asyncio.DatagramTransport, transport).sendto

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if len(data) < 20:
            return
        tail = self.cache.get(addr)
        if tail is None:
            if len(addr) != 2:  # IPv6: the XOR mask depends on the transaction id
                body = xor_mapped_address(addr, data[8:20])
                header = struct.pack("!HHI", BINDING_SUCCESS, len(body), MAGIC_COOKIE)
                self.sendto(header + data[8:20] + body, addr)
                return
            if len(self.cache) >= CACHE_LIMIT:
                self.cache.clear()
            tail = self.cache[addr] = xor_mapped_address(addr, b"")
        self.sendto(V4_HEADER + data[8:20] + tail, addr)


class SpinProtocol(BareProtocol):
    """The bare responder plus a fixed busy-wait per packet."""

    def __init__(self, work_us: float) -> None:
        super().__init__()
        self.work_ns = int(work_us * 1000)
        self.clock: Callable[[], int] = time.perf_counter_ns

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        clock = self.clock
        end = clock() + self.work_ns
        while clock() < end:
            pass
        super().datagram_received(data, addr)


HEADER = struct.Struct("!HHI")
ATTR_HEADER = struct.Struct("!HH")
U32 = struct.Struct("!I")
XMA_V4 = struct.Struct("!HHBBH4s")
COOKIE_PORT = MAGIC_COOKIE >> 16
# Response header for XOR-MAPPED-ADDRESS (IPv4) + FINGERPRINT, without transaction id.
V4_FP_HEADER = HEADER.pack(BINDING_SUCCESS, 20, MAGIC_COOKIE)
FP_ATTR = ATTR_HEADER.pack(ATTR_FINGERPRINT, 4)


def handle_stun(data: bytes, addr: Addr) -> bytes | None:
    """A minimal, correct and reasonably careful Binding handler.

    Validates the header, walks the attributes, verifies FINGERPRINT, and
    answers with XOR-MAPPED-ADDRESS + FINGERPRINT (no per-address caching).
    """
    end = len(data)
    if end < 20 or data[0] & 0xC0:
        return None
    msg_type, length, cookie = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or length + 20 != end or length & 3 or msg_type != BINDING_REQUEST:
        return None
    pos = 20
    while pos + 4 <= end:
        atype, alen = ATTR_HEADER.unpack_from(data, pos)
        if pos + 4 + alen > end:
            return None
        if atype == ATTR_FINGERPRINT:
            if alen != 4 or pos + 8 != end:
                return None
            if U32.unpack_from(data, pos + 4)[0] != zlib.crc32(data[:pos]) ^ FINGERPRINT_XOR:
                return None
        pos += 4 + ((alen + 3) & ~3)
    txid = data[8:20]
    if len(addr) == 2:
        packed = socket.inet_aton(addr[0])
        xaddr = (int.from_bytes(packed, "big") ^ MAGIC_COOKIE).to_bytes(4, "big")
        xma = XMA_V4.pack(ATTR_XOR_MAPPED_ADDRESS, 8, 0, 1, addr[1] ^ COOKIE_PORT, xaddr)
        msg = V4_FP_HEADER + txid + xma
    else:
        body = xor_mapped_address(addr, txid)
        msg = HEADER.pack(BINDING_SUCCESS, len(body) + 8, MAGIC_COOKIE) + txid + body
    return msg + FP_ATTR + U32.pack(zlib.crc32(msg) ^ FINGERPRINT_XOR)


class StunProtocol(BareProtocol):
    """Parse and validate every request, answer with XOR-MAPPED-ADDRESS + FINGERPRINT."""

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        reply = handle_stun(data, addr)
        if reply is not None:
            self.sendto(reply, addr)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    sock.bind((args.host, args.port))
    sock.setblocking(False)

    def factory() -> BareProtocol:
        if args.stun:
            return StunProtocol()
        if args.work_us > 0:
            return SpinProtocol(args.work_us)
        return BareProtocol()

    transport, _ = await loop.create_datagram_endpoint(factory, sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except TimeoutError:
        pass
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mode", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--work-us", type=float, default=0.0, help="busy work per packet")
    parser.add_argument("--stun", action="store_true", help="parse/validate, add FINGERPRINT")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="lifetime bound")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.mode == "uvloop":
        import uvloop

        runner: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        runner = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=runner) as r:
        r.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
