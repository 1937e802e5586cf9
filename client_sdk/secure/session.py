"""The sans-IO secure datagram channel between two peers (issue #6, security part).

``SecureSession`` holds no socket and reads no clock, in the style of aioquic's
``QuicConnection``: feed it ``receive(datagram, now)``, call ``handle_timer(now)`` at
``get_timer()``, and after each call send what ``datagrams_to_send()`` returns and act on
``next_event()``. Its asyncio driver is ``client_sdk.connect.udp.Link`` (through the
hole punch, ``client_sdk.connect.punch``).

Construction
============
* Handshake: Noise ``XX`` with ``25519_ChaChaPoly_SHA256`` (Noise Protocol Framework,
  revision 34), see ``handshake.py``. ``XX`` rather than ``IK`` because a peer knows the
  other's ``peer_id`` (a hash of its Ed25519 key), not its X25519 Noise static key; ``XX``
  transmits both static keys encrypted and authenticates them with the identity
  signatures of libp2p's Noise handshake. The prologue binds the session to
  ``purpose`` and both peer ids. The initiator accepts only the peer id it dialled; the
  responder learns the initiator's peer id (claimed in message 1, proven in message 3)
  and reports it in ``HandshakeComplete``. Message 1 carries the initiator's peer id in
  the clear (the responder needs it for the prologue, the endpoint to route a
  simultaneous open): peer ids are public in natkit (the rendezvous hands them out), so
  that part of XX's identity hiding is given up; identity keys and signatures travel
  encrypted. As in any XX, an active prober learns the responder's identity.
* Implementation: the Noise state machine is ours, written from the spec on
  ``cryptography``'s primitives and checked against the cacophony vectors, rather than
  the ``noiseprotocol`` package: that one has had no release since 0.3.1 (2020), its
  connection API assumes in-order delivery (implicit nonces), and it offers no supported
  way to try a message on a copy of the handshake state, which is how a forged or
  duplicated datagram is dropped here without harm.
* Transport: after ``Split()`` each direction has its own ChaCha20-Poly1305 key. UDP loses
  and reorders, so Noise's implicit nonces don't fit; as WireGuard does (whitepaper 5.4.6),
  every datagram carries its 64-bit counter, which is the AEAD nonce (Noise's ChaChaPoly
  nonce layout: 4 zero bytes, the counter little-endian). The header is the AEAD's
  associated data. An RFC 6479 window (``replay.py``) refuses replays and counters older
  than the window; the window moves only after the datagram authenticates.

Wire format (all integers little-endian, as WireGuard's)
========================================================
Every datagram starts with ``type`` (1 byte, ``MessageType``) and ``receiver`` (4 bytes,
the session index the *receiving* side chose, so one socket can carry many sessions and
datagrams of an old session are told apart from a new one's; 0 in message 1, which has no
receiver yet). Each side's own index travels inside the Noise payloads, so it is
authenticated by the transcript.

=============  ==========================================================  =====
type           rest                                                        bytes
=============  ==========================================================  =====
1 INITIATION   Noise msg 1: e, payload(version, index, peer id, zero pad)    201
2 RESPONSE     Noise msg 2: e, enc(s), enc(index, identity key, signature)   201
3 FINISH       Noise msg 3: enc(s), enc(identity key, signature)             165
4 TRANSPORT    counter (8), ChaCha20-Poly1305(payload) with 16-byte tag   29 + n
=============  ==========================================================  =====

Message 1 is padded to the size of message 2, so a spoofed message 1 never draws a bigger
answer. Transport overhead is exactly ``TRANSPORT_OVERHEAD`` = 1 + 4 + 8 + 16 = 29 bytes, so
the largest payload is ``max_datagram_size - 29``: ``MAX_PAYLOAD`` = 1171 bytes for the
default 1200-byte datagram (the UDP payload size QUIC assumes every path carries, RFC 9000
section 14, and what fits a TURN ChannelData or Send indication on a 1280-byte IPv6 path).
An empty transport payload is a keepalive.

Datagram loss and simultaneous open
===================================
The initiator drives retransmission: message 1, and message 3 until the responder
confirms with any authenticated transport datagram (the responder sends a keepalive as
soon as it completes), every ``retransmit_initial`` seconds, doubling up to
``retransmit_max``, for at most ``handshake_timeout``. The responder keeps no timer but
answers a duplicate message 1 with the same message 2 and a duplicate message 3 with a
keepalive; a duplicate message 2 makes the initiator resend the same message 3. No
duplicate advances the handshake. Up to ``max_pending_responders`` message-1 answers are
kept, so a forged message 1 (which anyone can make) cannot displace the real one.

When both peers initiate at once (as hole punching makes them), the peer with the lower
``peer_id`` stays initiator and ignores the other's message 1; the higher one answers it
as responder and stops retransmitting its own.

Every malformed, forged, stale or replayed datagram is dropped and counted in
``SessionStats``: ``receive()`` never raises and such a datagram changes no handshake or
transport state. A message 2 or 3 that decrypts but carries the wrong identity is dropped
too (an active attacker could otherwise cut the handshake short); its reason is reported
in ``SessionFailed`` if the handshake then times out.

Liveness (after WireGuard's passive keepalive and dead-peer rule, whitepaper §6.5), with
``ack_delay`` (a) set:

* data received is answered within a: if we send nothing else by then, a keepalive;
* a keepalive received is answered at once when we have sent nothing for a -- so a
  keepalive works as a ping. (Two sessions cannot ping-pong: the answer reaches a
  side that sent the ping less than a ago, as long as the round trip is under a.)
* data sent and not answered (no authenticated datagram since) is followed by a keepalive
  ping every 2a; with ``response_timeout`` set, still nothing after that long and the
  session fails: "the path is dead" -- seconds after a path dies under traffic instead of
  the idle timeout's minute, and a single lost answer is made up for by the pings.

Both are off by default here; a connection's paths turn them on
(``client_sdk.connect.punch.PunchConfig``).

Not done here: rekeying in place (WireGuard's 2-minute rekey); the caller opens a new
session before ``max_messages`` or when it wants fresh keys.
"""

from __future__ import annotations

import secrets
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from client_sdk.identity import Identity
from client_sdk.secure.handshake import (
    MSG1_BODY_LENGTH,
    MSG2_BODY_LENGTH,
    MSG3_BODY_LENGTH,
    TAGLEN,
    ChannelError,
    HandshakeResult,
    InitiatorHandshake,
    LocalStatic,
    ResponderHandshake,
    peek_msg1,
)
from client_sdk.secure.replay import ReplayWindow


class MessageType(IntEnum):
    INITIATION = 1
    RESPONSE = 2
    FINISH = 3
    TRANSPORT = 4


class SessionState(Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    FAILED = "failed"
    CLOSED = "closed"


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


HEADER = struct.Struct("<BI")
TRANSPORT_HEADER = struct.Struct("<BIQ")
HEADER_LENGTH = HEADER.size  # 5
TRANSPORT_HEADER_LENGTH = TRANSPORT_HEADER.size  # 13
TRANSPORT_OVERHEAD = TRANSPORT_HEADER_LENGTH + TAGLEN  # 29
INITIATION_LENGTH = HEADER_LENGTH + MSG1_BODY_LENGTH  # 201
RESPONSE_LENGTH = HEADER_LENGTH + MSG2_BODY_LENGTH  # 201
FINISH_LENGTH = HEADER_LENGTH + MSG3_BODY_LENGTH  # 165
DEFAULT_MAX_DATAGRAM = 1200
MAX_PAYLOAD = DEFAULT_MAX_DATAGRAM - TRANSPORT_OVERHEAD  # 1171
# No counter at or past 2^60 is sent or accepted (WireGuard stops a little before 2^64;
# Noise reserves 2^64-1).
COUNTER_LIMIT = 2**60
DEFAULT_PURPOSE = b"natkit-datagram"
_NONCE_PREFIX = b"\x00\x00\x00\x00"


@dataclass(frozen=True)
class SessionConfig:
    """Timers in seconds. ``None`` turns keepalives or the idle timeout off."""

    retransmit_initial: float = 0.2
    retransmit_max: float = 2.0
    handshake_timeout: float = 10.0
    keepalive_interval: float | None = 10.0
    idle_timeout: float | None = 30.0
    ack_delay: float | None = None
    response_timeout: float | None = None
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM
    max_messages: int = COUNTER_LIMIT
    replay_window: int = 2048
    max_pending_responders: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.retransmit_initial <= self.retransmit_max:
            raise ChannelError("need 0 < retransmit_initial <= retransmit_max")
        if self.handshake_timeout <= 0:
            raise ChannelError("handshake_timeout must be positive")
        if self.keepalive_interval is not None and self.keepalive_interval <= 0:
            raise ChannelError("keepalive_interval must be positive or None")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ChannelError("idle_timeout must be positive or None")
        if self.ack_delay is not None and self.ack_delay <= 0:
            raise ChannelError("ack_delay must be positive or None")
        if self.response_timeout is not None and (
            self.response_timeout <= 0
            or (self.ack_delay is not None and self.response_timeout <= self.ack_delay)
        ):
            raise ChannelError("response_timeout must be positive, longer than ack_delay, or None")
        if not INITIATION_LENGTH <= self.max_datagram_size <= 65507:
            raise ChannelError(f"max_datagram_size must be in [{INITIATION_LENGTH}, 65507]")
        if not 0 < self.max_messages <= COUNTER_LIMIT:
            raise ChannelError("max_messages must be in [1, 2**60]")
        if self.max_pending_responders < 1:
            raise ChannelError("max_pending_responders must be at least 1")

    @property
    def max_payload(self) -> int:
        return self.max_datagram_size - TRANSPORT_OVERHEAD


@dataclass(frozen=True)
class HandshakeComplete:
    remote_peer_id: str


@dataclass(frozen=True)
class DatagramReceived:
    data: bytes


@dataclass(frozen=True)
class SessionFailed:
    reason: str


Event = HandshakeComplete | DatagramReceived | SessionFailed


@dataclass(slots=True)
class SessionStats:
    """What a session did and dropped; for metrics and tests."""

    malformed: int = 0  # wrong size, type or field
    unexpected: int = 0  # well formed, but not for this session or not now
    auth_failed: int = 0  # failed decryption, signature or identity check
    replayed: int = 0  # counter seen already, too old, or past the limit
    duplicates: int = 0  # handshake messages seen already (answered idempotently)
    ignored_initiations: int = 0  # the other side's message 1 lost the simultaneous-open tie
    retransmits: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    keepalives_sent: int = 0
    keepalives_received: int = 0

    @property
    def dropped(self) -> int:
        return (
            self.malformed
            + self.unexpected
            + self.auth_failed
            + self.replayed
            + self.ignored_initiations
        )


def parse_header(datagram: bytes) -> tuple[MessageType, int] | None:
    """(type, receiver index) of a datagram, or None if it can't be one of ours."""
    if len(datagram) < HEADER_LENGTH:
        return None
    kind, receiver = HEADER.unpack_from(datagram)
    try:
        return MessageType(kind), receiver
    except ValueError:
        return None


def initiation_peer_id(datagram: bytes) -> str | None:
    """The peer id claimed by a message 1 (unproven until message 3), for demultiplexing."""
    if len(datagram) != INITIATION_LENGTH or datagram[0] != MessageType.INITIATION:
        return None
    peeked = peek_msg1(datagram[HEADER_LENGTH:])
    return None if peeked is None else peeked[1]


def new_session_index() -> int:
    return secrets.randbelow(2**32 - 1) + 1


@dataclass(slots=True)
class _Pending:
    handshake: ResponderHandshake
    msg2: bytes


@dataclass(slots=True)
class _Transport:
    send: ChaCha20Poly1305
    receive: ChaCha20Poly1305
    remote_index: int
    window: ReplayWindow
    counter: int = 0


class SecureSession:
    """One end-to-end secure channel with one peer.

    ``remote_peer_id``: the peer to dial (``connect``) or the only one accepted; ``None``
    accepts a handshake from any peer (the responder then learns who it is)."""

    def __init__(
        self,
        identity: Identity,
        *,
        remote_peer_id: str | None = None,
        purpose: bytes = DEFAULT_PURPOSE,
        config: SessionConfig | None = None,
        local_index: int | None = None,
        static: LocalStatic | None = None,
    ) -> None:
        if remote_peer_id is not None and remote_peer_id == identity.peer_id:
            raise ChannelError("a session with oneself")
        if local_index is not None and not 0 < local_index < 2**32:
            raise ChannelError("local_index must be in [1, 2**32)")
        self.config = config if config is not None else SessionConfig()
        self.purpose = purpose
        self.local_peer_id = identity.peer_id
        self.remote_peer_id = remote_peer_id
        self.local_index = local_index if local_index is not None else new_session_index()
        self.state = SessionState.IDLE
        self.role: Role | None = None
        self.stats = SessionStats()
        self.handshake_hash: bytes | None = None
        self.last_received_at: float | None = None
        self.last_sent_at: float | None = None
        self._unanswered_since: float | None = None  # first data sent after we last heard
        self._ack_due: float | None = None  # data received and nothing sent back yet
        self._ping_at: float | None = None  # the next ping while data is unanswered
        self._local = static if static is not None else LocalStatic.generate(identity)
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        self._initiator: InitiatorHandshake | None = None
        self._msg1: bytes | None = None
        self._answering = False  # we lost the tie and answer the other's message 1
        self._pending: dict[bytes, _Pending] = {}
        self._handshake_deadline: float | None = None
        self._retransmit_at: float | None = None
        self._retransmit_interval = self.config.retransmit_initial
        self._confirmed = False
        self._msg2_seen: bytes | None = None
        self._msg3: bytes | None = None
        self._msg3_seen: bytes | None = None
        self._transport: _Transport | None = None
        self._last_rejection: str | None = None

    # ------------------------------------------------------------------ public API

    @property
    def is_established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    @property
    def max_payload(self) -> int:
        return self.config.max_payload

    def connect(self, now: float) -> None:
        """Start the handshake as initiator towards ``remote_peer_id``."""
        if self.remote_peer_id is None:
            raise ChannelError("connect() needs the remote peer id")
        if self.state is not SessionState.IDLE:
            raise ChannelError(f"connect() on a session that is {self.state.value}")
        self._initiator = InitiatorHandshake(
            self._local, self.remote_peer_id, purpose=self.purpose, local_index=self.local_index
        )
        self._msg1 = HEADER.pack(MessageType.INITIATION, 0) + self._initiator.msg1
        self._start_handshake(now)
        self._retransmit_at = now + self._retransmit_interval
        self._outbox.append(self._msg1)

    def receive(self, datagram: bytes, now: float) -> bool:
        """Process one datagram; True if it was authentic and used. Never raises for
        anything the network can send."""
        if self.state in (SessionState.FAILED, SessionState.CLOSED):
            self.stats.unexpected += 1
            return False
        header = parse_header(datagram)
        if header is None:
            self.stats.malformed += 1
            return False
        kind, receiver = header
        if kind is MessageType.TRANSPORT:
            return self._on_transport(datagram, receiver, now)
        if kind is MessageType.INITIATION:
            return self._on_initiation(datagram, receiver, now)
        if receiver != self.local_index:
            self.stats.unexpected += 1
            return False
        if kind is MessageType.RESPONSE:
            return self._on_response(datagram, now)
        return self._on_finish(datagram, now)

    def send(self, data: bytes, now: float) -> None:
        """Queue ``data`` (at most ``max_payload`` bytes) as one sealed datagram."""
        if self.state is not SessionState.ESTABLISHED:
            raise ChannelError(f"cannot send: the session is {self.state.value}")
        if len(data) > self.config.max_payload:
            raise ChannelError(
                f"payload of {len(data)} bytes exceeds the maximum of {self.config.max_payload}"
            )
        if not data:
            raise ChannelError("empty payloads are keepalives; send_keepalive() sends one")
        self._seal(data, now)
        self.stats.datagrams_sent += 1
        if self._unanswered_since is None:
            self._unanswered_since = now
            if self.config.ack_delay is not None:
                self._ping_at = now + 2 * self.config.ack_delay

    def send_keepalive(self, now: float) -> None:
        if self.state is not SessionState.ESTABLISHED:
            raise ChannelError(f"cannot send: the session is {self.state.value}")
        self._seal(b"", now)
        self.stats.keepalives_sent += 1

    def close(self) -> None:
        """Forget the keys; everything after is dropped. (No message: a close that is not
        authenticated could be forged, and the peer's idle timeout notices.)"""
        self.state = SessionState.CLOSED
        self._drop_secrets()

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.state in (SessionState.IDLE, SessionState.FAILED, SessionState.CLOSED):
            return None
        deadlines: list[float] = []
        if not self._confirmed:
            if self._handshake_deadline is not None:
                deadlines.append(self._handshake_deadline)
            if self._retransmit_at is not None:
                deadlines.append(self._retransmit_at)
        if self.state is SessionState.ESTABLISHED:
            if self.config.keepalive_interval is not None and self.last_sent_at is not None:
                deadlines.append(self.last_sent_at + self.config.keepalive_interval)
            if self.config.idle_timeout is not None and self.last_received_at is not None:
                deadlines.append(self.last_received_at + self.config.idle_timeout)
            if self._ack_due is not None:
                deadlines.append(self._ack_due)
            if self._ping_at is not None:
                deadlines.append(self._ping_at)
            if self.config.response_timeout is not None and self._unanswered_since is not None:
                deadlines.append(self._unanswered_since + self.config.response_timeout)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.state in (SessionState.IDLE, SessionState.FAILED, SessionState.CLOSED):
            return
        if not self._confirmed:
            if self._handshake_deadline is not None and now >= self._handshake_deadline:
                self._fail(self._timeout_reason())
                return
            if self._retransmit_at is not None and now >= self._retransmit_at:
                self._retransmit(now)
        if self.state is not SessionState.ESTABLISHED:
            return
        idle = self.config.idle_timeout
        last_received = self.last_received_at
        if idle is not None and last_received is not None and now >= last_received + idle:
            self._fail(f"no datagram from the peer for {idle:g} s")
            return
        waited = self.config.response_timeout
        since = self._unanswered_since
        if waited is not None and since is not None and now >= since + waited:
            self._fail(f"no answer from the peer for {waited:g} s after sending: the path is dead")
            return
        keepalive = self.config.keepalive_interval
        last_sent = self.last_sent_at
        ack_due = self._ack_due is not None and now >= self._ack_due
        if self._ping_at is not None and now >= self._ping_at:
            ack_due = True
            self._ping_at = now + 2 * (self.config.ack_delay or 0.0)
        if ack_due or (
            keepalive is not None and last_sent is not None and now >= last_sent + keepalive
        ):
            try:
                self.send_keepalive(now)
            except ChannelError as exc:
                self._fail(str(exc))

    # ------------------------------------------------------------------ handshake

    def _start_handshake(self, now: float) -> None:
        self.state = SessionState.HANDSHAKING
        self._handshake_deadline = now + self.config.handshake_timeout

    def _timeout_reason(self) -> str:
        timeout = f"{self.config.handshake_timeout:g} s"
        if self.state is SessionState.ESTABLISHED:
            reason = f"the peer did not confirm the handshake within {timeout}"
        else:
            reason = f"handshake timed out after {timeout}"
        if self._last_rejection is not None:
            reason += f" (last rejected message: {self._last_rejection})"
        return reason

    def _retransmit(self, now: float) -> None:
        if self.state is SessionState.ESTABLISHED and self._msg3 is not None:
            self._outbox.append(self._msg3)
        elif self._msg1 is not None and not self._answering:
            self._outbox.append(self._msg1)
        else:
            self._retransmit_at = None
            return
        self.stats.retransmits += 1
        self._retransmit_interval = min(self._retransmit_interval * 2, self.config.retransmit_max)
        self._retransmit_at = now + self._retransmit_interval

    def _on_initiation(self, datagram: bytes, receiver: int, now: float) -> bool:
        if receiver != 0 or len(datagram) != INITIATION_LENGTH:
            self.stats.malformed += 1
            return False
        if self.state is not SessionState.IDLE and self.state is not SessionState.HANDSHAKING:
            self.stats.unexpected += 1
            return False
        pending = self._pending.get(datagram)
        if pending is not None:  # a retransmission: the same answer again
            self._outbox.append(pending.msg2)
            self.stats.duplicates += 1
            return True
        peeked = peek_msg1(datagram[HEADER_LENGTH:])
        if peeked is None:
            self.stats.malformed += 1
            return False
        claimed = peeked[1]
        if claimed == self.local_peer_id or (
            self.remote_peer_id is not None and claimed != self.remote_peer_id
        ):
            self.stats.unexpected += 1
            return False
        if self._initiator is not None and self.local_peer_id < claimed:
            self.stats.ignored_initiations += 1  # simultaneous open: the lower id initiates
            return False
        try:
            handshake = ResponderHandshake(
                self._local,
                datagram[HEADER_LENGTH:],
                purpose=self.purpose,
                local_index=self.local_index,
            )
        except ChannelError as exc:
            self._last_rejection = str(exc)
            self.stats.auth_failed += 1
            return False
        if len(self._pending) >= self.config.max_pending_responders:
            del self._pending[next(iter(self._pending))]
        msg2 = HEADER.pack(MessageType.RESPONSE, handshake.remote_index) + handshake.msg2
        self._pending[datagram] = _Pending(handshake, msg2)
        if self.state is SessionState.IDLE:
            self._start_handshake(now)
        self._answering = True
        self._outbox.append(msg2)
        return True

    def _on_response(self, datagram: bytes, now: float) -> bool:
        if len(datagram) != RESPONSE_LENGTH:
            self.stats.malformed += 1
            return False
        if self.state is SessionState.ESTABLISHED:
            if datagram == self._msg2_seen and self._msg3 is not None:
                self._outbox.append(self._msg3)  # our message 3 was lost: the same again
                self.stats.duplicates += 1
                return True
            self.stats.unexpected += 1
            return False
        if self._initiator is None or self.state is not SessionState.HANDSHAKING:
            self.stats.unexpected += 1
            return False
        try:
            msg3_body, result = self._initiator.read_msg2(datagram[HEADER_LENGTH:])
        except ChannelError as exc:
            self._last_rejection = str(exc)
            self.stats.auth_failed += 1
            return False
        self._msg2_seen = datagram
        self._msg3 = HEADER.pack(MessageType.FINISH, result.remote_index) + msg3_body
        self._outbox.append(self._msg3)
        self._establish(Role.INITIATOR, result, now)
        self._handshake_deadline = now + self.config.handshake_timeout
        self._retransmit_interval = self.config.retransmit_initial
        self._retransmit_at = now + self._retransmit_interval
        return True

    def _on_finish(self, datagram: bytes, now: float) -> bool:
        if len(datagram) != FINISH_LENGTH:
            self.stats.malformed += 1
            return False
        if self.state is SessionState.ESTABLISHED:
            if datagram == self._msg3_seen:  # our confirmation was lost: confirm again
                self.stats.duplicates += 1
                try:
                    self.send_keepalive(now)
                except ChannelError as exc:  # the message limit: nothing more to send
                    self._fail(str(exc))
                return True
            self.stats.unexpected += 1
            return False
        if not self._pending:
            self.stats.unexpected += 1
            return False
        body = datagram[HEADER_LENGTH:]
        for pending in self._pending.values():
            try:
                result = pending.handshake.read_msg3(body)
            except ChannelError as exc:
                self._last_rejection = str(exc)
                continue
            self._msg3_seen = datagram
            self._establish(Role.RESPONDER, result, now)
            self._confirmed = True
            self.send_keepalive(now)  # confirms the handshake to the initiator
            return True
        self.stats.auth_failed += 1
        return False

    def _establish(self, role: Role, result: HandshakeResult, now: float) -> None:
        if result.send.key is None or result.receive.key is None:  # pragma: no cover
            raise ChannelError("split produced no keys")
        self._transport = _Transport(
            ChaCha20Poly1305(result.send.key),
            ChaCha20Poly1305(result.receive.key),
            result.remote_index,
            ReplayWindow(self.config.replay_window),
        )
        self.role = role
        self.remote_peer_id = result.remote_peer_id
        self.handshake_hash = result.handshake_hash
        self.state = SessionState.ESTABLISHED
        self.last_received_at = now
        self.last_sent_at = now
        self._initiator = None
        self._pending.clear()
        self._last_rejection = None
        self._events.append(HandshakeComplete(result.remote_peer_id))

    # ------------------------------------------------------------------ transport

    def _seal(self, data: bytes, now: float) -> None:
        transport = self._transport
        if transport is None:  # pragma: no cover - guarded by the state checks
            raise ChannelError("no transport keys")
        counter = transport.counter
        if counter >= self.config.max_messages:
            raise ChannelError(
                f"message limit of {self.config.max_messages} reached: open a new session"
            )
        header = TRANSPORT_HEADER.pack(MessageType.TRANSPORT, transport.remote_index, counter)
        nonce = _NONCE_PREFIX + header[HEADER_LENGTH:]
        self._outbox.append(header + transport.send.encrypt(nonce, data, header))
        transport.counter = counter + 1
        self.last_sent_at = now
        self._ack_due = None  # anything we send answers what we received

    def _on_transport(self, datagram: bytes, receiver: int, now: float) -> bool:
        if len(datagram) < TRANSPORT_OVERHEAD:
            self.stats.malformed += 1
            return False
        transport = self._transport
        if transport is None or receiver != self.local_index:
            self.stats.unexpected += 1
            return False
        view = memoryview(datagram)
        header = view[:TRANSPORT_HEADER_LENGTH]
        counter = int.from_bytes(view[HEADER_LENGTH:TRANSPORT_HEADER_LENGTH], "little")
        if counter >= COUNTER_LIMIT or not transport.window.check(counter):
            self.stats.replayed += 1
            return False
        nonce = _NONCE_PREFIX + header[HEADER_LENGTH:]
        try:
            data = transport.receive.decrypt(nonce, view[TRANSPORT_HEADER_LENGTH:], header)
        except InvalidTag:
            self.stats.auth_failed += 1
            return False
        transport.window.update(counter)
        self.last_received_at = now
        self._unanswered_since = None
        self._ping_at = None
        if not self._confirmed:
            self._confirmed = True
            self._retransmit_at = None
            self._handshake_deadline = None
        if data:
            self.stats.datagrams_received += 1
            self._events.append(DatagramReceived(data))
            if self.config.ack_delay is not None and self._ack_due is None:
                self._ack_due = now + self.config.ack_delay
        else:
            self.stats.keepalives_received += 1
            delay = self.config.ack_delay
            quiet = self.last_sent_at is None or now - self.last_sent_at >= (delay or 0.0)
            if delay is not None and quiet:
                self._seal(b"", now)  # answered as a ping (see the module docstring)
                self.stats.keepalives_sent += 1
        return True

    # ------------------------------------------------------------------ failure

    def _fail(self, reason: str) -> None:
        self.state = SessionState.FAILED
        self._drop_secrets()
        self._events.append(SessionFailed(reason))

    def _drop_secrets(self) -> None:
        self._transport = None
        self._ack_due = None
        self._unanswered_since = None
        self._ping_at = None
        self._initiator = None
        self._pending.clear()
        self._retransmit_at = None
        self._handshake_deadline = None


__all__ = [
    "COUNTER_LIMIT",
    "DEFAULT_PURPOSE",
    "MAX_PAYLOAD",
    "TRANSPORT_OVERHEAD",
    "ChannelError",
    "DatagramReceived",
    "Event",
    "HandshakeComplete",
    "MessageType",
    "Role",
    "SecureSession",
    "SessionConfig",
    "SessionFailed",
    "SessionState",
    "SessionStats",
    "initiation_peer_id",
    "parse_header",
]
