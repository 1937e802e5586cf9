"""Unit tests for the STUN codec: every validation error, unknown attributes, the
MESSAGE-INTEGRITY ordering rules, classic RFC 3489 messages and the low-level helpers."""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

import pytest

from relay.stun import (
    CODECS,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    AddressErrorCode,
    AttributeType,
    AttributeValue,
    ChangeRequest,
    ErrorCode,
    Icmp,
    Message,
    MessageClass,
    Method,
    PasswordAlgorithm,
    StunError,
    append_fingerprint,
    append_message_integrity,
    append_message_integrity_sha256,
    decode_message_type,
    encode_address,
    encode_attribute,
    encode_message,
    encode_message_type,
    encode_xor_address,
    fingerprint,
    long_term_key,
    looks_like_stun,
    opaque_string,
    parse,
    short_term_key,
    verify_integrity,
    verify_integrity_sha256,
)

T = AttributeType
TID = bytes(range(1, 13))
KEY = b"secret-key"


def raw(body: bytes = b"", *, message_type: int = 0x0001, tid: bytes = TID) -> bytes:
    """A header (correct length, magic cookie) followed by ``body``, unvalidated."""
    return struct.pack("!HHI", message_type, len(body), MAGIC_COOKIE) + tid + body


def tlv(attr_type: int, value: bytes, padding: bytes | None = None) -> bytes:
    pad = padding if padding is not None else b"\x00" * (-len(value) % 4)
    return struct.pack("!HH", attr_type, len(value)) + value + pad


# --- message type --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "message_class", "expected"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.INDICATION, 0x0011),
        (Method.BINDING, MessageClass.SUCCESS, 0x0101),
        (Method.BINDING, MessageClass.ERROR, 0x0111),
        (Method.ALLOCATE, MessageClass.REQUEST, 0x0003),
        (Method.ALLOCATE, MessageClass.SUCCESS, 0x0103),
        (Method.ALLOCATE, MessageClass.ERROR, 0x0113),
        (Method.SEND, MessageClass.INDICATION, 0x0016),
        (Method.DATA, MessageClass.INDICATION, 0x0017),
        (Method.CHANNEL_BIND, MessageClass.SUCCESS, 0x0109),
        (Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, 0x001C),
        (0xFFF, MessageClass.ERROR, 0x3FFF),
        (0x080, MessageClass.REQUEST, 0x0200),
    ],
)
def test_message_type_bits(method: int, message_class: MessageClass, expected: int) -> None:
    assert encode_message_type(method, message_class) == expected
    assert decode_message_type(expected) == (method, message_class)


def test_unknown_method_is_an_int_and_known_is_an_enum() -> None:
    assert type(parse(raw(message_type=encode_message_type(0x123, 0))).method) is int
    assert parse(raw(message_type=0x0103)).method is Method.ALLOCATE


# --- header validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "0 bytes, shorter than the 20-byte header"),
        (raw()[:19], "19 bytes, shorter than the 20-byte header"),
        (raw(message_type=0x4001), "top two bits of message type 0x4001 are not zero"),
        (raw(message_type=0x8001), "top two bits"),
        (raw() + b"\x00" * 4, "header length 0 does not match body of 4"),
        (raw(b"\x00" * 4)[:-1], "header length 4 does not match body of 3"),
        (raw(b"\x00\x00"), "header length 2 is not a multiple of 4"),
        (b"\x00\x01\x00\x00\x21\x12\xa4\x43" + TID, "magic cookie 0x2112a443 is not"),
    ],
)
def test_header_errors(data: bytes, match: str) -> None:
    with pytest.raises(StunError, match=match):
        parse(data)


def test_parse_accepts_bytearray_and_memoryview_and_rejects_str() -> None:
    data = raw(tlv(T.PRIORITY, b"\x00\x00\x00\x07"))
    assert parse(bytearray(data)) == parse(memoryview(data)) == parse(data)
    with pytest.raises(StunError, match="expected bytes, got str"):
        parse("not bytes")  # type: ignore[arg-type]


# --- TLV structure -------------------------------------------------------------------------


def test_attribute_overrunning_the_message() -> None:
    body = struct.pack("!HH", 0x0020, 9) + b"\x00" * 8
    with pytest.raises(
        StunError,
        match=r"attribute 0x0020 at offset 20 length 9 \(padded 12\) overruns message "
        r"\(8 bytes left\)",
    ):
        parse(raw(body))


def test_attribute_missing_its_padding() -> None:
    # USERNAME "alic" + "e": a 5-byte value needs 3 bytes of padding after it (RFC 8489
    # §14); a body holding the header and 4 value bytes only cannot contain it.
    body = struct.pack("!HH", T.USERNAME, 5) + b"alic"
    with pytest.raises(StunError, match=r"length 5 \(padded 8\) overruns message \(4 bytes left\)"):
        parse(raw(body))
    # The same attribute followed by its padding is fine.
    assert parse(raw(tlv(T.USERNAME, b"alice"))).get(T.USERNAME) == "alice"


def test_padding_content_is_ignored_on_parse() -> None:
    assert parse(raw(tlv(T.USERNAME, b"abc", b"\xff"))).get(T.USERNAME) == "abc"


# --- per-attribute value validation --------------------------------------------------------

_BAD_VALUES: list[tuple[int, bytes, str]] = [
    # addresses
    (T.MAPPED_ADDRESS, b"\x00\x01\x00", "MAPPED-ADDRESS .0x0001. at offset 20: length 3 is too"),
    (T.MAPPED_ADDRESS, b"\x00\x03\x00\x01\x01\x02\x03\x04", "unknown address family 0x03"),
    (T.MAPPED_ADDRESS, b"\x00\x01\x00\x01" + b"\x00" * 16, "IPv4 address length 20, expected 8"),
    (T.XOR_MAPPED_ADDRESS, b"\x00\x02\x00\x01\x01\x02\x03\x04", "IPv6 address length 8, expected"),
    (T.XOR_PEER_ADDRESS, b"\x00\x00\x00\x01\x01\x02\x03\x04", "unknown address family 0x00"),
    (T.ALTERNATE_SERVER, b"", "ALTERNATE-SERVER .0x8023. at offset 20: length 0 is too short"),
    # error codes (RFC 8489 §14.8: class 3..6, number 0..99)
    (T.ERROR_CODE, b"\x00\x00\x02\x00", "ERROR-CODE .0x0009. at offset 20: error class 2 is not"),
    (T.ERROR_CODE, b"\x00\x00\x07\x00", "error class 7 is not in 3..6"),
    (T.ERROR_CODE, b"\x00\x00\x04\x64", "error number 100 is not in 0..99"),
    (T.ERROR_CODE, b"\x00\x00\x04", "ERROR-CODE .0x0009. at offset 20: length 3 is shorter than 4"),
    (T.ERROR_CODE, b"\x00\x00\x04\x01\xff", "invalid utf-8 at byte 0"),
    (T.ERROR_CODE, b"\x00\x00\x04\x01" + b"x" * 128, "128 characters, max 127"),
    (T.ADDRESS_ERROR_CODE, b"\x03\x00\x04\x01", "unknown address family 0x03"),
    (T.ADDRESS_ERROR_CODE, b"\x01\x00\x01\x01", "error class 1 is not in 3..6"),
    (T.ADDRESS_ERROR_CODE, b"\x01\x00", "length 2 is shorter than 4"),
    # text (RFC 8489 §14.3, §14.9, §14.10, §14.14, §14.16)
    (T.USERNAME, b"\xc3\x28", "USERNAME .0x0006. at offset 20: invalid utf-8 at byte 0"),
    (T.USERNAME, b"u" * 509, "length 509 exceeds 508 bytes"),
    (T.REALM, b"r" * 128, "REALM .0x0014. at offset 20: 128 characters, max 127"),
    (T.NONCE, "\u00e9".encode() * 128, "128 characters, max 127"),
    (T.SOFTWARE, "\u20ac".encode() * 255, "length 765 exceeds 763 bytes"),
    (T.ALTERNATE_DOMAIN, "d\u00e9".encode(), "invalid ascii at byte 1"),
    (T.ALTERNATE_DOMAIN, b"d" * 256, "length 256 exceeds 255 bytes"),
    # fixed lengths
    (T.PRIORITY, b"\x00\x00\x01", "PRIORITY .0x0024. at offset 20: length 3, expected 4"),
    (T.LIFETIME, b"\x00" * 5, "LIFETIME .0x000d. at offset 20: length 5, expected 4"),
    (T.CONNECTION_ID, b"\x00" * 8, "length 8, expected 4"),
    (T.ICE_CONTROLLED, b"\x00" * 4, "ICE-CONTROLLED .0x8029. at offset 20: length 4, expected 8"),
    (T.ICE_CONTROLLING, b"\x00" * 9, "length 9, expected 8"),
    (T.CHANNEL_NUMBER, b"\x40\x00", "CHANNEL-NUMBER .0x000c. at offset 20: length 2, expected 4"),
    (T.RESPONSE_PORT, b"\x40\x00", "length 2, expected 4"),
    (T.REQUESTED_TRANSPORT, b"\x11", "REQUESTED-TRANSPORT .0x0019. .*length 1, expected 4"),
    (T.REQUESTED_ADDRESS_FAMILY, b"\x01\x00", "length 2, expected 4"),
    (T.ADDITIONAL_ADDRESS_FAMILY, b"\x02", "length 1, expected 4"),
    (T.CHANGE_REQUEST, b"\x06", "CHANGE-REQUEST .0x0003. at offset 20: length 1, expected 4"),
    (T.EVEN_PORT, b"\x80\x00", "EVEN-PORT .0x0018. at offset 20: length 2, expected 1"),
    (T.EVEN_PORT, b"", "length 0, expected 1"),
    (T.USE_CANDIDATE, b"\x00", "USE-CANDIDATE .0x0025. at offset 20: length 1, expected 0"),
    (T.DONT_FRAGMENT, b"\x00" * 4, "length 4, expected 0"),
    (T.RESERVATION_TOKEN, b"\x00" * 7, "RESERVATION-TOKEN .0x0022. .*length 7, expected 8"),
    (T.USERHASH, b"\x00" * 31, "USERHASH .0x001e. at offset 20: length 31, expected 32"),
    (T.ICMP, b"\x00" * 4, "ICMP .0x8004. at offset 20: length 4, expected 8"),
    (T.MESSAGE_INTEGRITY, b"\x00" * 19, "MESSAGE-INTEGRITY .0x0008. .*length 19, expected 20"),
    (T.MESSAGE_INTEGRITY_SHA256, b"\x00" * 12, "length 12 is not a multiple of 4 in 16..32"),
    (T.MESSAGE_INTEGRITY_SHA256, b"\x00" * 18, "length 18 is not a multiple of 4 in 16..32"),
    (T.MESSAGE_INTEGRITY_SHA256, b"\x00" * 36, "length 36 is not a multiple of 4 in 16..32"),
    # lists
    (T.UNKNOWN_ATTRIBUTES, b"\x00\x01\x00", "UNKNOWN-ATTRIBUTES .0x000a. .*not a multiple of 2"),
    (T.PASSWORD_ALGORITHMS, b"\x00\x01\x00", "truncated algorithm entry at value offset 0"),
    (T.PASSWORD_ALGORITHMS, b"\x00\x01\x00\x08\x00\x00", "parameters length 8 overrun"),
    (T.PASSWORD_ALGORITHM, b"\x00\x01", "PASSWORD-ALGORITHM .0x001d. .*length 2 is shorter"),
    (T.PASSWORD_ALGORITHM, b"\x00\x01\x00\x02\x00", "parameters length 2 does not match"),
]


@pytest.mark.parametrize(
    ("attr_type", "value", "match"),
    _BAD_VALUES,
    ids=[f"{T(t).name}-{i}" for i, (t, _, _) in enumerate(_BAD_VALUES)],
)
def test_invalid_attribute_value(attr_type: int, value: bytes, match: str) -> None:
    with pytest.raises(StunError, match=match):
        parse(raw(tlv(attr_type, value)))


def test_every_known_type_has_an_invalid_value_test() -> None:
    tested = {attr_type for attr_type, _, _ in _BAD_VALUES}
    # Opaque, any-length values cannot be invalid.
    unconstrained = {T.DATA, T.PADDING, T.PASSWORD}
    fingerprint_tested_elsewhere = {T.FINGERPRINT}
    missing = set(CODECS) - tested - unconstrained - fingerprint_tested_elsewhere
    address_like = {
        t for t in missing if CODECS[t].type.name.endswith(("ADDRESS", "_FROM", "ORIGIN"))
    }
    assert missing - address_like == set()  # all address types share one tested decoder


@pytest.mark.parametrize(
    ("attr_type", "value", "expected"),
    [
        (T.MAPPED_ADDRESS, b"\xff\x01\x12\x34\xc0\x00\x02\x01", ("192.0.2.1", 0x1234)),
        (T.ERROR_CODE, b"\xff\xff\xfc\x01Unauthorized", ErrorCode(401, "Unauthorized")),
        (T.ERROR_CODE, b"\x00\x00\x06\x63", ErrorCode(699, "")),
        (T.ADDRESS_ERROR_CODE, b"\x02\x00\x04\x40Nope", AddressErrorCode(2, 464, "Nope")),
        (T.CHANNEL_NUMBER, b"\x40\x01\xff\xff", 0x4001),
        (T.REQUESTED_TRANSPORT, b"\x11\x01\x02\x03", 17),
        (T.REQUESTED_ADDRESS_FAMILY, b"\x09\x00\x00\x00", 9),  # parseable so a server can 440
        (T.EVEN_PORT, b"\x7f", False),
        (T.EVEN_PORT, b"\x80", True),
        (T.CHANGE_REQUEST, b"\xff\xff\xff\xf9", ChangeRequest(change_ip=False, change_port=False)),
        (T.CHANGE_REQUEST, b"\x00\x00\x00\x06", ChangeRequest(change_ip=True, change_port=True)),
        (T.CHANGE_REQUEST, b"\x00\x00\x00\x04", ChangeRequest(change_ip=True, change_port=False)),
        (T.ICMP, b"\xff\xff\x03\x04\x00\x00\x05\xdc", Icmp(3, 4, 1500)),
        (T.UNKNOWN_ATTRIBUTES, b"\x00\x1a\x80\x00\x7f\xff", (0x001A, 0x8000, 0x7FFF)),
        (
            T.PASSWORD_ALGORITHMS,
            b"\x00\x02\x00\x00\x00\x01\x00\x01\xaa\x00\x00\x00",
            ((2, b""), (1, b"\xaa")),
        ),
        (T.PASSWORD_ALGORITHM, b"\x00\x01\x00\x01\xab\x00\x00\x00", (1, b"\xab")),
        (T.USE_CANDIDATE, b"", True),
        (T.ALTERNATE_DOMAIN, b"stun.example.net", "stun.example.net"),
        (T.USERNAME, b"u" * 508, "u" * 508),
        (T.SOFTWARE, "\u00e9".encode() * 127, "\u00e9" * 127),
        (T.MESSAGE_INTEGRITY_SHA256, b"\x01" * 16, None),  # stored as trailer, not attribute
    ],
)
def test_valid_attribute_values(attr_type: int, value: bytes, expected: object) -> None:
    message = parse(raw(tlv(attr_type, value)))
    if expected is None:
        assert message.attributes == ()
        assert message.has_integrity_sha256
    else:
        assert message.attributes == ((attr_type, expected),)
        assert type(message.attributes[0][0]) is AttributeType


# --- FINGERPRINT ---------------------------------------------------------------------------


def test_fingerprint_must_be_last() -> None:
    with_fp = append_fingerprint(raw())
    body = with_fp[HEADER_LENGTH:] + tlv(T.PRIORITY, b"\x00\x00\x00\x01")
    with pytest.raises(StunError, match="FINGERPRINT at offset 20 is not the last attribute"):
        parse(raw(body))


def test_fingerprint_wrong_length() -> None:
    with pytest.raises(StunError, match="FINGERPRINT at offset 20 length 3, expected 4"):
        parse(raw(tlv(T.FINGERPRINT, b"\x00\x00\x00")))


def test_bad_fingerprint_is_an_error() -> None:
    good = append_fingerprint(raw(tlv(T.SOFTWARE, b"x")))
    assert parse(good).has_fingerprint
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(StunError, match="FINGERPRINT at offset 28 does not match the message"):
        parse(bad)


def test_fingerprint_helper_matches_crc32() -> None:
    data = raw(tlv(T.SOFTWARE, b"abc"))
    assert fingerprint(data) == zlib.crc32(data) ^ 0x5354554E
    assert append_fingerprint(data)[-4:] == struct.pack(
        "!I", fingerprint(data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:])
    )


# --- MESSAGE-INTEGRITY ordering (RFC 8489 §14.5, §14.6) ------------------------------------


def test_attributes_after_message_integrity_are_ignored() -> None:
    signed = append_message_integrity(raw(tlv(T.USERNAME, b"bob")), KEY)
    trailing = (
        tlv(T.SOFTWARE, b"ignored")
        + tlv(0x7FFF, b"unknown required, ignored")
        + tlv(T.ERROR_CODE, b"\x00\x00\x09\x00")  # invalid but ignored: not even decoded
        + tlv(T.MESSAGE_INTEGRITY, b"\x00" * 20)  # a second MI is ignored too
    )
    message = parse(raw(signed[HEADER_LENGTH:] + trailing))
    assert message.attributes == ((T.USERNAME, "bob"),)
    assert message.unknown_required == ()
    assert verify_integrity(message, KEY)


def test_message_integrity_sha256_after_message_integrity_is_used() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, ((T.USERNAME, "bob"),))
    data = message.encode(integrity_key=KEY, integrity_sha256_key=b"k2", fingerprint=True)
    parsed = parse(data)
    assert parsed == message
    assert parsed.has_integrity
    assert parsed.has_integrity_sha256
    assert parsed.has_fingerprint
    assert verify_integrity(parsed, KEY)
    assert verify_integrity_sha256(parsed, b"k2")
    assert not verify_integrity_sha256(parsed, KEY)


def test_only_fingerprint_is_considered_after_message_integrity_sha256() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID)
    signed = message.encode(integrity_sha256_key=KEY)
    body = signed[HEADER_LENGTH:] + tlv(T.MESSAGE_INTEGRITY, b"\x00" * 20) + tlv(T.PRIORITY, b"")
    parsed = parse(append_fingerprint(raw(body)))
    assert parsed.attributes == ()
    assert not parsed.has_integrity
    assert parsed.has_fingerprint
    assert verify_integrity_sha256(parsed, KEY)


def test_verify_on_constructed_or_unsigned_message_is_false() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID)
    assert not verify_integrity(message, KEY)
    assert not verify_integrity_sha256(message, KEY)
    assert not verify_integrity(parse(message.encode()), KEY)
    assert message.raw == b""


def test_truncated_message_integrity_sha256() -> None:
    data = raw(tlv(T.REALM, b"example.org"))
    signed = append_message_integrity_sha256(data, KEY, length=16)
    assert len(signed) == len(data) + 20
    parsed = parse(signed)
    assert verify_integrity_sha256(parsed, KEY)
    assert not verify_integrity_sha256(parsed, b"other")
    with pytest.raises(StunError, match=r"length 12 not a multiple of 4 in 16\.\.32"):
        append_message_integrity_sha256(data, KEY, length=12)


# --- unknown attributes --------------------------------------------------------------------


def test_unknown_required_and_optional_attributes_are_kept() -> None:
    body = (
        tlv(0x7FFF, b"required")
        + tlv(T.USERNAME, b"u")
        + tlv(0xC001, b"optional!")
        + tlv(0x0030, b"")
        + tlv(0x7FFF, b"again")
    )
    data = raw(body)
    message = parse(data)
    assert message.unknown_required == (0x7FFF, 0x0030, 0x7FFF)
    assert message.attributes == (
        (0x7FFF, b"required"),
        (T.USERNAME, "u"),
        (0xC001, b"optional!"),
        (0x0030, b""),
        (0x7FFF, b"again"),
    )
    assert message.encode() == data  # nothing lost on re-encode
    assert 0xC001 in message
    assert 0xC002 not in message


def test_unknown_attribute_value_must_be_bytes_on_encode() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, ((0xC001, "text"),))
    with pytest.raises(StunError, match="attribute 0xc001: value of unknown type must be raw"):
        message.encode()


# --- classic RFC 3489 ----------------------------------------------------------------------


def test_classic_message() -> None:
    tid16 = bytes(range(100, 116))
    body = (
        tlv(T.MAPPED_ADDRESS, b"\x00\x01\x0d\x96\xc6\x33\x64\x07")
        + tlv(T.SOURCE_ADDRESS, b"\x00\x01\x0d\x96\x7f\x00\x00\x01")
        + tlv(T.CHANGED_ADDRESS, b"\x00\x01\x0d\x97\x7f\x00\x00\x02")
    )
    data = struct.pack("!HH", 0x0101, len(body)) + tid16 + body
    with pytest.raises(StunError, match="magic cookie 0x64656667 is not 0x2112a442"):
        parse(data)
    message = parse(data, allow_classic=True)
    assert message.classic
    assert message.transaction_id == tid16
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.SUCCESS
    assert message.get(T.MAPPED_ADDRESS) == ("198.51.100.7", 3478)
    assert message.get(T.CHANGED_ADDRESS) == ("127.0.0.2", 3479)
    assert message.encode() == data


def test_modern_message_with_allow_classic_is_not_classic() -> None:
    message = parse(raw(), allow_classic=True)
    assert not message.classic
    assert message.transaction_id == TID


def test_classic_request_with_change_request_and_response_address() -> None:
    tid16 = b"\x01" * 16
    message = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        tid16,
        (
            (T.CHANGE_REQUEST, ChangeRequest(change_ip=True, change_port=False)),
            (T.RESPONSE_ADDRESS, ("10.0.0.1", 5000)),
            (T.PASSWORD, b"pass"),
        ),
    )
    data = message.encode()
    assert data[4:20] == tid16
    assert parse(data, allow_classic=True) == message


# --- encoding ------------------------------------------------------------------------------


def test_encode_trailers_in_attributes_are_refused() -> None:
    for attr_type in (T.MESSAGE_INTEGRITY, T.MESSAGE_INTEGRITY_SHA256, T.FINGERPRINT):
        message = Message(Method.BINDING, MessageClass.REQUEST, TID, ((attr_type, b"\x00" * 20),))
        with pytest.raises(StunError, match=r"is computed by Message.encode\(\)"):
            message.encode()


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        (((T.XOR_MAPPED_ADDRESS, ("1.2.3.4", 65536)),), "port 65536 is not in 0..65535"),
        (((T.XOR_MAPPED_ADDRESS, ("1.2.3", 1)),), r"invalid IP address '1\.2\.3'"),
        (((T.MAPPED_ADDRESS, ("::g", 1)),), "invalid IP address"),
        (((T.MAPPED_ADDRESS, (1234, 1)),), "IP address must be a str, got int"),
        (((T.MAPPED_ADDRESS, "1.2.3.4:5"),), "address must be an .ip, port. tuple"),
        (((T.PRIORITY, -1),), "PRIORITY .0x0024.: value -1 does not fit in 32 unsigned bits"),
        (((T.PRIORITY, 1 << 32),), "does not fit in 32 unsigned bits"),
        (((T.PRIORITY, "1"),), "expected an int, got str"),
        (((T.CHANNEL_NUMBER, 0x10000),), "does not fit in 16 unsigned bits"),
        (((T.ICE_CONTROLLING, 1 << 64),), "does not fit in 64 unsigned bits"),
        (((T.USERNAME, b"bytes"),), "USERNAME .0x0006.: expected str, got bytes"),
        (((T.USERNAME, "u" * 509),), "length 509 exceeds 508 bytes"),
        (((T.SOFTWARE, "s" * 128),), "128 characters, max 127"),
        (((T.USERNAME, "\ud800"),), "cannot encode character 0 as utf-8"),
        (((T.ALTERNATE_DOMAIN, "caf\u00e9"),), "cannot encode character 3 as ascii"),
        (((T.ERROR_CODE, ErrorCode(299, "")),), "error code 299 is not in 300..699"),
        (((T.ERROR_CODE, ErrorCode(700, "")),), "error code 700 is not in 300..699"),
        (((T.ERROR_CODE, (400, "Bad")),), "expected ErrorCode, got tuple"),
        (((T.ADDRESS_ERROR_CODE, AddressErrorCode(3, 440, "")),), "unknown address family 3"),
        (((T.ICMP, Icmp(256, 0, 0)),), "does not fit in 8 unsigned bits"),
        (((T.CHANGE_REQUEST, 6),), "expected ChangeRequest, got int"),
        (((T.USE_CANDIDATE, None),), "flag attribute value must be True, got None"),
        (((T.EVEN_PORT, 1),), "EVEN-PORT value must be a bool"),
        (((T.RESERVATION_TOKEN, b"\x00" * 7),), "length 7, expected 8"),
        (((T.DATA, "str"),), "expected bytes, got str"),
        (((T.DATA, b"\x00" * 65536),), "value is 65536 bytes, max 65535"),
        (((T.UNKNOWN_ATTRIBUTES, [1, 2]),), "expected a tuple of ints, got list"),
        (((T.UNKNOWN_ATTRIBUTES, (1, 0x10000)),), "does not fit in 16 unsigned bits"),
        (((T.PASSWORD_ALGORITHMS, ((1, "x"),)),), "expected bytes, got str"),
        (((T.PASSWORD_ALGORITHM, (1,)),), r"password algorithm must be \(int, bytes\)"),
        (((0x10000, b""),), "attribute type 65536 does not fit in 16 bits"),
        (((T.DATA, b"\x00" * 40000), (T.PADDING, b"\x00" * 40000)), "exceeds 65532"),
    ],
)
def test_encode_errors(attributes: tuple[tuple[int, AttributeValue], ...], match: str) -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TID, attributes)
    with pytest.raises(StunError, match=match):
        message.encode()


def test_encode_header_errors() -> None:
    with pytest.raises(StunError, match="transaction id is 11 bytes, expected 12"):
        Message(Method.BINDING, MessageClass.REQUEST, TID[:11]).encode()
    with pytest.raises(StunError, match="method 0x1000 does not fit in 12 bits"):
        Message(0x1000, MessageClass.REQUEST, TID).encode()
    with pytest.raises(StunError, match=r"message class 4 is not in 0\.\.3"):
        Message(1, 4, TID).encode()  # type: ignore[arg-type]
    with pytest.raises(StunError, match="integrity key must be bytes, got str"):
        Message(1, MessageClass.REQUEST, TID).encode(integrity_key="key")  # type: ignore[arg-type]
    with pytest.raises(StunError, match=r"attribute must be an \(int, value\) pair"):
        Message(1, MessageClass.REQUEST, TID, ((1, 2, 3),)).encode()  # type: ignore[arg-type]


def test_encode_is_bytes_and_header() -> None:
    message = Message(Method.ALLOCATE, MessageClass.REQUEST, TID, ((T.REQUESTED_TRANSPORT, 17),))
    data = bytes(message)
    assert data == message.encode()
    assert data == b"\x00\x03\x00\x08\x21\x12\xa4\x42" + TID + b"\x00\x19\x00\x04\x11\x00\x00\x00"


def test_trailing_length_fields_cover_each_trailer() -> None:
    message = Message(Method.BINDING, MessageClass.SUCCESS, TID)
    data = message.encode(integrity_key=KEY, fingerprint=True)
    assert len(data) == 20 + 24 + 8
    assert data[2:4] == b"\x00\x20"
    # RFC 8489 §14.5: the HMAC is computed with the length pointing at the end of MI.
    covered = data[:2] + b"\x00\x18" + data[4:20]
    assert data[24:44] == hmac.digest(KEY, covered, "sha1")


# --- low-level helpers ---------------------------------------------------------------------


def test_encode_attribute_pads_with_zeros() -> None:
    assert encode_attribute(0x8022, b"abcde") == b"\x80\x22\x00\x05abcde\x00\x00\x00"
    assert encode_attribute(0x0025, b"") == b"\x00\x25\x00\x00"
    assert encode_attribute(0x0024, b"1234") == b"\x00\x24\x00\x041234"


def test_encode_xor_address_matches_rfc5769_and_message_encoding() -> None:
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert encode_xor_address("192.0.2.1", 32853, tid) == bytes.fromhex("0001a147e112a643")
    assert encode_xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, tid) == (
        bytes.fromhex("0002a1470113a9faa5d3f179bc25f4b5bed2b9d9")
    )
    assert encode_address("192.0.2.1", 32853) == bytes.fromhex("00018055c0000201")
    value = encode_xor_address("10.1.2.3", 4000, tid)
    fast = encode_message(
        Method.BINDING,
        MessageClass.SUCCESS,
        tid,
        encode_attribute(T.XOR_MAPPED_ADDRESS, value),
        fingerprint=True,
    )
    slow = Message(
        Method.BINDING, MessageClass.SUCCESS, tid, ((T.XOR_MAPPED_ADDRESS, ("10.1.2.3", 4000)),)
    ).encode(fingerprint=True)
    assert fast == slow


def test_ipv6_zone_index_is_dropped() -> None:
    message = Message(
        Method.BINDING, MessageClass.SUCCESS, TID, ((T.XOR_MAPPED_ADDRESS, ("fe80::1%eth0", 9)),)
    )
    assert parse(message.encode()).get(T.XOR_MAPPED_ADDRESS) == ("fe80::1", 9)


def test_encode_message_rejects_unaligned_attributes() -> None:
    with pytest.raises(StunError, match="attributes are 3 bytes, not a multiple of 4"):
        encode_message(1, 0, TID, b"abc")


def test_keys() -> None:
    assert short_term_key("VOkJxbRl1RmTxUk/WvJxBt") == b"VOkJxbRl1RmTxUk/WvJxBt"
    assert long_term_key("user", "realm", "pass") == hashlib.md5(b"user:realm:pass").digest()
    assert (
        long_term_key("user", "realm", "pass", PasswordAlgorithm.SHA256)
        == hashlib.sha256(b"user:realm:pass").digest()
    )
    with pytest.raises(StunError, match="unknown password algorithm 3"):
        long_term_key("u", "r", "p", 3)  # type: ignore[arg-type]
    assert opaque_string("a\u00a0b\u3000c") == "a b c"  # non-ASCII spaces -> U+0020
    assert opaque_string("e\u0301") == "\u00e9"  # NFC


def test_looks_like_stun() -> None:
    assert looks_like_stun(raw())
    assert looks_like_stun(raw(tlv(T.PRIORITY, b"\x00" * 4)))
    assert not looks_like_stun(raw()[:19])
    assert not looks_like_stun(b"\x80" + raw()[1:])  # RTP
    assert not looks_like_stun(raw() + b"\x00")
    assert not looks_like_stun(b"\x00\x01\x00\x00" + b"\x00" * 16)


def test_accessors() -> None:
    message = Message(
        Method.CREATE_PERMISSION,
        MessageClass.REQUEST,
        TID,
        (
            (T.XOR_PEER_ADDRESS, ("10.0.0.1", 0)),
            (T.XOR_PEER_ADDRESS, ("::1", 0)),
            (T.USERNAME, "u"),
        ),
    )
    assert message.get(T.XOR_PEER_ADDRESS) == ("10.0.0.1", 0)
    assert message.get_all(T.XOR_PEER_ADDRESS) == (("10.0.0.1", 0), ("::1", 0))
    assert message.get(T.REALM) is None
    assert message.get_all(T.REALM) == ()
    assert T.USERNAME in message
    assert T.REALM not in message
    assert "raw" not in repr(message)
    parsed = parse(message.encode())
    assert parsed == message
    assert hash(parsed) == hash(message)
    assert parsed.raw == message.encode()
