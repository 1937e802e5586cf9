"""netcheck's STUN layer: the requests it sends parse as the RFC says (by the relay's
strict codec and by aioice), responses from either codec read back, and the layers that
take network input -- ``stun.parse`` and ``transport.Matcher`` -- never raise on
arbitrary or mutated datagrams and never change what they wait for."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.netcheck.stun import (
    Kind,
    StunMessage,
    binding_request,
    new_transaction_id,
    parse,
)
from client_sdk.netcheck.transport import Matcher, Schedule
from relay.stun import AttributeType, ErrorCode, Message, MessageClass, Method
from relay.stun import parse as relay_parse

T = AttributeType
TID = bytes(range(12))


def success(tid: bytes = TID, *attributes: tuple[int, object], fingerprint: bool = True) -> bytes:
    return Message(Method.BINDING, MessageClass.SUCCESS, tid, tuple(attributes)).encode(
        fingerprint=fingerprint
    )


@pytest.mark.parametrize(
    ("kwargs", "flags", "response_port"),
    [
        ({}, None, None),
        ({"change_ip": True, "change_port": True}, (True, True), None),
        ({"change_port": True}, (False, True), None),
        ({"change_ip": True}, (True, False), None),
        ({"response_port": 40000}, None, 40000),
        ({"change_port": True, "response_port": 1}, (False, True), 1),
    ],
)
def test_requests_parse_strictly(
    kwargs: dict[str, object], flags: tuple[bool, bool] | None, response_port: int | None
) -> None:
    data = binding_request(TID, **kwargs)  # type: ignore[arg-type]
    message = relay_parse(data)  # the relay's codec checks lengths, padding, FINGERPRINT
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.REQUEST
    assert message.transaction_id == TID
    assert message.has_fingerprint
    change = message.get(T.CHANGE_REQUEST)
    if flags is None:
        assert change is None
    else:
        assert change is not None
        assert (change.change_ip, change.change_port) == flags
    assert message.get(T.RESPONSE_PORT) == response_port
    # FINGERPRINT is last (RFC 8489 §14.7); netcheck's own parser reads it back.
    assert data[-8:-4] == b"\x80\x28\x00\x04"
    assert parse(data) == StunMessage(Kind.REQUEST, TID)


def test_bad_request_arguments() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        binding_request(b"short")
    with pytest.raises(ValueError, match="RESPONSE-PORT"):
        binding_request(TID, response_port=70000)


def test_transaction_ids_are_random() -> None:
    ids = {new_transaction_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(tid) == 12 for tid in ids)


def test_reads_a_full_rfc5780_response() -> None:
    data = success(
        TID,
        (T.XOR_MAPPED_ADDRESS, ("198.51.100.7", 40001)),
        (T.MAPPED_ADDRESS, ("10.0.0.1", 1)),
        (T.RESPONSE_ORIGIN, ("203.0.113.1", 3478)),
        (T.OTHER_ADDRESS, ("203.0.113.2", 3479)),
        (T.SOFTWARE, "test"),
    )
    assert parse(data) == StunMessage(
        Kind.SUCCESS,
        TID,
        mapped=("198.51.100.7", 40001),  # XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS
        response_origin=("203.0.113.1", 3478),
        other_address=("203.0.113.2", 3479),
    )


def test_reads_ipv6_and_classic_mapped_address() -> None:
    v6 = parse(success(TID, (T.XOR_MAPPED_ADDRESS, ("2001:db8::5", 9))))
    assert v6 is not None
    assert v6.mapped == ("2001:db8::5", 9)
    old = parse(success(TID, (T.MAPPED_ADDRESS, ("192.0.2.1", 7)), fingerprint=False))
    assert old is not None
    assert old.mapped == ("192.0.2.1", 7)


def test_reads_error_responses() -> None:
    data = Message(
        Method.BINDING,
        MessageClass.ERROR,
        TID,
        ((T.ERROR_CODE, ErrorCode(420, "Unknown Attribute")),),
    ).encode(fingerprint=True)
    assert parse(data) == StunMessage(Kind.ERROR, TID, error_code=420)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x01" + b"\x00" * 18,  # no magic cookie: classic RFC 3489
        b"\xc1\x01\x00\x00\x21\x12\xa4\x42" + TID,  # leading bits set
        Message(Method.ALLOCATE, MessageClass.SUCCESS, TID, ()).encode(),  # not Binding
        Message(Method.BINDING, MessageClass.INDICATION, TID, ()).encode(),
        success(TID)[:-1],  # length mismatch
        success(TID)[:-4] + b"\x00\x00\x00\x00",  # bad FINGERPRINT
        # XOR-MAPPED-ADDRESS of 3 bytes: aioice raises; parse does not.
        b"\x01\x01\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x20\x00\x03\x00\x01\x02\x00",
        # ERROR-CODE whose reason is not UTF-8.
        b"\x01\x11\x00\x0c\x21\x12\xa4\x42"
        + TID
        + b"\x00\x09\x00\x06\x00\x00\x04\x14\xff\xfe\x00\x00",
    ],
)
def test_rejects_what_is_not_a_binding_message(data: bytes) -> None:
    assert parse(data) is None


@given(st.binary(max_size=600))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = parse(data)
    assert result is None or isinstance(result, StunMessage)


@given(st.binary(max_size=200))
def test_parse_never_raises_on_stun_shaped_input(body: bytes) -> None:
    # A valid header before arbitrary attributes: the attribute parser gets exercised.
    body = body[: len(body) - len(body) % 4]
    header = struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + TID
    result = parse(header + body)
    assert result is None or result.transaction_id == TID


valid_responses = st.sampled_from(
    [
        success(TID, (T.XOR_MAPPED_ADDRESS, ("198.51.100.7", 40001))),
        success(
            TID,
            (T.XOR_MAPPED_ADDRESS, ("2001:db8::1", 1)),
            (T.RESPONSE_ORIGIN, ("203.0.113.1", 3478)),
            (T.OTHER_ADDRESS, ("203.0.113.2", 3479)),
        ),
        binding_request(TID),
    ]
)


@given(valid_responses, st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=8))
def test_parse_never_raises_on_mutated_messages(data: bytes, flips: list[tuple[int, int]]) -> None:
    mutated = bytearray(data)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    result = parse(bytes(mutated))
    assert result is None or isinstance(result, StunMessage)


@given(st.lists(st.binary(max_size=120), max_size=20))
def test_matcher_ignores_garbage_and_keeps_what_it_awaits(datagrams: list[bytes]) -> None:
    matcher = Matcher()
    awaited = {new_transaction_id() for _ in range(3)}
    for tid in awaited:
        matcher.expect_response(tid)
    request_id = new_transaction_id()
    matcher.expect_request(request_id)
    before = matcher.awaited
    for data in datagrams:
        assert matcher.receive(data, ("192.0.2.1", 3478)) is None  # 96 random bits: no match
    assert matcher.awaited == before


def test_matcher_returns_awaited_messages_only() -> None:
    matcher = Matcher()
    response_id, request_id, other = (new_transaction_id() for _ in range(3))
    matcher.expect_response(response_id)
    matcher.expect_request(request_id)
    source = ("203.0.113.1", 3478)

    got = matcher.receive(success(response_id, (T.XOR_MAPPED_ADDRESS, ("1.2.3.4", 5))), source)
    assert got is not None
    assert got.source == source
    assert got.message.mapped == ("1.2.3.4", 5)
    # A request with an id awaited as a response (or the reverse) is not an answer.
    assert matcher.receive(binding_request(response_id), source) is None
    assert matcher.receive(success(request_id), source) is None
    hairpinned = matcher.receive(binding_request(request_id), source)
    assert hairpinned is not None
    assert hairpinned.message.kind is Kind.REQUEST
    assert matcher.receive(success(other), source) is None
    matcher.forget(response_id)
    assert matcher.receive(success(response_id), source) is None
    assert matcher.awaited == {request_id}


def test_retransmission_schedules() -> None:
    # RFC 8489 §6.2.1 with RTO 250 ms: 0, 250, 750 ms, silence until 1.5 s.
    assert Schedule.rto(0.25, 3, 0.75) == Schedule((0.0, 0.25, 0.75), 1.5)
    assert Schedule.rto(0.5, 7, 8.0).sends == (0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5)
    assert Schedule.every(0.2, 0.6) == Schedule((0.0, 0.2, 0.4), 0.6)
    assert Schedule.every(0.2, 0.7).sends == pytest.approx((0.0, 0.2, 0.4, 0.6))
    assert Schedule.every(1.0, 0.5) == Schedule((0.0,), 0.5)


def test_random_ids_in_parse_results_are_bytes() -> None:
    tid = os.urandom(12)
    result = parse(success(tid))
    assert result is not None
    assert type(result.transaction_id) is bytes
