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
mappings) and an idle timeout. Like WireGuard, it follows the peer to a new
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

**Port prediction: the spray** (the "birthday paradox" of Tailscale's "How NAT
traversal works", https://tailscale.com/blog/how-nat-traversal-works). Against a peer
whose NAT maps per destination (RFC 4787 §4.1; ``candidates.mapping_varies``) while ours
does not, the peer opens many mappings toward our reflexive address (``predict.SocketFan``)
and ``start(..., spray=Spray(ip))`` also sends the current probe to distinct random ports
of its public IP (1024-65535, not the ports already targeted): at most ``Spray.probes``,
at most ``Spray.rate`` a second (a token bucket holding ``rate x SPRAY_TICK`` probes, at
least one), for at most ``Spray.duration`` (and never past the punch's ``timeout``),
stopping as soon as the session is established or the punch ends. A probe that lands on
one of the peer's mappings reaches its socket, and the handshake goes on as above: its
answers leave through that mapping, which our NAT lets in because we sent to exactly that
port. Nothing changes in what fixes the path: a sprayed port is only a destination, never
a target (it does not count against ``MAX_PEER_REFLEXIVE``); the peer's address is learnt
only from its own message 1 or authenticated answers.

Cost: with ``T`` targets a punch that finds nothing sends ``T x len(probe_times)``
201-byte datagrams (16 x 60 at most with the defaults, plus the peer-reflexive ones), the
bound on what a peer lying about its candidates can make us send to a third party. A
spray adds at most ``Spray.probes`` (2048 with the defaults: ~410 kB over ~2 s at 1000 a
second) to the one IP the peer's candidates named.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

from client_sdk.connect.candidates import Address, usable_ipv4
from client_sdk.identity import Identity
from client_sdk.netcheck.report import NatReport
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
SPRAY_PORTS = range(1024, 65536)  # where NATs put mappings (Linux: 1024-65535)
SPRAY_TICK = 0.01  # seconds between spray batches at high rates
MAX_PREDICT_SOCKETS = 1024

__all__ = [
    "ACK_DELAY",
    "KEEPALIVE",
    "MAX_PEER_REFLEXIVE",
    "MAX_PREDICT_SOCKETS",
    "SPRAY_PORTS",
    "SPRAY_TICK",
    "PathFound",
    "Punch",
    "PunchConfig",
    "PunchEvent",
    "PunchFailed",
    "PunchState",
    "Received",
    "Spray",
    "keepalive_for",
    "probe_times",
]


ACK_DELAY = 1.0  # seconds within which a path answers data (SessionConfig.ack_delay)
KEEPALIVE = 25.0  # seconds: under the 30 s many NATs give an idle UDP mapping (RFC 4787 §4.3)
MIN_KEEPALIVE = 1.0


def keepalive_for(report: NatReport, default: float = KEEPALIVE) -> float:
    """A keepalive interval below the shortest idle mapping lifetime ``report`` saw
    (``netcheck(..., mapping_lifetime=True)``): 80 % of the idle time its mapping is known
    to survive, when that is under ``default``; ``default`` without a measurement. For
    ``Peer(keepalive=keepalive_for(report))``."""
    lifetime = report.mapping_lifetime
    if lifetime is None:
        return default
    return max(MIN_KEEPALIVE, min(default, 0.8 * lifetime.at_least_s))


@dataclass(frozen=True)
class PunchConfig:
    """Timers in seconds. ``timeout``: how long to look for a direct path from the
    moment both sides start. ``keepalive``: the longest silence we keep on a path (NAT
    UDP mappings commonly live 30 s or more once used both ways; 25 s is under that).
    ``idle_timeout``: a connection that hears nothing that long is dead (None: three
    keepalive intervals). ``dead_after``: a path that answers nothing that long after we
    sent data is dead (data is answered within ``ACK_DELAY``, unanswered data followed
    by pings; ``SecureSession``'s liveness), so a connection falls back to its relay
    path within seconds; None: only the idle timeout.

    Port prediction (``client_sdk.connect.predict``; used only when exactly one side's
    NAT maps per destination): the hard side opens ``predict_sockets`` extra UDP sockets
    (0: never) and sends the probe from each of them to each of the easy side's (at most
    two) reflexive addresses at most once per ``predict_refresh`` seconds -- at most
    ``predict_sockets x 2 x ceil(timeout / predict_refresh)`` extra datagrams (2560 with
    the defaults); the easy side sends at most ``predict_probes`` probes (0: never spray)
    to random ports of the hard side's IP, at most ``predict_rate`` a second, within the
    punch ``timeout``. With 256 mappings among ~64,500 ports each probe hits with
    probability ~1/252; 2048 probes miss all of them with probability ~0.03 %."""

    timeout: float = 5.0
    fast_interval: float = 0.05
    fast_for: float = 1.0
    slow_interval: float = 0.1
    keepalive: float = KEEPALIVE
    idle_timeout: float | None = None
    dead_after: float | None = 8.0
    predict_sockets: int = 256
    predict_probes: int = 2048
    predict_rate: float = 1000.0
    predict_refresh: float = 1.0

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
        if self.dead_after is not None and self.dead_after <= 4 * ACK_DELAY:
            raise ValueError(f"dead_after must be longer than {4 * ACK_DELAY:g} s (two pings)")
        if not 0 <= self.predict_sockets <= MAX_PREDICT_SOCKETS:
            raise ValueError(f"predict_sockets must be 0 to {MAX_PREDICT_SOCKETS}")
        if not 0 <= self.predict_probes <= len(SPRAY_PORTS):
            raise ValueError(f"predict_probes must be 0 to {len(SPRAY_PORTS)}")
        if not self.predict_rate > 0:
            raise ValueError("predict_rate must be positive")
        if not self.predict_refresh > 0:
            raise ValueError("predict_refresh must be positive")

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
            ack_delay=ACK_DELAY if self.dead_after is not None else None,
            response_timeout=self.dead_after,
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


@dataclass(frozen=True)
class Spray:
    """Probes to random ports of ``ip``, the hard peer's public IP (see the module
    docstring): at most ``probes``, at most ``rate`` a second, for at most ``duration``
    seconds from the start (None: the punch's timeout)."""

    ip: str
    probes: int = 2048
    rate: float = 1000.0
    duration: float | None = None

    def __post_init__(self) -> None:
        address = usable_ipv4(self.ip) if isinstance(self.ip, str) else None
        if address is None or str(address) != self.ip:
            raise ValueError(f"cannot spray {self.ip!r}: not a usable IPv4 address")
        if not 0 < self.probes <= len(SPRAY_PORTS):
            raise ValueError(f"probes must be 1 to {len(SPRAY_PORTS)}")
        if not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("duration must be positive")

    @classmethod
    def from_config(cls, ip: str, config: PunchConfig) -> Spray:
        return cls(ip, config.predict_probes, config.predict_rate)


class _PortDraw:
    """Distinct random ports of ``SPRAY_PORTS`` not in ``exclude``: a Fisher-Yates
    shuffle done lazily (the swaps kept in a dict), O(1) a draw."""

    def __init__(self, rng: random.Random, exclude: Collection[int]) -> None:
        self._rng = rng
        self._left = len(SPRAY_PORTS)
        self._swaps: dict[int, int] = {}
        self._exclude = frozenset(exclude)

    def next(self) -> int | None:
        while self._left > 0:
            pick = self._rng.randrange(self._left)
            self._left -= 1
            value = self._swaps.get(pick, pick)
            self._swaps[pick] = self._swaps.pop(self._left, self._left)
            port = SPRAY_PORTS[value]
            if port not in self._exclude:
                return port
        return None


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


Received = DatagramReceived  # a datagram from the peer: the session's own event, passed on


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
        self.sprayed = 0  # spray datagrams sent (see Spray)
        self._spray: Spray | None = None  # while spraying
        self._spray_draw: _PortDraw | None = None
        self._spray_at: float | None = None  # the next batch
        self._spray_last = 0.0
        self._spray_tokens = 0.0
        self._spray_until = 0.0

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

    def start(
        self,
        now: float,
        targets: Sequence[Address],
        spray: Spray | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Begin punching toward ``targets`` (the peer's candidate addresses, see
        ``candidates.punch_targets``): the first probes go out at once. ``spray``: port
        prediction toward a hard peer (see the module docstring), its ports drawn from
        ``rng`` (default: the system's random source)."""
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
        if spray is not None:
            taken = {port for ip, port in self.targets if ip == spray.ip}
            self._spray = spray
            self._spray_draw = _PortDraw(rng if rng is not None else random.SystemRandom(), taken)
            self._spray_at = self._spray_last = now
            self._spray_tokens = self._spray_burst(spray)
            duration = self.config.timeout if spray.duration is None else spray.duration
            self._spray_until = now + min(duration, self.config.timeout)
        self._send_due_probes(now)
        self._spray_due(now)

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
            if self._spray_at is not None and not self.session.is_established:
                deadlines.append(self._spray_at)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.state not in (PunchState.PUNCHING, PunchState.CONNECTED):
            return
        if self.state is PunchState.PUNCHING and not self.session.is_established:
            deadline = self.deadline
            if deadline is not None and now >= deadline:
                sprayed = f", {self.sprayed} sprayed" if self.sprayed else ""
                self._fail(
                    f"no direct path to {self.remote_peer_id} within {self.config.timeout:g} s "
                    f"({len(self.targets)} candidate address(es), {self.probes_sent} probes"
                    f"{sprayed})"
                )
                return
            self._send_due_probes(now)
            self._spray_due(now)
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

    @staticmethod
    def _spray_burst(spray: Spray) -> float:
        return max(1.0, spray.rate * SPRAY_TICK)

    def _spray_due(self, now: float) -> None:
        """Send the spray's due batch (a token bucket: ``rate`` a second, holding
        ``_spray_burst``), or end the spray."""
        spray, draw = self._spray, self._spray_draw
        if spray is None or draw is None or self._spray_at is None:
            return
        if (
            self.state is not PunchState.PUNCHING
            or self.session.is_established
            or now >= self._spray_until
            or self.sprayed >= spray.probes
        ):
            self._end_spray()
            return
        if self._probe is None or now + 1e-9 < self._spray_at:
            return
        burst = self._spray_burst(spray)
        tokens = min(burst, self._spray_tokens + (now - self._spray_last) * spray.rate)
        self._spray_last = now
        batch = min(int(tokens + 1e-9), spray.probes - self.sprayed)
        for _ in range(batch):
            port = draw.next()
            if port is None:  # every port tried
                self._end_spray()
                return
            self._out.append((self._probe, (spray.ip, port)))
            self.sprayed += 1
        self._spray_tokens = tokens - batch
        if self.sprayed >= spray.probes:
            self._end_spray()
            return
        self._spray_at = now + max(SPRAY_TICK, (1.0 - self._spray_tokens) / spray.rate)

    def _end_spray(self) -> None:
        self._spray = None
        self._spray_draw = None
        self._spray_at = None

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
                self._events.append(event)
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
        self._end_spray()
        self.state = PunchState.CONNECTED
        self.addr = addr
        self.rtt = max(rtt, 0.0)
        self._events.append(PathFound(addr, self.rtt))

    def _fail(self, reason: str) -> None:
        self._end_spray()
        self.state = PunchState.FAILED
        self.session.close()
        self._out.clear()
        self._events.append(PunchFailed(reason))
