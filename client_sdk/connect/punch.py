"""Finding a direct path by hole punching, sans-IO: ``Punch`` (issue #6, the direct path).

The probes *are* the secure channel's handshake. Both sides start a ``SecureSession`` as
initiator toward the peer they expect (``remote_peer_id``: the dialler's and the
accepter's sessions each accept only the other) and, from the moment the rendezvous's
``punch_now`` names, send its Noise message 1 to every candidate of the other side on the
schedule ``probe_times`` gives (every ``fast_interval`` for ``fast_for`` seconds, then
every ``slow_interval``, until ``timeout``). Those outgoing datagrams open each side's NAT
toward the other; the first ones to arrive are usually dropped by the other NAT, later
ones get through once both have sent. The session's simultaneous-open rule decides the
roles: the peer with the lower peer id stays initiator and ignores the other's message 1;
the higher one answers the first message 1 that reaches it with message 2, *to the
address that message came from*; message 3 goes back to where message 2 came from.

**The path is fixed by authenticated messages only.** The initiator takes the source of
the first message 2 that authenticates (it carries the responder's identity signature
over the transcript, bound to both peer ids); the responder takes the source of the
first message 3 that authenticates. A datagram from anyone else -- forged, replayed
from another address before the handshake completes, or a real peer that is not the one
named -- fails the Noise checks and changes nothing, so an off-path third party cannot
steer or take over the path. (As in WireGuard, an on-path attacker who races a captured
datagram from its own address could steer where our datagrams go until the next
authenticated one arrives; it still reads and forges nothing.)

**Done** (``PathFound``) when both know the other can hear them: the responder on message
3, the initiator on the first authenticated transport datagram (the responder's
confirmation keepalive). ``rtt`` comes from those exchanges: message 2 sent -> message 3
received on the responder; message 3 sent -> the confirmation received on the initiator.
Without a path by ``timeout`` the punch fails (``PunchFailed``) and the session is closed.

After ``PathFound`` the same object is the connection's session driver: ``send``,
``DatagramReceived`` events, keepalives every ``keepalive`` seconds (to hold the NAT
mappings) and an idle timeout. Like the secure endpoint, it follows the peer to a new
address when an authenticated transport datagram comes from one (a NAT rebinding).

Everything here is driven by the caller: ``start(now)``, ``receive(datagram, addr, now)``,
``handle_timer(now)`` at ``get_timer()``; then send ``datagrams_to_send()`` (each with
its destination) and act on ``next_event()``. Nothing reads a clock or owns a socket.

**Peer-reflexive targets** (as ICE learns them, RFC 8445 §7.2.5.3.1): a first handshake
message that claims the peer we are punching, from an address we do not probe, adds that
address to the targets (at most ``MAX_PEER_REFLEXIVE``). A symmetric NAT gives the peer a
new public port toward us, which no candidate names; its probes reveal it. The initiator
(the lower peer id) ignores the peer's first message as such, but now sends its own there,
through the hole the peer's NAT opened. The claim is unauthenticated, so a forger can only
add a few probe destinations; the handshake still decides who the peer is.

Cost: with ``T`` targets a punch that finds nothing sends ``T x len(probe_times)``
201-byte datagrams (16 x 60 at most with the defaults, plus the peer-reflexive ones), the
bound on what a peer lying about its candidates can make us send to a third party.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from client_sdk.connect.candidates import Address
from client_sdk.identity import Identity
from client_sdk.secure.handshake import ChannelError, peek_msg1
from client_sdk.secure.session import (
    HEADER_LENGTH,
    INITIATION_LENGTH,
    DatagramReceived,
    HandshakeComplete,
    MessageType,
    Role,
    SecureSession,
    SessionConfig,
    SessionFailed,
)

MAX_PEER_REFLEXIVE = 4

__all__ = [
    "MAX_PEER_REFLEXIVE",
    "PathFound",
    "Punch",
    "PunchConfig",
    "PunchEvent",
    "PunchFailed",
    "PunchState",
    "Received",
    "probe_times",
]


@dataclass(frozen=True)
class PunchConfig:
    """Timers in seconds. ``timeout``: how long to look for a direct path from the
    moment both sides start. ``keepalive``: the longest silence we keep on a path (NAT
    UDP mappings commonly live 30 s or more once used both ways; 25 s is under that).
    ``idle_timeout``: a connection that hears nothing that long is dead (None: three
    keepalive intervals)."""

    timeout: float = 5.0
    fast_interval: float = 0.05
    fast_for: float = 1.0
    slow_interval: float = 0.1
    keepalive: float = 25.0
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0 < self.fast_interval <= self.slow_interval:
            raise ValueError("need 0 < fast_interval <= slow_interval")
        if self.fast_for < 0:
            raise ValueError("fast_for must not be negative")
        if self.keepalive <= 0:
            raise ValueError("keepalive must be positive")
        if self.idle_timeout is not None and self.idle_timeout <= self.keepalive:
            raise ValueError("idle_timeout must be longer than keepalive")

    @property
    def idle(self) -> float:
        return self.idle_timeout if self.idle_timeout is not None else 3 * self.keepalive

    def session_config(self) -> SessionConfig:
        """The secure session's timers: its own message-1 retransmissions are replaced
        by the probe schedule; message 3 is resent every fast interval (doubling) until
        confirmed; the handshake may run a little past the punch's own bound, so that the
        punch's clearer failure comes first."""
        return SessionConfig(
            retransmit_initial=self.fast_interval,
            retransmit_max=max(self.slow_interval, 0.5),
            handshake_timeout=self.timeout + 1.0,
            keepalive_interval=self.keepalive,
            idle_timeout=self.idle,
        )


def probe_times(config: PunchConfig) -> tuple[float, ...]:
    """When to send the probes, in seconds from the start: every ``fast_interval`` while
    under ``fast_for``, then every ``slow_interval``, all before ``timeout``."""
    times: list[float] = []
    at = 0.0
    while at < config.timeout - 1e-9:
        times.append(round(at, 6))
        at += config.fast_interval if at < config.fast_for - 1e-9 else config.slow_interval
    return tuple(times)


class PunchState(Enum):
    WAITING = "waiting"  # created; datagrams are dropped until start()
    PUNCHING = "punching"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class PathFound:
    addr: Address
    rtt: float


@dataclass(frozen=True)
class Received:
    data: bytes


@dataclass(frozen=True)
class PunchFailed:
    reason: str


PunchEvent = PathFound | Received | PunchFailed


class Punch:
    """One attempt at a direct path to ``remote_peer_id``, then that path's secure
    session. Created (and routed datagrams) before the agreed moment; ``start`` then.
    See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        remote_peer_id: str,
        config: PunchConfig | None = None,
        *,
        local_index: int | None = None,
    ) -> None:
        self.config = config if config is not None else PunchConfig()
        self.remote_peer_id = remote_peer_id
        self.targets: tuple[Address, ...] = ()
        self.session = SecureSession(
            identity,
            remote_peer_id=remote_peer_id,
            config=self.config.session_config(),
            local_index=local_index,
        )
        self.state = PunchState.WAITING
        self.addr: Address | None = None  # the path: where the peer is
        self.rtt: float | None = None
        self.started_at: float | None = None
        self.probes_sent = 0
        self._schedule = probe_times(self.config)
        self._next_probe = 0
        self._probe: bytes | None = None
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[PunchEvent] = deque()
        self._response_sent_at: dict[Address, float] = {}
        self._finish_sent_at: float | None = None
        self._peer_reflexive = 0  # targets learnt from the peer's own probes

    @property
    def local_index(self) -> int:
        return self.session.local_index

    @property
    def deadline(self) -> float | None:
        return None if self.started_at is None else self.started_at + self.config.timeout

    @property
    def max_payload(self) -> int:
        return self.session.max_payload

    # -- inputs ----------------------------------------------------------------------------

    def start(self, now: float, targets: Sequence[Address]) -> None:
        """Begin punching toward ``targets`` (the peer's candidate addresses, see
        ``candidates.punch_targets``): the first probes go out at once."""
        if self.state is not PunchState.WAITING:
            raise ChannelError(f"start() on a punch that is {self.state.value}")
        self.targets = tuple(targets)
        self.state = PunchState.PUNCHING
        self.started_at = now
        self.session.connect(now)
        self._collect(now, None)
        if not self.targets:
            self._fail("the peer offered no usable candidate")
            return
        self._send_due_probes(now)

    def receive(self, datagram: bytes, addr: Address, now: float) -> bool:
        """One datagram from ``addr``; True if it authenticated and was used. Never
        raises for anything the network can send."""
        if self.state not in (PunchState.PUNCHING, PunchState.CONNECTED) or not datagram:
            return False
        kind = datagram[0]
        if kind == MessageType.INITIATION:
            self._learn_target(datagram, addr)
        used = self.session.receive(datagram, now)
        if used and kind == MessageType.TRANSPORT and self.session.is_established:
            self.addr = addr  # authenticated and not replayed: the peer is there (now)
            if self.state is PunchState.PUNCHING and self.session.role is Role.INITIATOR:
                sent = self._finish_sent_at if self._finish_sent_at is not None else now
                self._found(addr, now - sent)
        reply_to = None if kind == MessageType.TRANSPORT else addr
        self._collect(now, reply_to, source=addr)
        return used

    def send(self, data: bytes, now: float) -> None:
        """Seal ``data`` (1 to ``max_payload`` bytes) for the peer."""
        if self.state is not PunchState.CONNECTED:
            raise ChannelError(f"cannot send: the path is {self.state.value}")
        self.session.send(data, now)
        self._collect(now, None)

    def close(self) -> None:
        if self.state in (PunchState.FAILED, PunchState.CLOSED):
            return
        self.state = PunchState.CLOSED
        self.session.close()

    def get_timer(self) -> float | None:
        if self.state not in (PunchState.PUNCHING, PunchState.CONNECTED):
            return None
        deadlines = []
        session_timer = self.session.get_timer()
        if session_timer is not None:
            deadlines.append(session_timer)
        if self.state is PunchState.PUNCHING and self.started_at is not None:
            if not self.session.is_established:
                deadlines.append(self.started_at + self.config.timeout)
            if self._next_probe < len(self._schedule) and not self.session.is_established:
                deadlines.append(self.started_at + self._schedule[self._next_probe])
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.state not in (PunchState.PUNCHING, PunchState.CONNECTED):
            return
        if self.state is PunchState.PUNCHING and not self.session.is_established:
            deadline = self.deadline
            if deadline is not None and now >= deadline:
                self._fail(
                    f"no direct path to {self.remote_peer_id} within {self.config.timeout:g} s "
                    f"({len(self.targets)} candidate address(es), {self.probes_sent} probes)"
                )
                return
            self._send_due_probes(now)
        self.session.handle_timer(now)
        self._collect(now, None)

    # -- outputs ---------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> PunchEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals -------------------------------------------------------------------------

    def _send_due_probes(self, now: float) -> None:
        started = self.started_at
        if started is None or self._probe is None:
            return
        due = False
        while (
            self._next_probe < len(self._schedule)
            and started + self._schedule[self._next_probe] <= now + 1e-9
        ):
            self._next_probe += 1
            due = True
        if due:  # one round per wake-up, however many were due (a late timer)
            self.probes_sent += 1
            for target in self.targets:
                self._out.append((self._probe, target))

    def _collect(self, now: float, reply_to: Address | None, source: Address | None = None) -> None:
        """Route what the session queued, and act on its events."""
        for datagram in self.session.datagrams_to_send():
            kind = datagram[0]
            if kind == MessageType.INITIATION:
                self._probe = datagram  # the schedule sends it (to every target)
                continue
            destination = reply_to if reply_to is not None else self.addr
            if destination is None:
                continue
            if kind == MessageType.RESPONSE:
                self._response_sent_at.setdefault(destination, now)
            elif kind == MessageType.FINISH and self._finish_sent_at is None:
                self._finish_sent_at = now
            self._out.append((datagram, destination))
        while (event := self.session.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                if source is not None:
                    self.addr = source
                if self.session.role is Role.RESPONDER and source is not None:
                    self._found(source, now - self._response_sent_at.get(source, now))
            elif isinstance(event, DatagramReceived):
                self._events.append(Received(event.data))
            elif isinstance(event, SessionFailed) and self.state in (
                PunchState.PUNCHING,
                PunchState.CONNECTED,
            ):
                self.state = PunchState.FAILED
                self._events.append(PunchFailed(event.reason))

    def _learn_target(self, datagram: bytes, addr: Address) -> None:
        """A peer-reflexive target (see the module docstring)."""
        if (
            self.state is not PunchState.PUNCHING
            or self.session.is_established
            or addr in self.targets
            or self._peer_reflexive >= MAX_PEER_REFLEXIVE
            or len(datagram) != INITIATION_LENGTH
        ):
            return
        peeked = peek_msg1(datagram[HEADER_LENGTH:])
        if peeked is None or peeked[1] != self.remote_peer_id:
            return
        self._peer_reflexive += 1
        self.targets = (*self.targets, addr)
        if self._probe is not None:  # at once: the hole the peer just opened
            self._out.append((self._probe, addr))

    def _found(self, addr: Address, rtt: float) -> None:
        self.state = PunchState.CONNECTED
        self.addr = addr
        self.rtt = max(rtt, 0.0)
        self._events.append(PathFound(addr, self.rtt))

    def _fail(self, reason: str) -> None:
        self.state = PunchState.FAILED
        self.session.close()
        self._out.clear()
        self._events.append(PunchFailed(reason))
