"""The sans-IO Binding core, without sockets. Requests are built and responses decoded
with aioice's STUN codec (written by others), so these tests do not grade our codec with
itself."""

from __future__ import annotations

import os
import struct
from binascii import crc32

import pytest
from aioice import stun as aioice_stun
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.server.binding import BindingService
from relay.server.counters import DropReason
from relay.server.listeners import Listener, plan_listeners
from relay.settings import RelaySettings

CLIENT = ("198.51.100.7", 40000)
CLIENT6 = ("2001:db8::7", 40000, 0, 0)


def rfc5780_listeners() -> tuple[Listener, ...]:
    return plan_listeners(
        RelaySettings.model_validate(
            {"listen": ["192.0.2.1:3478"], "alt_listen": ["192.0.2.2:3479"]}
        )
    )


def plain_listeners() -> tuple[Listener, ...]:
    return plan_listeners(RelaySettings.model_validate({"listen": ["192.0.2.1:3478"]}))


def request(
    *,
    fingerprint: bool = True,
    method: aioice_stun.Method = aioice_stun.Method.BINDING,
    **attrs: object,
) -> aioice_stun.Message:
    msg = aioice_stun.Message(message_method=method, message_class=aioice_stun.Class.REQUEST)
    for name, value in attrs.items():
        msg.attributes[name.replace("_", "-")] = value
    if fingerprint:
        msg.add_fingerprint()
    return msg


def with_raw_attribute(msg: aioice_stun.Message, attr_type: int, value: bytes) -> bytes:
    """``msg`` (no fingerprint) with one extra TLV appended, length fixed up."""
    data = bytes(msg)
    pad = b"\x00" * (-len(value) % 4)
    data += struct.pack("!HH", attr_type, len(value)) + value + pad
    return data[:2] + struct.pack("!H", len(data) - 20) + data[4:]


def answer(
    service: BindingService,
    data: bytes,
    addr: tuple[str, int] | tuple[str, int, int, int],
    index: int = 0,
) -> tuple[aioice_stun.Message, int, object]:
    reply = service.handle(data, addr, index)
    assert reply is not None
    payload, send_from, destination = reply
    return aioice_stun.parse_message(payload), send_from, destination


def test_binding_fast_path_fingerprint() -> None:
    service = BindingService(plain_listeners(), software="natkit-test")
    req = request()
    response, send_from, destination = answer(service, bytes(req), CLIENT)
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == req.transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert "FINGERPRINT" in response.attributes  # aioice verified it while parsing
    assert response.attributes["SOFTWARE"] == "natkit-test"
    # No alternate address: no RFC 5780 attributes.
    assert "OTHER-ADDRESS" not in response.attributes
    assert (send_from, destination) == (0, CLIENT)
    assert service.counters.binding_requests() == 1
    assert service.counters.successes() == 1


def test_binding_without_fingerprint_gets_none_back() -> None:
    service = BindingService(plain_listeners())
    response, _, _ = answer(service, bytes(request(fingerprint=False)), CLIENT)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert "FINGERPRINT" not in response.attributes
    assert "SOFTWARE" not in response.attributes


def test_binding_ipv6_client() -> None:
    service = BindingService(plain_listeners())
    for _ in range(2):  # the IPv6 address must not be served from the IPv4 cache
        req = request()
        response, _, destination = answer(service, bytes(req), CLIENT6)
        assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT6[:2]
        assert destination == CLIENT6


def test_cached_address_uses_each_transaction_id() -> None:
    service = BindingService(plain_listeners())
    first, second = request(), request()
    r1, _, _ = answer(service, bytes(first), CLIENT)
    r2, _, _ = answer(service, bytes(second), CLIENT)  # served from the address cache
    assert (r1.transaction_id, r2.transaction_id) == (first.transaction_id, second.transaction_id)
    other = ("203.0.113.9", 1)
    r3, _, _ = answer(service, bytes(request()), other)
    assert r3.attributes["XOR-MAPPED-ADDRESS"] == other


def test_bad_fingerprint_is_dropped() -> None:
    service = BindingService(plain_listeners())
    data = bytearray(bytes(request()))
    data[-1] ^= 1
    assert service.handle(bytes(data), CLIENT, 0) is None
    assert service.counters.dropped[DropReason.BAD_FINGERPRINT] == 1
    # Also once the client's address is cached (the fast path).
    assert service.handle(bytes(request()), CLIENT, 0) is not None
    assert service.handle(bytes(data), CLIENT, 0) is None
    assert service.counters.dropped[DropReason.BAD_FINGERPRINT] == 2
    assert service.counters.successes() == 1
    # Same on the full path (a request with more attributes than FINGERPRINT).
    data = bytearray(bytes(request(SOFTWARE="x")))
    data[-1] ^= 1
    assert service.handle(bytes(data), CLIENT, 0) is None
    assert service.counters.dropped[DropReason.BAD_FINGERPRINT] == 3
    assert service.counters.successes() == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.NOT_STUN),
        (b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"x" * 11, DropReason.NOT_STUN),
        (b"\x40\x00\x00\x04" + b"\x00" * 20, DropReason.NOT_STUN),  # ChannelData-like
        (b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"x" * 12, DropReason.BAD_LENGTH),
        (b"\x00\x01\x00\x02" + b"\x21\x12\xa4\x42" + b"x" * 14, DropReason.BAD_LENGTH),
        (b"\x00\x01\x00\x00" + b"\x00\x00\x00\x00" + b"x" * 12, DropReason.CLASSIC_DISABLED),
    ],
)
def test_dropped_with_reason(data: bytes, reason: DropReason) -> None:
    service = BindingService(plain_listeners())
    assert service.handle(data, CLIENT, 0) is None
    assert service.counters.dropped[reason] == 1
    assert sum(service.counters.dropped) == 1


def test_responses_and_indications_get_no_answer() -> None:
    service = BindingService(plain_listeners())
    indication = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.INDICATION
    )
    assert service.handle(bytes(indication), CLIENT, 0) is None
    assert service.counters.indications == 1
    response = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.RESPONSE
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = CLIENT
    assert service.handle(bytes(response), CLIENT, 0) is None
    assert service.counters.dropped[DropReason.UNEXPECTED_CLASS] == 1


def test_other_methods_get_400() -> None:
    service = BindingService(plain_listeners())
    req = request(method=aioice_stun.Method.ALLOCATE, REQUESTED_TRANSPORT=0x11000000)
    response, _, _ = answer(service, bytes(req), CLIENT)
    assert response.message_class == aioice_stun.Class.ERROR
    assert response.message_method == aioice_stun.Method.ALLOCATE
    assert response.attributes["ERROR-CODE"][0] == 400
    assert service.counters.error_responses == {400: 1}


def test_malformed_request_gets_400_naming_the_problem() -> None:
    service = BindingService(plain_listeners())
    req = request(fingerprint=False)
    # An XOR-MAPPED-ADDRESS with an unknown family (7) inside a request.
    data = with_raw_attribute(req, 0x0020, b"\x00\x07\x00\x01\x01\x02\x03\x04")
    response, _, _ = answer(service, data, CLIENT)
    assert response.attributes["ERROR-CODE"][0] == 400
    assert response.transaction_id == req.transaction_id
    assert "family" in response.attributes["ERROR-CODE"][1].lower()


def test_unknown_comprehension_required_gets_420() -> None:
    service = BindingService(plain_listeners())
    req = request(fingerprint=False)
    data = with_raw_attribute(req, 0x0030, b"abcd")
    response, _, _ = answer(service, data, CLIENT)
    assert response.attributes["ERROR-CODE"][0] == 420
    # aioice does not decode UNKNOWN-ATTRIBUTES; find the TLV ourselves.
    payload = service.handle(data, CLIENT, 0)
    assert payload is not None
    assert b"\x00\x0a\x00\x02\x00\x30" in payload[0]


def test_unknown_optional_attribute_is_ignored() -> None:
    service = BindingService(plain_listeners())
    data = with_raw_attribute(request(fingerprint=False), 0x8050, b"zz")
    response, _, _ = answer(service, data, CLIENT)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT


def test_rfc5780_other_address_and_response_origin() -> None:
    listeners = rfc5780_listeners()
    service = BindingService(listeners)
    for listener in listeners:
        response, send_from, _ = answer(service, bytes(request()), CLIENT, listener.index)
        assert send_from == listener.index
        assert response.attributes["RESPONSE-ORIGIN"] == tuple(listener.address)
        assert listener.other is not None
        assert response.attributes["OTHER-ADDRESS"] == tuple(listener.other)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(0, "192.0.2.1:3478"), (2, "192.0.2.1:3479"), (4, "192.0.2.2:3478"), (6, "192.0.2.2:3479")],
)
def test_rfc5780_change_request(flags: int, expected: str) -> None:
    listeners = rfc5780_listeners()
    service = BindingService(listeners)
    primary = next(x for x in listeners if str(x.address) == "192.0.2.1:3478")
    response, send_from, destination = answer(
        service, bytes(request(CHANGE_REQUEST=flags)), CLIENT, primary.index
    )
    assert str(listeners[send_from].address) == expected
    assert response.attributes["RESPONSE-ORIGIN"] == tuple(listeners[send_from].address)
    assert response.attributes["OTHER-ADDRESS"] == ("192.0.2.2", 3479)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert destination == CLIENT


def test_change_request_without_alternate_gets_420() -> None:
    service = BindingService(plain_listeners())
    reply = service.handle(bytes(request(CHANGE_REQUEST=6)), CLIENT, 0)
    assert reply is not None
    response = aioice_stun.parse_message(reply[0])
    assert response.attributes["ERROR-CODE"][0] == 420
    assert b"\x00\x0a\x00\x02\x00\x03" in reply[0]  # UNKNOWN-ATTRIBUTES: CHANGE-REQUEST


def test_change_request_zero_is_plain_binding() -> None:
    service = BindingService(plain_listeners())
    response, _, _ = answer(service, bytes(request(CHANGE_REQUEST=0)), CLIENT)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT


def test_response_port() -> None:
    service = BindingService(rfc5780_listeners())
    data = with_raw_attribute(request(fingerprint=False), 0x0027, b"\x1f\x90\x00\x00")
    response, _, destination = answer(service, data, CLIENT)
    assert destination == (CLIENT[0], 8080)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT


def test_padding_is_mirrored_not_amplified() -> None:
    service = BindingService(rfc5780_listeners())
    data = with_raw_attribute(request(fingerprint=False), 0x0026, b"\x00" * 500)
    reply = service.handle(data, CLIENT, 0)
    assert reply is not None
    assert len(reply[0]) >= 500
    assert len(reply[0]) <= len(data) + 100


def classic_request(change: int | None = None) -> bytes:
    tid = os.urandom(16)
    body = b"" if change is None else struct.pack("!HHI", 0x0003, 4, change)
    return struct.pack("!HH", 0x0001, len(body)) + tid + body


def test_classic_request_when_enabled() -> None:
    listeners = rfc5780_listeners()
    service = BindingService(listeners, rfc3489=True)
    data = classic_request(change=4)
    reply = service.handle(data, CLIENT, 0)
    assert reply is not None
    payload, send_from, destination = reply
    assert payload[4:20] == data[4:20]  # the 16-byte classic transaction id is echoed
    assert struct.unpack("!H", payload[:2])[0] == 0x0101
    assert destination == CLIENT
    assert str(listeners[send_from].address) == "192.0.2.2:3478"  # changed IP
    # MAPPED-ADDRESS (plain), SOURCE-ADDRESS = where it left from, CHANGED-ADDRESS.
    assert struct.pack("!HHBBH", 0x0001, 8, 0, 1, CLIENT[1]) + bytes([198, 51, 100, 7]) in payload
    assert struct.pack("!HHBBH", 0x0004, 8, 0, 1, 3478) + bytes([192, 0, 2, 2]) in payload
    assert struct.pack("!HHBBH", 0x0005, 8, 0, 1, 3479) + bytes([192, 0, 2, 2]) in payload
    assert b"\x80\x28" not in payload  # classic responses carry no FINGERPRINT


def fingerprinted(data: bytes) -> bytes:
    data = data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:]
    return data + b"\x80\x28\x00\x04" + struct.pack("!I", crc32(data) ^ 0x5354554E)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_arbitrary_datagrams_never_raise(data: bytes, stun_header: bool, fp: bool) -> None:
    service = BindingService(rfc5780_listeners(), software="natkit", rfc3489=True)
    if stun_header:
        # Make most inputs get past the header checks so the attribute parser is exercised.
        body = data[: len(data) - len(data) % 4]
        data = struct.pack("!HHI", 0x0001, len(body), 0x2112A442) + os.urandom(12) + body
        if fp:
            data = fingerprinted(data)
    reply = service.handle(data, CLIENT, 0)
    assert service.counters.dropped[DropReason.INTERNAL_ERROR] == 0
    if reply is not None:
        payload, send_from, _ = reply
        assert 0 <= send_from < 4
        assert payload[8:20] == data[8:20] or payload[4:20] == data[4:20]
        assert len(payload) <= max(len(data), 20) + 120  # no amplification beyond a header's worth
        aioice_stun.parse_message(payload)  # well-formed for a third-party parser
