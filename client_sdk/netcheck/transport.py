"""UDP sockets for probing: a sans-IO matcher and a thin asyncio shim around it.

``Matcher`` decides which datagrams matter: a Binding response (success or error) whose
transaction id a test is waiting for, or -- for the hairpinning test -- a Binding request
with an awaited id. Anything else (garbage, other methods, unknown ids, indications) is
dropped; ``Matcher.receive`` never raises and never changes what is awaited.

``ProbeSocket`` is one UDP socket bound to a random high port (RFC 5780 §4.1: a port with
no history in the NAT, not the next one the OS hands out), an asyncio DatagramProtocol
feeding the matcher, and ``transact``: send a request on a retransmission schedule and
wait for its answer. ``ProbeSocket.attach`` runs the same over a socket other code owns
and reads (the connectivity socket of ``client_sdk.connect``, which learns its own
server-reflexive address this way): that code hands it each datagram with ``feed``.

Retransmissions (RFC 8489 §6.2.1, which lets a client configure RTO): the default is RTO
250 ms (half the RFC's 500 ms default: netcheck is a short diagnostic and its servers are
chosen, not discovered) with sends at 0, 250 and 750 ms and the answer awaited until
1.5 s (Rc = 3, and a last wait of 3 x RTO instead of Rm = 16 x RTO): a path that answers
nothing in 1.5 s is reported as UDP blocked.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace

from client_sdk.netcheck.stun import Address, Kind, StunMessage, parse

# RFC 5780 §4.1 recommends picking ports at random from 32768-65535 ranges.
RANDOM_PORTS = range(49152, 65536)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When to (re)send a request, in seconds from the first send, and when to give up."""

    sends: tuple[float, ...]
    give_up: float

    @classmethod
    def rto(cls, rto: float, transmissions: int, last_wait: float) -> Schedule:
        """RFC 8489 §6.2.1 timing: send at 0, RTO, 3 RTO, 7 RTO... (``transmissions``
        sends in all), then wait ``last_wait`` after the last one."""
        sends = [0.0]
        interval = rto
        for _ in range(transmissions - 1):
            sends.append(sends[-1] + interval)
            interval *= 2
        return cls(tuple(sends), sends[-1] + last_wait)

    @classmethod
    def every(cls, interval: float, give_up: float) -> Schedule:
        """Send every ``interval`` seconds until ``give_up`` (for tests whose answer may
        never come, so the wait itself is the measurement)."""
        count = max(1, int(give_up / interval - 1e-9) + 1) if interval > 0 else 1
        return cls(tuple(i * interval for i in range(count)), give_up)


DEFAULT_SCHEDULE = Schedule.rto(0.25, 3, 0.75)  # 0, 0.25, 0.75; give up at 1.5 s


@dataclass(frozen=True, slots=True)
class Received:
    """A datagram a test was waiting for, and where it came from."""

    message: StunMessage
    source: Address
    at: float = 0.0  # event-loop time of arrival (set by ProbeSocket)


class Matcher:
    """Which received datagrams answer what is awaited (sans-IO)."""

    def __init__(self) -> None:
        self._responses: set[bytes] = set()
        self._requests: set[bytes] = set()

    def expect_response(self, transaction_id: bytes) -> None:
        self._responses.add(transaction_id)

    def expect_request(self, transaction_id: bytes) -> None:
        self._requests.add(transaction_id)

    def forget(self, transaction_id: bytes) -> None:
        self._responses.discard(transaction_id)
        self._requests.discard(transaction_id)

    @property
    def awaited(self) -> frozenset[bytes]:
        return frozenset(self._responses | self._requests)

    def receive(self, data: bytes, source: Address) -> Received | None:
        """The awaited message in ``data``, or None. Never raises."""
        message = parse(data)
        if message is None:
            return None
        tid = message.transaction_id
        awaited = self._requests if message.kind is Kind.REQUEST else self._responses
        return Received(message, source) if tid in awaited else None


class Pacer:
    """Spaces the start of new transactions (RFC 5780 §5 asks clients to pace them so
    that retransmissions do not synchronise; see ``probe`` for the rate chosen)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0

    async def wait(self) -> None:
        now = asyncio.get_running_loop().time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: ProbeSocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable, network unreachable on send): the tests read
        # silence as the answer, so there is nothing to do but keep listening.
        pass


def bind_random_port(family: socket.AddressFamily, host: str) -> socket.socket:
    """A non-blocking UDP socket on ``host`` at a random port of ``RANDOM_PORTS``."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for _ in range(32):
            try:
                sock.bind((host, secrets.choice(RANDOM_PORTS)))
                break
            except OSError:
                continue
        else:
            sock.bind((host, 0))  # every random pick was taken: the OS's choice then
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ProbeSocket:
    """One UDP socket on a random port, for one test (or one pair of tests that RFC 5780
    runs on the same mapping)."""

    def __init__(self) -> None:
        self.matcher = Matcher()
        self._waiters: dict[bytes, asyncio.Future[Received]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._owns_transport = True
        self.local_port = 0

    @classmethod
    async def open(cls, family: socket.AddressFamily) -> ProbeSocket:
        probe = cls()
        host = "0.0.0.0" if family == socket.AF_INET else "::"
        sock = bind_random_port(family, host)
        probe.local_port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(probe), sock=sock)
        except BaseException:
            sock.close()
            raise
        probe._transport = transport
        return probe

    @classmethod
    def attach(cls, transport: asyncio.DatagramTransport) -> ProbeSocket:
        """Transactions over ``transport``, which stays its owner's: its protocol passes
        every datagram to ``feed``, and ``close`` leaves the transport open."""
        probe = cls()
        probe._transport = transport
        probe._owns_transport = False
        sockname = transport.get_extra_info("sockname")
        probe.local_port = int(sockname[1]) if sockname else 0
        return probe

    def feed(self, data: bytes, addr: tuple[str | object, ...]) -> bool:
        """Handle one received datagram; True if it answered an awaited transaction (it
        is then this socket's), False for anything else. Never raises."""
        if len(addr) < 2 or not isinstance(addr[0], str) or not isinstance(addr[1], int):
            return False
        received = self.matcher.receive(data, (addr[0], addr[1]))
        if received is None:
            return False
        waiter = self._waiters.get(received.message.transaction_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(replace(received, at=asyncio.get_running_loop().time()))
        return True

    def _datagram(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.feed(data, addr)

    def watch(self, transaction_id: bytes, *, request: bool = False) -> asyncio.Future[Received]:
        """A future for the first awaited message with this id: a response, or with
        ``request`` a Binding request (someone else's, arriving at this socket)."""
        if request:
            self.matcher.expect_request(transaction_id)
        else:
            self.matcher.expect_response(transaction_id)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[transaction_id] = waiter
        return waiter

    def unwatch(self, transaction_id: bytes) -> None:
        self.matcher.forget(transaction_id)
        waiter = self._waiters.pop(transaction_id, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def send(self, data: bytes, destination: Address) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, destination)

    async def transact(
        self,
        destination: Address,
        request: bytes,
        transaction_id: bytes,
        schedule: Schedule = DEFAULT_SCHEDULE,
    ) -> tuple[Received, float] | None:
        """Send ``request`` on ``schedule`` until its answer; (answer, seconds since the
        first send) or None when none came in time."""
        waiter = self.watch(transaction_id)
        try:
            return await wait_with_resends(
                waiter, lambda: self.send(request, destination), schedule
            )
        finally:
            self.unwatch(transaction_id)

    def close(self) -> None:
        for tid in list(self._waiters):
            self.unwatch(tid)
        if self._transport is not None and self._owns_transport:
            self._transport.close()


async def wait_with_resends(
    waiter: asyncio.Future[Received], send: Callable[[], None], schedule: Schedule
) -> tuple[Received, float] | None:
    """Call ``send`` at ``schedule.sends`` until ``waiter`` resolves, waiting at most
    until ``schedule.give_up``; (what it resolved to, seconds from the first send to its
    arrival) or None. The round trip counts from the first send: with a retransmission
    it may be longer than the real one, never shorter (RFC 6298 §5's ambiguity, taken on
    the safe side by the timeouts derived from it)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at in schedule.sends:
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.wait((waiter,), timeout=delay)
        if waiter.done():
            break
        send()
    else:
        delay = start + schedule.give_up - loop.time()
        if delay > 0:
            await asyncio.wait((waiter,), timeout=delay)
    if waiter.done() and not waiter.cancelled():
        received = waiter.result()
        return received, max(0.0, received.at - start)
    return None


def first_of(*waiters: asyncio.Future[Received]) -> asyncio.Future[Received]:
    """A future resolved with whichever of ``waiters`` resolves first."""
    first: asyncio.Future[Received] = asyncio.get_running_loop().create_future()

    def done(waiter: asyncio.Future[Received]) -> None:
        if not first.done() and not waiter.cancelled():
            first.set_result(waiter.result())

    for waiter in waiters:
        waiter.add_done_callback(done)
    return first
