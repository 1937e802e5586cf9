"""Golden tests: RFC 5769 test vectors and RFC 8489 Appendix B.1.

The RFC 5769 §2.1-§2.3 vectors pad SOFTWARE/USERNAME with 0x20 spaces, whereas RFC 8489
§14 makes our encoder pad with zeros. Those padding bytes are covered by
MESSAGE-INTEGRITY and FINGERPRINT, so our re-encoding cannot be byte-identical to the
vector. The comparison is kept honest as follows: (1) the vectors' own MAC and CRC verify
with our code; (2) our encoding of the parsed message, *before* the trailers, equals the
vector's prefix once its padding bytes are normalised to zero; (3) putting the vector's
0x20 padding back into our prefix and running the very functions ``encode()`` uses to
append MESSAGE-INTEGRITY and FINGERPRINT reproduces the vector byte for byte; (4)
``encode()`` is exactly those functions applied to the zero-padded prefix. §2.4 and
RFC 8489 B.1 use zero padding and are compared directly against ``encode()``.
"""

from __future__ import annotations

import hashlib

import pytest

from relay.stun import (
    HEADER_LENGTH,
    AttributeType,
    Message,
    MessageClass,
    Method,
    PasswordAlgorithm,
    StunError,
    append_fingerprint,
    append_message_integrity,
    long_term_key,
    parse,
    short_term_key,
    userhash,
    verify_integrity,
    verify_integrity_sha256,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1 Sample Request (short-term credentials).
SAMPLE_REQUEST = _hex(
    """
    00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
    00 24 00 04  6e 00 01 ff
    80 29 00 08  93 2f f9 b1  51 26 3b 36
    00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
    00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
    80 28 00 04  e5 7a 3b cf
    """
)
# RFC 5769 §2.2 Sample IPv4 Response.
SAMPLE_IPV4_RESPONSE = _hex(
    """
    01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 08  00 01 a1 47  e1 12 a6 43
    00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
    80 28 00 04  c0 7d 4c 96
    """
)
# RFC 5769 §2.3 Sample IPv6 Response.
SAMPLE_IPV6_RESPONSE = _hex(
    """
    01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
    80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
    00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
    00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
    80 28 00 04  c8 fb 0b 4c
    """
)
# RFC 5769 §2.4 Sample Request with Long-Term Authentication.
SAMPLE_LONG_TERM_REQUEST = _hex(
    """
    00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
    00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46
                 53 54 76 79  36 34 73 41
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66
    """
)
# RFC 8489 Appendix B.1 as corrected by erratum 6268 (the published text has a wrong
# NONCE length): USERHASH, NONCE, REALM, PASSWORD-ALGORITHM (SHA-256) and
# MESSAGE-INTEGRITY-SHA256. That USERHASH and the HMAC below verify proves the bytes.
RFC8489_B1_REQUEST = _hex(
    """
    00 01 00 90  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
    00 1e 00 20  4a 3c f3 8f  ef 69 92 bd  a9 52 c6 78  04 17 da 0f
                 24 81 94 15  56 9e 60 b2  05 c4 6e 41  40 7f 17 04
    00 15 00 29  6f 62 4d 61  74 4a 6f 73  32 41 41 41  43 66 2f 2f  34 39 39 6b
                 39 35 34 64  36 4f 4c 33  34 6f 4c 39  46 53 54 76  79 36 34 73
                 41 00 00 00
    00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
    00 1d 00 04  00 02 00 00
    00 1c 00 20  b5 c7 bf 00  5b 6c 52 a2  1c 51 c5 e8  92 f8 19 24
                 13 62 96 cb  92 7c 43 14  93 09 27 8c  c6 51 8e 65
    """
)

SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = _hex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
LONG_TERM_TRANSACTION_ID = _hex("78 ad 34 33 c6 ad 72 c0 29 da 41 2e")
MATRIX_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "マトリックス"
MATRIX_REALM = "example.org"
MATRIX_PASSWORD = "TheMatrIX"  # SASLprep("The\u00adM\u00aatr\u2168"), see RFC 5769 §2.4


def _trailer_offset(vector: bytes) -> int:
    """Offset of the MESSAGE-INTEGRITY header in an RFC 5769 vector (MI + FP at the end)."""
    return len(vector) - 24 - 8


def _check_reencoding(vector: bytes, message: Message, space_padding: list[int]) -> None:
    """Steps (2)-(4) of the module docstring, for a vector with 0x20 padding bytes."""
    key = short_term_key(SHORT_TERM_PASSWORD)
    prefix = message.encode()
    mi_offset = _trailer_offset(vector)
    assert len(prefix) == mi_offset

    expected_prefix = bytearray(vector[:mi_offset])
    expected_prefix[2:4] = (mi_offset - HEADER_LENGTH).to_bytes(2, "big")
    for index in space_padding:
        assert expected_prefix[index] == 0x20
        expected_prefix[index] = 0
    assert prefix == bytes(expected_prefix)  # (2)

    with_spaces = bytearray(prefix)
    for index in space_padding:
        with_spaces[index] = 0x20
    rebuilt = append_fingerprint(append_message_integrity(bytes(with_spaces), key))
    assert rebuilt == vector  # (3)

    encoded = message.encode(integrity_key=key, fingerprint=True)
    assert encoded == append_fingerprint(append_message_integrity(prefix, key))  # (4)
    reparsed = parse(encoded)
    assert reparsed == message
    assert verify_integrity(reparsed, key)
    assert reparsed.has_fingerprint


def test_rfc5769_sample_request() -> None:
    message = parse(SAMPLE_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.REQUEST
    assert message.transaction_id == TRANSACTION_ID
    assert not message.classic
    assert message.attributes == (
        (AttributeType.SOFTWARE, "STUN test client"),
        (AttributeType.PRIORITY, 0x6E0001FF),
        (AttributeType.ICE_CONTROLLED, 0x932FF9B151263B36),
        (AttributeType.USERNAME, "evtj:h6vY"),
    )
    assert message.get(AttributeType.USERNAME) == "evtj:h6vY"
    assert message.has_integrity
    assert not message.has_integrity_sha256
    assert message.has_fingerprint
    assert message.unknown_required == ()
    assert verify_integrity(message, short_term_key(SHORT_TERM_PASSWORD))
    assert not verify_integrity(message, b"VOkJxbRl1RmTxUk/WvJxBu")
    assert not verify_integrity_sha256(message, short_term_key(SHORT_TERM_PASSWORD))
    # USERNAME "evtj:h6vY" (9 bytes) is padded with 3 spaces at offsets 73..75.
    _check_reencoding(SAMPLE_REQUEST, message, [73, 74, 75])


def test_rfc5769_sample_ipv4_response() -> None:
    message = parse(SAMPLE_IPV4_RESPONSE)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.SUCCESS
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes == (
        (AttributeType.SOFTWARE, "test vector"),
        (AttributeType.XOR_MAPPED_ADDRESS, ("192.0.2.1", 32853)),
    )
    assert verify_integrity(message, short_term_key(SHORT_TERM_PASSWORD))
    assert message.has_fingerprint
    # SOFTWARE "test vector" (11 bytes) has one space of padding at offset 35.
    _check_reencoding(SAMPLE_IPV4_RESPONSE, message, [35])


def test_rfc5769_sample_ipv6_response() -> None:
    message = parse(SAMPLE_IPV6_RESPONSE)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.SUCCESS
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes == (
        (AttributeType.SOFTWARE, "test vector"),
        (AttributeType.XOR_MAPPED_ADDRESS, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    )
    assert verify_integrity(message, short_term_key(SHORT_TERM_PASSWORD))
    assert message.has_fingerprint
    _check_reencoding(SAMPLE_IPV6_RESPONSE, message, [35])


def test_rfc5769_long_term_request() -> None:
    message = parse(SAMPLE_LONG_TERM_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.REQUEST
    assert message.transaction_id == LONG_TERM_TRANSACTION_ID
    assert message.attributes == (
        (AttributeType.USERNAME, MATRIX_USERNAME),
        (AttributeType.NONCE, "f//499k954d6OL34oL9FSTvy64sA"),
        (AttributeType.REALM, MATRIX_REALM),
    )
    assert message.has_integrity
    assert not message.has_fingerprint
    key = long_term_key(MATRIX_USERNAME, MATRIX_REALM, MATRIX_PASSWORD)
    assert key == hashlib.md5(f"{MATRIX_USERNAME}:example.org:TheMatrIX".encode()).digest()
    assert verify_integrity(message, key)
    assert not verify_integrity(message, long_term_key(MATRIX_USERNAME, MATRIX_REALM, "x"))
    # Zero padding in this vector: encode() must reproduce it exactly.
    assert message.encode(integrity_key=key) == SAMPLE_LONG_TERM_REQUEST


def test_long_term_key_does_not_apply_saslprep() -> None:
    """Documented limitation: the un-prepared RFC 5769 §2.4 password is not mapped."""
    unprepared = "The\u00adM\u00aatr\u2168"
    key = long_term_key(MATRIX_USERNAME, MATRIX_REALM, unprepared)
    assert not verify_integrity(parse(SAMPLE_LONG_TERM_REQUEST), key)


def test_rfc8489_b1_sha256_request() -> None:
    message = parse(RFC8489_B1_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class == MessageClass.REQUEST
    assert message.transaction_id == LONG_TERM_TRANSACTION_ID
    assert message.attributes == (
        (AttributeType.USERHASH, userhash(MATRIX_USERNAME, MATRIX_REALM)),
        (AttributeType.NONCE, "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
        (AttributeType.REALM, MATRIX_REALM),
        (AttributeType.PASSWORD_ALGORITHM, (PasswordAlgorithm.SHA256, b"")),
    )
    assert message.has_integrity_sha256
    assert not message.has_integrity
    key = long_term_key(MATRIX_USERNAME, MATRIX_REALM, MATRIX_PASSWORD, PasswordAlgorithm.SHA256)
    assert verify_integrity_sha256(message, key)
    assert not verify_integrity(message, key)
    assert not verify_integrity_sha256(message, key[:-1] + b"\x00")
    assert message.encode(integrity_sha256_key=key) == RFC8489_B1_REQUEST


@pytest.mark.parametrize(
    "vector", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE], ids=["req", "v4", "v6"]
)
def test_rfc5769_corrupted_fingerprint_is_rejected(vector: bytes) -> None:
    corrupted = vector[:-1] + bytes([vector[-1] ^ 0x01])
    with pytest.raises(StunError, match=r"FINGERPRINT at offset \d+ does not match"):
        parse(corrupted)


@pytest.mark.parametrize(
    "vector", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_LONG_TERM_REQUEST], ids=str
)
def test_rfc5769_corrupted_integrity_fails_verification(vector: bytes) -> None:
    offset = len(vector) - 8 if vector is not SAMPLE_LONG_TERM_REQUEST else len(vector)
    corrupted = bytearray(vector)
    corrupted[offset - 1] ^= 0x80  # last MAC byte
    key = (
        long_term_key(MATRIX_USERNAME, MATRIX_REALM, MATRIX_PASSWORD)
        if vector is SAMPLE_LONG_TERM_REQUEST
        else short_term_key(SHORT_TERM_PASSWORD)
    )
    # Recompute the FINGERPRINT so the message still parses and only the MAC is wrong.
    data = bytes(corrupted)
    if vector is not SAMPLE_LONG_TERM_REQUEST:
        unfingerprinted = data[:-8]
        unfingerprinted = (
            unfingerprinted[:2]
            + (len(unfingerprinted) - HEADER_LENGTH).to_bytes(2, "big")
            + unfingerprinted[4:]
        )
        data = append_fingerprint(unfingerprinted)
    message = parse(data)
    assert message.has_integrity
    assert not verify_integrity(message, key)
