"""The sans-IO secure session (client_sdk.secure.session) without sockets, on a fake
clock: handshake both ways, identity checks, man in the middle, tampered, truncated,
replayed, reordered and too-old datagrams, lost and duplicated handshake messages,
simultaneous open, limits, keepalives; and hypothesis fuzzing of ``receive()``."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.identity import Identity
from client_sdk.secure.handshake import (
    HandshakeState,
    LocalStatic,
    make_prologue,
)
from client_sdk.secure.session import (
    COUNTER_LIMIT,
    DEFAULT_PURPOSE,
    FINISH_LENGTH,
    INITIATION_LENGTH,
    MAX_PAYLOAD,
    RESPONSE_LENGTH,
    TRANSPORT_OVERHEAD,
    ChannelError,
    DatagramReceived,
    Event,
    HandshakeComplete,
    MessageType,
    Role,
    SecureSession,
    SessionConfig,
    SessionFailed,
    SessionState,
    initiation_peer_id,
)

# Fixed identities keep the tests quick; which of the two ids is lower is looked up.
ALICE = Identity.generate()
BOB = Identity.generate()


def new_pair(
    config: SessionConfig | None = None,
    *,
    responder_expects: bool = False,
) -> tuple[SecureSession, SecureSession]:
    """(initiator towards BOB, responder as BOB), not started."""
    a = SecureSession(ALICE, remote_peer_id=BOB.peer_id, config=config)
    b = SecureSession(
        BOB, remote_peer_id=ALICE.peer_id if responder_expects else None, config=config
    )
    return a, b


def deliver(
    src: SecureSession,
    dst: SecureSession,
    now: float,
    keep: Callable[[bytes], bool] = lambda _: True,
) -> list[bytes]:
    """Move what ``src`` queued into ``dst`` (those ``keep`` accepts); returns them all."""
    out = src.datagrams_to_send()
    for datagram in out:
        if keep(datagram):
            dst.receive(datagram, now)
    return out


def pump(a: SecureSession, b: SecureSession, now: float, rounds: int = 8) -> None:
    for _ in range(rounds):
        if not deliver(a, b, now) + deliver(b, a, now):
            return


def established_pair(config: SessionConfig | None = None) -> tuple[SecureSession, SecureSession]:
    a, b = new_pair(config)
    a.connect(0.0)
    pump(a, b, 0.0)
    assert a.is_established
    assert b.is_established
    drain(a)
    drain(b)
    return a, b


def drain(session: SecureSession) -> list[Event]:
    events: list[Event] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def received(session: SecureSession) -> list[bytes]:
    return [e.data for e in drain(session) if isinstance(e, DatagramReceived)]


def kind(datagram: bytes) -> MessageType:
    return MessageType(datagram[0])


# ----------------------------------------------------------------------------- handshake


def test_handshake_completes_both_ways() -> None:
    a, b = new_pair()
    a.connect(0.0)
    [msg1] = deliver(a, b, 0.0)
    [msg2] = deliver(b, a, 0.0)
    [msg3] = deliver(a, b, 0.0)
    [confirm] = deliver(b, a, 0.0)
    assert (len(msg1), len(msg2), len(msg3)) == (INITIATION_LENGTH, RESPONSE_LENGTH, FINISH_LENGTH)
    assert (INITIATION_LENGTH, RESPONSE_LENGTH, FINISH_LENGTH) == (201, 201, 165)
    assert len(msg1) >= len(msg2)  # no amplification
    assert kind(confirm) is MessageType.TRANSPORT
    assert len(confirm) == TRANSPORT_OVERHEAD
    assert drain(a) == [HandshakeComplete(BOB.peer_id)]
    assert drain(b) == [HandshakeComplete(ALICE.peer_id)]
    assert (a.role, b.role) == (Role.INITIATOR, Role.RESPONDER)
    assert a.remote_peer_id == BOB.peer_id
    assert b.remote_peer_id == ALICE.peer_id
    assert a.handshake_hash is not None
    assert a.handshake_hash == b.handshake_hash
    assert a.get_timer() == 10.0  # only the keepalive is left: confirmed
    a.send(b"ping", 1.0)
    [sealed] = deliver(a, b, 1.0)
    assert len(sealed) == TRANSPORT_OVERHEAD + 4
    assert received(b) == [b"ping"]
    b.send(b"pong", 1.0)
    deliver(b, a, 1.0)
    assert received(a) == [b"pong"]
    assert a.stats.dropped == 0
    assert b.stats.dropped == 0


def test_responder_that_expects_a_peer_answers_only_it() -> None:
    a, b = new_pair(responder_expects=True)
    carol = SecureSession(Identity.generate(), remote_peer_id=BOB.peer_id)
    carol.connect(0.0)
    deliver(carol, b, 0.0)
    assert b.datagrams_to_send() == []
    assert b.state is SessionState.IDLE
    assert b.stats.unexpected == 1
    a.connect(0.0)
    pump(a, b, 0.0)
    assert a.is_established
    assert b.is_established


def test_initiator_rejects_another_peer_answering() -> None:
    """Alice dials Xavier, but Bob answers (wrong address): Bob's message 2 fails (the
    prologue names Xavier), nothing is established, and the handshake times out."""
    xavier = Identity.generate()
    a = SecureSession(ALICE, remote_peer_id=xavier.peer_id)
    b = SecureSession(BOB)
    a.connect(0.0)
    pump(a, b, 0.0)
    assert not a.is_established
    assert not b.is_established
    assert a.stats.auth_failed == 1
    assert all(not isinstance(e, HandshakeComplete) for e in drain(a) + drain(b))
    run_timers(a, until=10.0)
    [failed] = drain(a)
    assert isinstance(failed, SessionFailed)
    assert failed.reason.startswith("handshake timed out after 10 s")
    assert "failed authentication" in failed.reason


def answer_as(
    liar: Identity, msg1: bytes, claimed_responder: str, *, identity_payload: bytes | None = None
) -> bytes:
    """A message 2 by ``liar``, built by hand with the prologue naming
    ``claimed_responder`` (what an attacker who read message 1 can do)."""
    static = LocalStatic.generate(liar)
    claimed_initiator = initiation_peer_id(msg1)
    assert claimed_initiator is not None
    state = HandshakeState(
        "XX",
        initiator=False,
        prologue=make_prologue(DEFAULT_PURPOSE, claimed_initiator, claimed_responder),
        s=static.private,
    )
    state.read_message(msg1[5:])
    payload = identity_payload if identity_payload is not None else static.identity_payload()
    receiver = struct.unpack_from("<I", msg1, 5 + 32 + 1)[0]
    return struct.pack("<BI", 2, receiver) + state.write_message(struct.pack("<I", 7) + payload)


def test_initiator_rejects_a_valid_handshake_from_the_wrong_identity() -> None:
    mallory = Identity.generate()
    a = SecureSession(ALICE, remote_peer_id=BOB.peer_id)
    a.connect(0.0)
    [msg1] = a.datagrams_to_send()
    assert not a.receive(answer_as(mallory, msg1, BOB.peer_id), 0.0)
    assert a.state is SessionState.HANDSHAKING
    assert a.stats.auth_failed == 1
    assert a.datagrams_to_send() == []
    run_timers(a, until=10.0)
    [failed] = drain(a)
    assert isinstance(failed, SessionFailed)
    assert f"remote identity is {mallory.peer_id}, expected {BOB.peer_id}" in failed.reason


def test_man_in_the_middle_presenting_bobs_identity_with_its_own_key_fails() -> None:
    """Mallory learns Bob's identity payload (key + signature over Bob's Noise key) by
    dialling Bob, then offers it to Alice with her own Noise static key."""
    mallory = Identity.generate()
    probe = HandshakeState(
        "XX",
        initiator=True,
        prologue=make_prologue(DEFAULT_PURPOSE, mallory.peer_id, BOB.peer_id),
        s=LocalStatic.generate(mallory).private,
    )
    b = SecureSession(BOB)
    padded = (b"\x01" + struct.pack("<I", 9) + mallory.peer_id.encode()).ljust(164, b"\x00")
    b.receive(struct.pack("<BI", 1, 0) + probe.write_message(padded), 0.0)
    [msg2] = b.datagrams_to_send()
    bobs_identity_payload = probe.read_message(msg2[5:])[4:]
    assert bobs_identity_payload[:32] == BOB.public_key

    a = SecureSession(ALICE, remote_peer_id=BOB.peer_id)
    a.connect(0.0)
    [msg1] = a.datagrams_to_send()
    forged = answer_as(mallory, msg1, BOB.peer_id, identity_payload=bobs_identity_payload)
    assert not a.receive(forged, 0.0)
    assert not a.is_established
    run_timers(a, until=10.0)
    [failed] = drain(a)
    assert isinstance(failed, SessionFailed)
    assert "not signed by the presented identity" in failed.reason


def test_man_in_the_middle_swapping_ephemeral_keys_fails() -> None:
    """Mallory relays, but puts her own ephemeral key into message 1 (and Bob's answer
    back unchanged): Alice can't decrypt, and Bob never completes."""
    a, b = new_pair()
    a.connect(0.0)
    [msg1] = a.datagrams_to_send()
    swapped = msg1[:5] + LocalStatic.generate(Identity.generate()).public + msg1[37:]
    assert b.receive(swapped, 0.0)
    [msg2] = b.datagrams_to_send()
    assert not a.receive(msg2, 0.0)
    assert not a.is_established
    assert not b.is_established
    assert a.datagrams_to_send() == []


def test_man_in_the_middle_replacing_the_claimed_initiator_fails() -> None:
    """Message 1's peer id is cleartext: a relay that rewrites it to Mallory's makes Bob
    build another prologue, and Alice can't decrypt Bob's answer."""
    mallory = Identity.generate()
    a, b = new_pair()
    a.connect(0.0)
    [msg1] = a.datagrams_to_send()
    rewritten = msg1[:42] + mallory.peer_id.encode() + msg1[74:]
    assert initiation_peer_id(rewritten) == mallory.peer_id
    assert b.receive(rewritten, 0.0)
    assert not a.receive(b.datagrams_to_send()[0], 0.0)
    assert not a.is_established


def run_timers(session: SecureSession, until: float) -> list[float]:
    """Fire the session's timers up to ``until``; returns when each fired."""
    fired: list[float] = []
    while (deadline := session.get_timer()) is not None and deadline <= until:
        session.handle_timer(deadline)
        fired.append(deadline)
    return fired


# ------------------------------------------------------------- loss and duplication


def test_retransmission_schedule_doubles_and_gives_up() -> None:
    a, _ = new_pair()
    a.connect(0.0)
    first = a.datagrams_to_send()
    fired = run_timers(a, until=60.0)
    resent = a.datagrams_to_send()
    assert all(d == first[0] for d in resent)  # the very same message 1
    gaps = [round(t2 - t1, 6) for t1, t2 in zip([0.0, *fired], fired, strict=False)]
    assert gaps[:6] == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert fired[-1] == 10.0
    assert len(resent) == a.stats.retransmits == len(fired) - 1
    [failed] = drain(a)
    assert failed == SessionFailed("handshake timed out after 10 s")
    assert a.state is SessionState.FAILED
    assert a.get_timer() is None
    with pytest.raises(ChannelError, match="session is failed"):
        a.send(b"x", 11.0)


def test_lost_message_1_is_retransmitted() -> None:
    a, b = new_pair()
    a.connect(0.0)
    a.datagrams_to_send()  # lost
    run_timers(a, until=0.2)
    pump(a, b, 0.2)
    assert a.is_established
    assert b.is_established
    assert a.stats.retransmits == 1


def test_lost_message_2_answered_again_identically() -> None:
    a, b = new_pair()
    a.connect(0.0)
    deliver(a, b, 0.0)
    [lost] = b.datagrams_to_send()
    run_timers(a, until=0.2)
    deliver(a, b, 0.2)
    [again] = b.datagrams_to_send()
    assert again == lost
    assert b.stats.duplicates == 1
    a.receive(again, 0.2)
    pump(a, b, 0.2)
    assert a.is_established
    assert b.is_established
    assert drain(b) == [HandshakeComplete(ALICE.peer_id)]


def test_lost_message_3_is_retransmitted_until_confirmed() -> None:
    a, b = new_pair()
    a.connect(0.0)
    deliver(a, b, 0.0)
    deliver(b, a, 0.0)
    [lost] = a.datagrams_to_send()
    assert a.is_established
    assert not b.is_established
    a.send(b"early", 0.1)  # sent before the responder has keys: dropped there
    deliver(a, b, 0.1)
    assert b.stats.unexpected == 1
    assert received(b) == []
    run_timers(a, until=0.2)
    [again] = a.datagrams_to_send()
    assert again == lost
    b.receive(again, 0.2)
    assert b.is_established
    [confirm] = deliver(b, a, 0.2)
    assert len(confirm) == TRANSPORT_OVERHEAD
    assert a.stats.keepalives_received == 1
    assert a.get_timer() == pytest.approx(10.1)  # retransmission stopped: keepalive only


def test_duplicate_handshake_messages_do_not_advance_or_corrupt() -> None:
    a, b = new_pair()
    a.connect(0.0)
    [msg1] = a.datagrams_to_send()
    b.receive(msg1, 0.0)
    b.receive(msg1, 0.0)
    msg2, msg2_again = b.datagrams_to_send()
    assert msg2 == msg2_again
    a.receive(msg2, 0.0)
    [msg3] = a.datagrams_to_send()
    assert a.receive(msg2_again, 0.0)  # duplicate message 2: the same message 3 again
    assert a.datagrams_to_send() == [msg3]
    b.receive(msg3, 0.0)
    b.receive(msg3, 0.0)  # duplicate message 3: one more confirmation, no new event
    confirmations = b.datagrams_to_send()
    assert len(confirmations) == 2
    assert all(a.receive(c, 0.0) for c in confirmations)
    assert b.receive(msg1, 0.0) is False  # message 1 after the handshake: dropped
    assert drain(a) == [HandshakeComplete(BOB.peer_id)]
    assert drain(b) == [HandshakeComplete(ALICE.peer_id)]
    a.send(b"still fine", 0.1)
    deliver(a, b, 0.1)
    assert received(b) == [b"still fine"]


def test_forged_message_1_cannot_displace_the_real_one() -> None:
    """Anyone can make a message 1 claiming to be Alice; Bob answers both, and only
    Alice's can finish."""
    a, b = new_pair()
    impostor = SecureSession(Identity.generate(), remote_peer_id=BOB.peer_id)
    impostor.connect(0.0)
    [fake] = impostor.datagrams_to_send()
    forged = fake[:42] + ALICE.peer_id.encode() + fake[74:]
    a.connect(0.0)
    [real] = a.datagrams_to_send()
    assert b.receive(forged, 0.0)
    assert b.receive(real, 0.0)
    _, answer = b.datagrams_to_send()
    a.receive(answer, 0.0)
    pump(a, b, 0.0)
    assert a.is_established
    assert b.is_established
    assert b.remote_peer_id == ALICE.peer_id


# ------------------------------------------------------------------ simultaneous open


@pytest.mark.parametrize("first", ["lower", "higher"])
def test_simultaneous_open_lower_peer_id_stays_initiator(first: str) -> None:
    a = SecureSession(ALICE, remote_peer_id=BOB.peer_id)
    b = SecureSession(BOB, remote_peer_id=ALICE.peer_id)
    lower, higher = (a, b) if ALICE.peer_id < BOB.peer_id else (b, a)
    a.connect(0.0)
    b.connect(0.0)
    [from_lower] = lower.datagrams_to_send()
    [from_higher] = higher.datagrams_to_send()
    if first == "lower":
        higher.receive(from_lower, 0.0)
        assert not lower.receive(from_higher, 0.0)
    else:
        assert not lower.receive(from_higher, 0.0)
        higher.receive(from_lower, 0.0)
    assert lower.stats.ignored_initiations == 1
    pump(a, b, 0.0)
    assert a.is_established
    assert b.is_established
    assert (lower.role, higher.role) == (Role.INITIATOR, Role.RESPONDER)
    assert drain(a) == [HandshakeComplete(BOB.peer_id)]
    assert drain(b) == [HandshakeComplete(ALICE.peer_id)]
    # The higher side stopped retransmitting its own message 1.
    run_timers(higher, until=5.0)
    assert all(kind(d) is MessageType.TRANSPORT for d in higher.datagrams_to_send())
    a.send(b"hi bob", 1.0)
    b.send(b"hi alice", 1.0)
    deliver(a, b, 1.0)
    deliver(b, a, 1.0)
    assert received(a) == [b"hi alice"]
    assert received(b) == [b"hi bob"]


def test_simultaneous_open_with_lost_and_repeated_messages_1() -> None:
    a = SecureSession(ALICE, remote_peer_id=BOB.peer_id)
    b = SecureSession(BOB, remote_peer_id=ALICE.peer_id)
    a.connect(0.0)
    b.connect(0.0)
    a.datagrams_to_send()
    b.datagrams_to_send()  # both lost
    now = 0.0
    for _ in range(10):
        now += 0.2
        a.handle_timer(now)
        b.handle_timer(now)
        pump(a, b, now)
    assert a.is_established
    assert b.is_established
    assert {a.role, b.role} == {Role.INITIATOR, Role.RESPONDER}


# -------------------------------------------------------------------------- transport


def test_tampered_datagrams_are_dropped() -> None:
    a, b = established_pair()
    a.send(b"important", 1.0)
    [sealed] = a.datagrams_to_send()
    for position in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[position] ^= bit
            assert not b.receive(bytes(tampered), 1.0)
    assert received(b) == []
    assert b.receive(sealed, 1.0)
    assert received(b) == [b"important"]


def test_truncated_and_extended_datagrams_are_dropped() -> None:
    a, b = established_pair()
    a.send(b"payload", 1.0)
    [sealed] = a.datagrams_to_send()
    for length in range(len(sealed)):
        assert not b.receive(sealed[:length], 1.0)
    assert not b.receive(sealed + b"\x00", 1.0)
    assert b.stats.malformed + b.stats.auth_failed == len(sealed) + 1
    assert b.receive(sealed, 1.0)
    assert received(b) == [b"payload"]


def test_replays_are_dropped() -> None:
    a, b = established_pair()
    a.send(b"once", 1.0)
    [sealed] = a.datagrams_to_send()
    assert b.receive(sealed, 1.0)
    assert not b.receive(sealed, 1.0)
    assert not b.receive(sealed, 2.0)
    assert received(b) == [b"once"]
    assert b.stats.replayed == 2


def test_reordered_datagrams_within_the_window_are_delivered() -> None:
    a, b = established_pair()
    for i in range(300):
        a.send(b"%d" % i, 1.0)
    sealed = a.datagrams_to_send()
    for datagram in reversed(sealed):
        assert b.receive(datagram, 1.0)
    assert received(b) == [b"%d" % i for i in reversed(range(300))]


def test_too_old_datagrams_are_dropped() -> None:
    a, b = established_pair()
    for i in range(2100):
        a.send(i.to_bytes(2, "big"), 1.0)
    sealed = a.datagrams_to_send()
    assert b.receive(sealed[-1], 1.0)  # counter 2099 (+1 for nothing: a sent no keepalive)
    assert b.receive(sealed[2099 - 2047], 1.0)  # the oldest still in the 2048 window
    assert not b.receive(sealed[2099 - 2048], 1.0)
    assert not b.receive(sealed[0], 1.0)
    assert b.stats.replayed == 2
    assert len(received(b)) == 2


def test_datagram_for_another_session_index_is_dropped() -> None:
    a, b = established_pair()
    a.send(b"x", 1.0)
    [sealed] = a.datagrams_to_send()
    other = bytes([sealed[0]]) + struct.pack("<I", b.local_index ^ 1) + sealed[5:]
    assert not b.receive(other, 1.0)
    assert b.stats.unexpected == 1


def test_stale_session_datagrams_are_told_apart() -> None:
    """A datagram of an earlier session between the same peers is refused by index."""
    old_a, _old_b = established_pair()
    _a, b = established_pair()
    old_a.send(b"from the old session", 1.0)
    [stale] = old_a.datagrams_to_send()
    assert not b.receive(stale, 1.0)
    assert received(b) == []


# ------------------------------------------------------------------------------ limits


def test_payload_limit_and_exact_overhead() -> None:
    a, b = established_pair()
    assert a.max_payload == MAX_PAYLOAD == 1171
    a.send(b"\xab" * MAX_PAYLOAD, 1.0)
    [sealed] = deliver(a, b, 1.0)
    assert len(sealed) == 1200
    assert received(b) == [b"\xab" * MAX_PAYLOAD]
    with pytest.raises(ChannelError, match="payload of 1172 bytes exceeds the maximum of 1171"):
        a.send(b"\x00" * (MAX_PAYLOAD + 1), 1.0)
    small = SessionConfig(max_datagram_size=500)
    c, _ = established_pair(small)
    assert c.max_payload == 471
    with pytest.raises(ChannelError, match="empty payloads are keepalives"):
        a.send(b"", 1.0)


def test_message_limit() -> None:
    a, b = established_pair(SessionConfig(max_messages=3))
    a.send(b"1", 1.0)  # counters 0, 1, 2 (no keepalive was sent by the initiator)
    a.send(b"2", 1.0)
    a.send(b"3", 1.0)
    with pytest.raises(ChannelError, match="message limit of 3 reached: open a new session"):
        a.send(b"4", 1.0)
    deliver(a, b, 1.0)
    assert received(b) == [b"1", b"2", b"3"]
    # The responder's keepalive took counter 0; when the keepalive timer hits the limit,
    # the session fails instead of raising from handle_timer.
    b.send(b"x", 1.0)
    b.send(b"y", 1.0)
    b.handle_timer(11.0)
    assert drain(b) == [SessionFailed("message limit of 3 reached: open a new session")]


def test_counters_at_the_protocol_limit_are_refused() -> None:
    a, b = established_pair()
    transport = a._transport
    assert transport is not None
    transport.counter = COUNTER_LIMIT - 1
    a.send(b"last", 1.0)
    with pytest.raises(ChannelError, match="message limit"):
        a.send(b"one too many", 1.0)
    assert b.receive(a.datagrams_to_send()[0], 1.0)
    # A datagram claiming counter 2^60 is refused before any decryption.
    forged = bytes([4]) + struct.pack("<IQ", b.local_index, COUNTER_LIMIT) + bytes(16)
    assert not b.receive(forged, 1.0)
    assert b.stats.replayed == 1


def test_send_before_and_after() -> None:
    a, _ = new_pair()
    with pytest.raises(ChannelError, match="session is idle"):
        a.send(b"x", 0.0)
    a.connect(0.0)
    with pytest.raises(ChannelError, match="session is handshaking"):
        a.send(b"x", 0.0)
    with pytest.raises(ChannelError, match="connect\\(\\) on a session that is handshaking"):
        a.connect(0.0)
    with pytest.raises(ChannelError, match="needs the remote peer id"):
        SecureSession(BOB).connect(0.0)
    with pytest.raises(ChannelError, match="oneself"):
        SecureSession(ALICE, remote_peer_id=ALICE.peer_id)
    c, d = established_pair()
    c.close()
    with pytest.raises(ChannelError, match="session is closed"):
        c.send(b"x", 1.0)
    d.send(b"to a closed session", 1.0)
    assert not c.receive(d.datagrams_to_send()[0], 1.0)
    assert c.get_timer() is None


def test_config_is_validated() -> None:
    with pytest.raises(ChannelError, match="retransmit"):
        SessionConfig(retransmit_initial=0.0)
    with pytest.raises(ChannelError, match="max_datagram_size"):
        SessionConfig(max_datagram_size=200)
    with pytest.raises(ChannelError, match="max_messages"):
        SessionConfig(max_messages=2**61)


# --------------------------------------------------------------------------- keepalive


def test_keepalive_timer_and_liveness() -> None:
    a, b = established_pair()
    assert a.get_timer() == 10.0  # last sent at 0 + keepalive interval
    a.handle_timer(10.0)
    [keepalive] = a.datagrams_to_send()
    assert len(keepalive) == TRANSPORT_OVERHEAD
    assert a.stats.keepalives_sent == 1
    assert b.receive(keepalive, 10.0)
    assert drain(b) == []
    assert b.last_received_at == 10.0
    assert b.stats.keepalives_received == 1
    a.send(b"data", 15.0)
    assert kind(a.datagrams_to_send()[0]) is MessageType.TRANSPORT
    assert a.get_timer() == 25.0  # data counts as traffic: the keepalive moves
    a.handle_timer(20.0)
    assert a.datagrams_to_send() == []
    a.handle_timer(25.0)
    assert [len(d) for d in a.datagrams_to_send()] == [TRANSPORT_OVERHEAD]


def test_idle_timeout_fails_the_session() -> None:
    a, _ = established_pair()
    fired = run_timers(a, until=100.0)
    assert fired == [10.0, 20.0, 30.0]  # two keepalives, then nothing heard for 30 s
    assert drain(a) == [SessionFailed("no datagram from the peer for 30 s")]
    assert a.get_timer() is None


def test_keepalives_and_idle_timeout_can_be_off() -> None:
    a, _ = established_pair(SessionConfig(keepalive_interval=None, idle_timeout=None))
    assert a.get_timer() is None


LIVE = SessionConfig(ack_delay=1.0, response_timeout=8.0)


def test_received_data_is_answered_within_the_ack_delay() -> None:
    a, b = established_pair(LIVE)
    a.send(b"one-way", 5.0)
    assert a.get_timer() == 7.0  # a ping if nothing answers first
    deliver(a, b, 5.0)
    assert received(b) == [b"one-way"]
    assert b.get_timer() == 6.0  # the ack, long before the 10 s keepalive
    b.handle_timer(6.0)
    [ack] = b.datagrams_to_send()
    assert len(ack) == TRANSPORT_OVERHEAD
    assert a.receive(ack, 6.5)
    # Answered: no ping, no dead-path deadline; the keepalive is what is left.
    assert a.get_timer() == 16.5  # a answered the ack as a ping (silent for > 1 s) ...
    [pong] = a.datagrams_to_send()
    assert b.receive(pong, 6.6)
    assert b.datagrams_to_send() == []  # ... and there it stops: b sent 0.6 s ago
    assert b.get_timer() == 16.0


def test_anything_sent_back_counts_as_the_ack() -> None:
    a, b = established_pair(LIVE)
    a.send(b"ping", 5.0)
    deliver(a, b, 5.0)
    b.send(b"pong", 5.5)
    deliver(b, a, 5.5)
    assert a.datagrams_to_send() == []  # data is not answered as a ping is
    b.handle_timer(6.0)
    assert b.datagrams_to_send() == []  # no extra keepalive: the pong answered
    assert b.stats.keepalives_sent == 1  # only the handshake's confirmation


def test_a_lost_answer_is_made_up_for_by_the_pings() -> None:
    a, b = established_pair(LIVE)
    a.send(b"lone", 5.0)
    deliver(a, b, 5.0)
    b.handle_timer(6.0)
    b.datagrams_to_send()  # the ack is lost
    a.handle_timer(7.0)  # a pings
    [ping] = a.datagrams_to_send()
    assert b.receive(ping, 7.0)  # b sent 1 s ago: it answers
    [pong] = b.datagrams_to_send()
    assert a.receive(pong, 7.0)
    a.handle_timer(13.0)
    assert drain(a) == []  # alive: the dead-path deadline is gone
    assert a.is_established


def test_a_dead_path_under_traffic_fails_after_the_response_timeout() -> None:
    a, b = established_pair(LIVE)
    a.send(b"first", 5.0)
    a.send(b"second", 6.0)  # the deadline counts from the first unanswered one
    a.datagrams_to_send()  # lost: the path died
    fired = run_timers(a, until=100.0)
    assert fired == [7.0, 9.0, 11.0, 13.0]  # pings every 2 s, then dead at 5 + 8
    assert len(a.datagrams_to_send()) == 3  # the three pings
    assert drain(a) == [
        SessionFailed("no answer from the peer for 8 s after sending: the path is dead")
    ]
    assert b.is_established  # the receiver only sees silence (its idle timeout)


def test_pings_do_not_echo_forever() -> None:
    a, b = established_pair(LIVE)
    sent = 0
    for now in range(1, 200):  # 200 s with a 1 s round trip's worth of timers
        a.handle_timer(float(now))
        b.handle_timer(float(now))
        sent += len(deliver(a, b, now + 0.01)) + len(deliver(b, a, now + 0.02))
    # Idle: each side's keepalive every 10 s, each answered once: about 4 per 10 s.
    assert sent <= 4 * 20 + 4


def test_without_traffic_only_the_idle_timeout_ends_a_live_session() -> None:
    a, _ = established_pair(LIVE)
    fired = run_timers(a, until=100.0)
    assert fired == [10.0, 20.0, 30.0]  # keepalives are not data: nothing awaits an answer


def test_liveness_timers_are_validated() -> None:
    with pytest.raises(ChannelError, match="ack_delay"):
        SessionConfig(ack_delay=0)
    with pytest.raises(ChannelError, match="response_timeout"):
        SessionConfig(ack_delay=2.0, response_timeout=2.0)
    with pytest.raises(ChannelError, match="response_timeout"):
        SessionConfig(response_timeout=-1)


# ---------------------------------------------------------------------------- fuzzing


def sample_datagrams() -> list[bytes]:
    """One of each kind of valid datagram, from a pair that is then thrown away."""
    a, b = new_pair()
    a.connect(0.0)
    out = deliver(a, b, 0.0) + deliver(b, a, 0.0) + deliver(a, b, 0.0) + deliver(b, a, 0.0)
    a.send(b"payload", 1.0)
    return out + a.datagrams_to_send()


SAMPLES = sample_datagrams()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(SAMPLES)))
    how = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "retype"]))
    if how == "flip":
        for position in draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=4)):
            base[position] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del base[draw(st.integers(0, len(base) - 1)) :]
    elif how == "extend":
        base += draw(st.binary(min_size=1, max_size=32))
    elif how == "splice":
        start = draw(st.integers(0, len(base) - 1))
        base[start : start + 8] = draw(st.binary(min_size=0, max_size=8))
    else:
        base[0] = draw(st.integers(0, 255))
    return bytes(base)


junk = st.one_of(st.binary(max_size=1300), mutated())


@settings(max_examples=150)
@given(st.lists(junk, max_size=8))
def test_junk_never_raises_nor_changes_an_established_session(datagrams: list[bytes]) -> None:
    a, b = established_pair()
    for datagram in datagrams:
        b.receive(datagram, 1.0)  # must not raise
    # Replaying the captured samples is dropped too: they belong to another session.
    assert [e for e in drain(b) if not isinstance(e, HandshakeComplete)] == []
    assert b.state is SessionState.ESTABLISHED
    assert b.remote_peer_id == ALICE.peer_id
    b.datagrams_to_send()
    a.send(b"after the junk", 2.0)
    b.send(b"still here", 2.0)
    deliver(a, b, 2.0)
    deliver(b, a, 2.0)
    assert received(b) == [b"after the junk"]
    assert received(a) == [b"still here"]


@settings(max_examples=100)
@given(st.lists(junk, max_size=6), st.lists(junk, max_size=6))
def test_junk_during_the_handshake_never_raises_nor_breaks_it(
    to_initiator: list[bytes], to_responder: list[bytes]
) -> None:
    a, b = new_pair()
    a.connect(0.0)
    deliver(a, b, 0.0)
    for datagram in to_initiator:
        a.receive(datagram, 0.0)
    for datagram in to_responder:
        b.receive(datagram, 0.0)
    pump(a, b, 0.0)
    assert a.is_established
    assert b.is_established
    assert [e for e in drain(a) if not isinstance(e, HandshakeComplete)] == []
    assert drain(b) == [HandshakeComplete(ALICE.peer_id)]
    a.send(b"ok", 1.0)
    deliver(a, b, 1.0)
    assert received(b) == [b"ok"]


@settings(max_examples=60)
@given(st.lists(mutated(), min_size=1, max_size=10))
def test_mutated_transport_never_delivers_anything_else(datagrams: list[bytes]) -> None:
    """Mutations of this very session's datagrams: only the original payload, once."""
    a, b = established_pair()
    a.send(b"the one", 1.0)
    [sealed] = a.datagrams_to_send()
    for datagram in datagrams:
        variant = datagram
        if datagram[:1] == b"\x04" and len(datagram) >= 13:
            variant = sealed[:13] + datagram[13:]  # mutate the body of a real datagram
        if variant != sealed:
            b.receive(variant, 1.0)
    b.receive(sealed, 1.0)
    b.receive(sealed, 1.0)
    events: list[Event] = drain(b)
    assert events == [DatagramReceived(b"the one")]
