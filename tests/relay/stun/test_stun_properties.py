"""Hypothesis properties of the STUN codec: round trips, integrity, and robustness of
parse() against arbitrary and mutated input (it may only raise StunError)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import string
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.stun import (
    CODECS,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    AddressErrorCode,
    AttributeType,
    AttributeValue,
    ChangeRequest,
    ErrorCode,
    Icmp,
    Message,
    MessageClass,
    StunError,
    parse,
    verify_integrity,
    verify_integrity_sha256,
)

T = AttributeType


def _canonical_ipv6(address: ipaddress.IPv6Address) -> str:
    # The codec formats addresses like the socket module (inet_ntop), e.g. IPv4-mapped
    # addresses as "::ffff:1.2.3.4".
    return socket.inet_ntop(socket.AF_INET6, address.packed)


ips = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: _canonical_ipv6(ipaddress.IPv6Address(a))),
)
addresses = st.tuples(ips, st.integers(0, 0xFFFF))
text127 = st.text(max_size=127)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)
error_codes = st.integers(300, 699)

VALUE_STRATEGIES: dict[int, st.SearchStrategy[AttributeValue]] = {
    T.MAPPED_ADDRESS: addresses,
    T.XOR_MAPPED_ADDRESS: addresses,
    T.USERNAME: st.text(max_size=127),
    T.USERHASH: st.binary(min_size=32, max_size=32),
    T.ERROR_CODE: st.builds(ErrorCode, error_codes, text127),
    T.REALM: text127,
    T.NONCE: text127,
    T.PASSWORD_ALGORITHMS: st.lists(st.tuples(u16, st.binary(max_size=9)), max_size=3).map(tuple),
    T.PASSWORD_ALGORITHM: st.tuples(u16, st.binary(max_size=9)),
    T.UNKNOWN_ATTRIBUTES: st.lists(u16, max_size=7).map(tuple),
    T.SOFTWARE: text127,
    T.ALTERNATE_SERVER: addresses,
    T.ALTERNATE_DOMAIN: st.text(string.ascii_letters + string.digits + ".-", max_size=255),
    T.CHANNEL_NUMBER: u16,
    T.LIFETIME: u32,
    T.XOR_PEER_ADDRESS: addresses,
    T.DATA: st.binary(max_size=300),
    T.XOR_RELAYED_ADDRESS: addresses,
    T.REQUESTED_ADDRESS_FAMILY: u8,
    T.EVEN_PORT: st.booleans(),
    T.REQUESTED_TRANSPORT: u8,
    T.DONT_FRAGMENT: st.just(True),
    T.RESERVATION_TOKEN: st.binary(min_size=8, max_size=8),
    T.ADDITIONAL_ADDRESS_FAMILY: u8,
    T.ADDRESS_ERROR_CODE: st.builds(
        AddressErrorCode, st.sampled_from([1, 2]), error_codes, text127
    ),
    T.ICMP: st.builds(Icmp, u8, u8, u32),
    T.CONNECTION_ID: u32,
    T.CHANGE_REQUEST: st.builds(ChangeRequest, st.booleans(), st.booleans()),
    T.PADDING: st.binary(max_size=64),
    T.RESPONSE_PORT: u16,
    T.RESPONSE_ORIGIN: addresses,
    T.OTHER_ADDRESS: addresses,
    T.PRIORITY: u32,
    T.USE_CANDIDATE: st.just(True),
    T.ICE_CONTROLLED: u64,
    T.ICE_CONTROLLING: u64,
    T.RESPONSE_ADDRESS: addresses,
    T.SOURCE_ADDRESS: addresses,
    T.CHANGED_ADDRESS: addresses,
    T.PASSWORD: st.binary(max_size=32),
    T.REFLECTED_FROM: addresses,
}
TRAILERS = {T.MESSAGE_INTEGRITY, T.MESSAGE_INTEGRITY_SHA256, T.FINGERPRINT}

known_attributes = st.one_of(
    *(
        st.tuples(st.just(attr_type), strategy)
        for attr_type, strategy in sorted(VALUE_STRATEGIES.items())
    )
)
unknown_attributes = st.tuples(u16.filter(lambda t: t not in CODECS), st.binary(max_size=40))
attribute_lists = st.lists(
    st.one_of(known_attributes, known_attributes, unknown_attributes), max_size=8
).map(tuple)


@st.composite
def messages(draw: st.DrawFn, classic: bool = False) -> Message:
    if classic:
        tid = draw(
            st.binary(min_size=16, max_size=16).filter(lambda t: t[:4] != MAGIC_COOKIE_BYTES)
        )
    else:
        tid = draw(st.binary(min_size=12, max_size=12))
    return Message(
        method=draw(st.integers(0, 0xFFF)),
        message_class=draw(st.sampled_from(MessageClass)),
        transaction_id=tid,
        attributes=draw(attribute_lists),
    )


keys = st.binary(min_size=1, max_size=40)
optional_keys = st.none() | keys


def test_strategies_cover_every_attribute_type() -> None:
    assert set(VALUE_STRATEGIES) == set(CODECS) - TRAILERS


@given(messages())
@settings(max_examples=400)
def test_round_trip(message: Message) -> None:
    data = message.encode()
    parsed = parse(data)
    assert parsed == message
    assert parsed.encode() == data
    assert parsed.raw == data
    assert not parsed.has_integrity
    assert not parsed.has_integrity_sha256
    assert not parsed.has_fingerprint
    expected_unknown = tuple(t for t, _ in message.attributes if t < 0x8000 and t not in CODECS)
    assert parsed.unknown_required == expected_unknown


@given(messages(classic=True))
def test_classic_round_trip(message: Message) -> None:
    parsed = parse(message.encode(), allow_classic=True)
    assert parsed == message
    assert parsed.classic


@given(messages(), optional_keys, optional_keys, st.booleans())
@settings(max_examples=200)
def test_round_trip_with_trailers(
    message: Message, key: bytes | None, sha_key: bytes | None, with_fingerprint: bool
) -> None:
    data = message.encode(
        integrity_key=key, integrity_sha256_key=sha_key, fingerprint=with_fingerprint
    )
    parsed = parse(data)
    assert parsed == message
    assert parsed.has_integrity == (key is not None)
    assert parsed.has_integrity_sha256 == (sha_key is not None)
    assert parsed.has_fingerprint == with_fingerprint
    if key is not None:
        assert verify_integrity(parsed, key)
        assert not verify_integrity(parsed, key + b"x")
    if sha_key is not None:
        assert verify_integrity_sha256(parsed, sha_key)
        assert not verify_integrity_sha256(parsed, sha_key + b"x")
    # Re-encoding the parsed message with the same trailers reproduces the bytes.
    assert (
        parsed.encode(integrity_key=key, integrity_sha256_key=sha_key, fingerprint=with_fingerprint)
        == data
    )


@given(messages(), keys, st.booleans(), st.data())
@settings(max_examples=300)
def test_any_flipped_byte_is_detected(
    message: Message, key: bytes, with_fingerprint: bool, data: st.DataObject
) -> None:
    encoded = message.encode(integrity_key=key, fingerprint=with_fingerprint)
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    mask = data.draw(st.integers(1, 0xFF), label="mask")
    corrupted = bytearray(encoded)
    corrupted[index] ^= mask
    try:
        parsed = parse(bytes(corrupted))
    except StunError:
        return
    if verify_integrity(parsed, key):
        # Only possible when the flip hit the FINGERPRINT trailer, which is not covered by
        # MESSAGE-INTEGRITY, and turned it into an (ignored, RFC 8489 §14.5) attribute of
        # another type: the fingerprint is then gone and the authenticated content intact.
        assert with_fingerprint
        assert index >= len(encoded) - 8
        assert not parsed.has_fingerprint
        assert parsed == message


@given(messages(), keys, keys, st.data())
def test_flipped_byte_with_both_integrity_attributes(
    message: Message, key: bytes, sha_key: bytes, data: st.DataObject
) -> None:
    encoded = message.encode(integrity_key=key, integrity_sha256_key=sha_key)
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    corrupted = bytearray(encoded)
    corrupted[index] ^= data.draw(st.integers(1, 0xFF), label="mask")
    try:
        parsed = parse(bytes(corrupted))
    except StunError:
        return
    assert not (verify_integrity(parsed, key) and verify_integrity_sha256(parsed, sha_key))


@given(st.binary(max_size=120), st.booleans())
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_stun_error(data: bytes, allow_classic: bool) -> None:
    with contextlib.suppress(StunError):
        parse(data, allow_classic=allow_classic)


@st.composite
def framed_bodies(draw: st.DrawFn) -> bytes:
    """A valid header around random attribute TLVs: reaches the per-attribute decoders."""
    tlvs = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(sorted(CODECS)), u16),
                st.binary(max_size=40),
                st.integers(-3, 3),
            ),
            max_size=6,
        )
    )
    body = b"".join(
        struct.pack("!HH", t, max(0, len(v) + skew)) + v + b"\x00" * (-len(v) % 4)
        for t, v, skew in tlvs
    )
    body += b"\x00" * (-len(body) % 4)
    message_type = draw(st.integers(0, 0x3FFF))
    tid = draw(st.binary(min_size=12, max_size=12))
    return struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + tid + body


@given(framed_bodies())
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_framed_random_attributes_raise_only_stun_error(data: bytes) -> None:
    try:
        parsed = parse(data)
    except StunError:
        return
    assert parse(parsed.encode()) == parsed


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    message = draw(messages())
    encoded = bytearray(
        message.encode(
            integrity_key=draw(optional_keys),
            integrity_sha256_key=draw(optional_keys),
            fingerprint=draw(st.booleans()),
        )
    )
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "length", "insert", "delete", "zero"]))
        size = len(encoded)
        if kind == "truncate":
            del encoded[draw(st.integers(0, size)) :]
        elif kind == "flip" and size:
            encoded[draw(st.integers(0, size - 1))] ^= draw(st.integers(1, 0xFF))
        elif kind == "length" and size >= 4:
            encoded[2:4] = draw(u16).to_bytes(2, "big")
        elif kind == "insert":
            at = draw(st.integers(0, size))
            encoded[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and size:
            at = draw(st.integers(0, size - 1))
            del encoded[at : at + draw(st.integers(1, 8))]
        elif kind == "zero" and size:
            at = draw(st.integers(0, size - 1))
            encoded[at] = 0
    return bytes(encoded)


@given(mutated(), st.booleans())
@settings(max_examples=500)
def test_mutated_messages_raise_only_stun_error(data: bytes, allow_classic: bool) -> None:
    try:
        parsed = parse(data, allow_classic=allow_classic)
    except StunError:
        return
    assert isinstance(parsed, Message)
    # Whatever parsed is a valid message: it re-encodes and parses back identically.
    assert parse(parsed.encode(), allow_classic=allow_classic) == parsed


@given(messages())
def test_truncations_are_errors(message: Message) -> None:
    encoded = message.encode(fingerprint=True)
    for cut in range(len(encoded)):
        try:
            parse(encoded[:cut])
        except StunError:
            continue
        raise AssertionError(f"truncation to {cut} bytes parsed")
