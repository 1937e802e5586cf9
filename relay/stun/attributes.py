"""Typed attribute values and the table of (decoder, encoder) per attribute type.

Python representation of each known attribute value (the ``AttributeValue`` union):

=================================================  ==========================================
attribute                                          value
=================================================  ==========================================
MAPPED-ADDRESS, ALTERNATE-SERVER, RESPONSE-ORIGIN,  ``tuple[str, int]`` (ip, port); the XOR-*
OTHER-ADDRESS, RESPONSE-ADDRESS, SOURCE-ADDRESS,    variants are XOR-ed with the magic cookie and
CHANGED-ADDRESS, REFLECTED-FROM, XOR-MAPPED-,       transaction id by the codec (RFC 8489 §14.2)
XOR-PEER-, XOR-RELAYED-ADDRESS
USERNAME, REALM, NONCE, SOFTWARE, ALTERNATE-DOMAIN  ``str`` (length limits checked both ways)
ERROR-CODE                                          :class:`ErrorCode`
ADDRESS-ERROR-CODE                                  :class:`AddressErrorCode`
ICMP                                                :class:`Icmp`
CHANGE-REQUEST                                      :class:`ChangeRequest`
UNKNOWN-ATTRIBUTES                                  ``tuple[int, ...]``
PASSWORD-ALGORITHMS                                 ``tuple[tuple[int, bytes], ...]``
PASSWORD-ALGORITHM                                  ``tuple[int, bytes]`` (algorithm, parameters)
PRIORITY, LIFETIME, CONNECTION-ID, CHANNEL-NUMBER,  ``int``
RESPONSE-PORT, REQUESTED-TRANSPORT (protocol),
REQUESTED-/ADDITIONAL-ADDRESS-FAMILY,
ICE-CONTROLLED/-CONTROLLING (tie-breaker)
EVEN-PORT                                           ``bool`` (the R bit)
USE-CANDIDATE, DONT-FRAGMENT                        ``True`` (empty "flag" attributes: the value
                                                    is always ``True``; absence is "not set")
DATA, PADDING, PASSWORD, USERHASH (32 bytes),       ``bytes``
RESERVATION-TOKEN (8 bytes), MESSAGE-INTEGRITY
(20 bytes), MESSAGE-INTEGRITY-SHA256 (16..32)
unknown types                                       ``bytes``, the raw value (kept as is)
=================================================  ==========================================

Reserved / RFFU bits are written as zero and ignored on reception, as the RFCs require.
CHANNEL-NUMBER, REQUESTED-ADDRESS-FAMILY and REQUESTED-TRANSPORT are *not* range-checked
beyond their field width: a server must be able to parse them to answer 400/440/442.

Every decoder has the signature ``(value, xor_pad) -> AttributeValue`` and every encoder
``(value, xor_pad) -> bytes``, where ``xor_pad`` is the 16 bytes of header after the
length field (magic cookie + transaction id); only the XOR-address codecs use it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct
from typing import Final, NamedTuple, TypeAlias

from .constants import MAGIC_COOKIE_BYTES, AttributeType
from .errors import StunError

__all__ = [
    "CODECS",
    "Address",
    "AddressErrorCode",
    "AttributeCodec",
    "AttributeValue",
    "ChangeRequest",
    "ErrorCode",
    "Icmp",
    "decode_address",
    "decode_xor_address",
    "encode_address",
    "encode_attribute",
    "encode_xor_address",
    "xor_pad",
]

Address: TypeAlias = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """ERROR-CODE (RFC 8489 §14.8): ``code`` is 300..699, ``reason`` < 128 characters."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AddressErrorCode:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12): an ERROR-CODE for one address family."""

    family: int
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """CHANGE-REQUEST (RFC 5780 §7.2): flags A (change IP) and B (change port)."""

    change_ip: bool = False
    change_port: bool = False


@dataclass(frozen=True, slots=True)
class Icmp:
    """ICMP (RFC 8656 §18.13): type, code and 32-bit error data of a dropped packet."""

    icmp_type: int
    icmp_code: int
    error_data: int = 0


AttributeValue: TypeAlias = (
    Address
    | str
    | int
    | bool
    | bytes
    | ErrorCode
    | AddressErrorCode
    | ChangeRequest
    | Icmp
    | tuple[int, ...]
    | tuple[int, bytes]
    | tuple[tuple[int, bytes], ...]
)

Decoder: TypeAlias = Callable[[bytes, bytes], AttributeValue]
Encoder: TypeAlias = Callable[[object, bytes], bytes]


class AttributeCodec(NamedTuple):
    """One row of :data:`CODECS`."""

    type: AttributeType
    decode: Decoder
    encode: Encoder


_U8_PAD = Struct("!B3x")
_U16_PAD = Struct("!H2x")
_U32 = Struct("!I")
_U64 = Struct("!Q")
_TL = Struct("!HH")
_ADDR_HDR = Struct("!xBH")  # reserved, family, port
_ERR_HDR = Struct("!2xBB")  # 21 reserved bits + 3 class bits, number
_AERR_HDR = Struct("!BxBB")  # family, reserved + class, number
_ICMP = Struct("!2xBBI")
_PADDING: Final = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")

_FAMILY_IPV4: Final = 0x01
_FAMILY_IPV6: Final = 0x02
_MAX_ATTRIBUTE_LENGTH: Final = 0xFFFF
# RFC 8489 §14.3: USERNAME "MUST contain a UTF-8-encoded sequence of fewer than 509 bytes".
_USERNAME_MAX_BYTES: Final = 508
# RFC 8489 §14.8/§14.9/§14.10/§14.14: reason phrase, REALM, NONCE and SOFTWARE "MUST be
# fewer than 128 characters (which can be as long as 509 bytes when encoding them and as
# long as 763 bytes when decoding them)".
_TEXT_MAX_CHARS: Final = 127
_TEXT_MAX_BYTES: Final = 763
# RFC 8489 §14.16: ALTERNATE-DOMAIN is an ASCII DNS name of at most 255 characters.
_DOMAIN_MAX_BYTES: Final = 255


def _padded(length: int) -> int:
    return (length + 3) & ~3


def xor_pad(transaction_id: bytes) -> bytes:
    """The 16 bytes XOR-ed into XOR-*-ADDRESS values: cookie + 96-bit transaction id.

    A 16-byte (RFC 3489) transaction id is used as is, so that a message without the magic
    cookie still has a well-defined XOR mask (header bytes 4..20).
    """
    if len(transaction_id) == 12:
        return MAGIC_COOKIE_BYTES + transaction_id
    if len(transaction_id) == 16:
        return bytes(transaction_id)
    raise StunError(f"transaction id is {len(transaction_id)} bytes, expected 12 (or 16)")


def encode_attribute(attr_type: int, value: bytes) -> bytes:
    """One attribute TLV: type, length, value and zero padding to a 4-byte boundary."""
    length = len(value)
    if length > _MAX_ATTRIBUTE_LENGTH:
        raise StunError(f"attribute 0x{attr_type:04x} value is {length} bytes, max 65535")
    if not 0 <= attr_type <= 0xFFFF:
        raise StunError(f"attribute type {attr_type} does not fit in 16 bits")
    return _TL.pack(attr_type, length) + value + _PADDING[length & 3]


# --- helpers -------------------------------------------------------------------------------


def _expect_length(value: bytes, expected: int) -> None:
    if len(value) != expected:
        raise StunError(f"length {len(value)}, expected {expected}")


def _check_int(value: object, bits: int) -> int:
    if not isinstance(value, int):
        raise StunError(f"expected an int, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise StunError(f"value {value} does not fit in {bits} unsigned bits")
    return value


def _check_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise StunError(f"expected bytes, got {type(value).__name__}")


def _check_error_code(code: object) -> tuple[int, int]:
    code = _check_int(code, 16)
    error_class, number = divmod(code, 100)
    if not 3 <= error_class <= 6:
        raise StunError(f"error code {code} is not in 300..699")
    return error_class, number


def _decode_error_fields(error_class: int, number: int) -> int:
    # RFC 8489 §14.8: class 3..6, number 0..99.
    if not 3 <= error_class <= 6:
        raise StunError(f"error class {error_class} is not in 3..6")
    if number > 99:
        raise StunError(f"error number {number} is not in 0..99")
    return error_class * 100 + number


def _decode_text(data: bytes, max_chars: int, max_bytes: int, encoding: str = "utf-8") -> str:
    if len(data) > max_bytes:
        raise StunError(f"length {len(data)} exceeds {max_bytes} bytes")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise StunError(f"invalid {encoding} at byte {exc.start}") from None
    if len(text) > max_chars:
        raise StunError(f"{len(text)} characters, max {max_chars}")
    return text


def _encode_text(value: object, max_chars: int, max_bytes: int, encoding: str = "utf-8") -> bytes:
    if not isinstance(value, str):
        raise StunError(f"expected str, got {type(value).__name__}")
    try:
        data = value.encode(encoding)
    except UnicodeEncodeError as exc:
        raise StunError(f"cannot encode character {exc.start} as {encoding}") from None
    if len(data) > max_bytes:
        raise StunError(f"length {len(data)} exceeds {max_bytes} bytes")
    if len(value) > max_chars:
        raise StunError(f"{len(value)} characters, max {max_chars}")
    return data


def _pack_ip(ip: object) -> tuple[int, bytes]:
    if not isinstance(ip, str):
        raise StunError(f"IP address must be a str, got {type(ip).__name__}")
    try:
        if ":" in ip:
            # A zone index ("fe80::1%eth0", as sockets report link-local peers) has no
            # wire representation: it is dropped.
            return _FAMILY_IPV6, socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
        return _FAMILY_IPV4, socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        raise StunError(f"invalid IP address {ip!r}") from None


def _check_address(value: object) -> tuple[int, bytes, int]:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise StunError(f"address must be an (ip, port) tuple, got {value!r}")
    family, packed = _pack_ip(value[0])
    port = value[1]
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise StunError(f"port {port!r} is not in 0..65535")
    return family, packed, port


# --- addresses (RFC 8489 §14.1, §14.2) -----------------------------------------------------


def encode_address(ip: str, port: int) -> bytes:
    """MAPPED-ADDRESS style value (family, port, address)."""
    family, packed, port = _check_address((ip, port))
    return _ADDR_HDR.pack(family, port) + packed


def encode_xor_address(ip: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS style value for ``(ip, port)``; hot-path helper for servers.

    ``transaction_id`` is the 12-byte id of the message the attribute goes into.
    """
    return _encode_xor(_check_address((ip, port)), xor_pad(transaction_id))


def _encode_xor(checked: tuple[int, bytes, int], pad: bytes) -> bytes:
    family, packed, port = checked
    # RFC 8489 §14.2: X-Port is the port XOR the 16 most significant bits of the cookie,
    # X-Address the address XOR the cookie (IPv4) or cookie || transaction id (IPv6).
    port ^= (pad[0] << 8) | pad[1]
    size = len(packed)
    mask = int.from_bytes(pad[:size], "big")
    xored = (int.from_bytes(packed, "big") ^ mask).to_bytes(size, "big")
    return _ADDR_HDR.pack(family, port) + xored


def _split_address(value: bytes) -> tuple[socket.AddressFamily, int, bytes]:
    """Validate a MAPPED-ADDRESS style value: (socket family, port, packed address)."""
    length = len(value)
    if length < 4:
        raise StunError(f"length {length} is too short for an address")
    # value[0] is reserved: ignored on reception (RFC 8489 §14.1).
    family = value[1]
    if family == _FAMILY_IPV4:
        if length != 8:
            raise StunError(f"IPv4 address length {length}, expected 8")
        return socket.AF_INET, (value[2] << 8) | value[3], value[4:8]
    if family == _FAMILY_IPV6:
        if length != 20:
            raise StunError(f"IPv6 address length {length}, expected 20")
        return socket.AF_INET6, (value[2] << 8) | value[3], value[4:20]
    raise StunError(f"unknown address family 0x{family:02x}")


def decode_address(value: bytes, pad: bytes = b"") -> Address:
    """Decode a MAPPED-ADDRESS style value (``pad`` is unused, for the table signature)."""
    family, port, packed = _split_address(value)
    return socket.inet_ntop(family, packed), port


def decode_xor_address(value: bytes, pad: bytes) -> Address:
    """Decode an XOR-MAPPED-ADDRESS style value, given the 16-byte :func:`xor_pad`."""
    family, port, packed = _split_address(value)
    size = len(packed)
    raw = (int.from_bytes(packed, "big") ^ int.from_bytes(pad[:size], "big")).to_bytes(size, "big")
    return socket.inet_ntop(family, raw), port ^ ((pad[0] << 8) | pad[1])


def _encode_plain_address(value: object, pad: bytes) -> bytes:
    family, packed, port = _check_address(value)
    return _ADDR_HDR.pack(family, port) + packed


def _encode_xor_address(value: object, pad: bytes) -> bytes:
    return _encode_xor(_check_address(value), pad)


# --- text ----------------------------------------------------------------------------------


def _text_codec(max_chars: int, max_bytes: int, encoding: str = "utf-8") -> tuple[Decoder, Encoder]:
    def decode(value: bytes, pad: bytes) -> str:
        return _decode_text(value, max_chars, max_bytes, encoding)

    def encode(value: object, pad: bytes) -> bytes:
        return _encode_text(value, max_chars, max_bytes, encoding)

    return decode, encode


_decode_username, _encode_username = _text_codec(_USERNAME_MAX_BYTES, _USERNAME_MAX_BYTES)
_decode_text127, _encode_text127 = _text_codec(_TEXT_MAX_CHARS, _TEXT_MAX_BYTES)
_decode_domain, _encode_domain = _text_codec(_DOMAIN_MAX_BYTES, _DOMAIN_MAX_BYTES, "ascii")


# --- integers and flags --------------------------------------------------------------------


def _decode_u32(value: bytes, pad: bytes) -> int:
    _expect_length(value, 4)
    result: int = _U32.unpack(value)[0]
    return result


def _encode_u32(value: object, pad: bytes) -> bytes:
    return _U32.pack(_check_int(value, 32))


def _decode_u64(value: bytes, pad: bytes) -> int:
    _expect_length(value, 8)
    result: int = _U64.unpack(value)[0]
    return result


def _encode_u64(value: object, pad: bytes) -> bytes:
    return _U64.pack(_check_int(value, 64))


def _decode_u16_pad(value: bytes, pad: bytes) -> int:
    # 16-bit value followed by 16 RFFU bits (CHANNEL-NUMBER, RESPONSE-PORT).
    _expect_length(value, 4)
    result: int = _U16_PAD.unpack(value)[0]
    return result


def _encode_u16_pad(value: object, pad: bytes) -> bytes:
    return _U16_PAD.pack(_check_int(value, 16))


def _decode_u8_pad(value: bytes, pad: bytes) -> int:
    # 8-bit value followed by 24 RFFU bits (REQUESTED-TRANSPORT, *-ADDRESS-FAMILY).
    _expect_length(value, 4)
    result: int = _U8_PAD.unpack(value)[0]
    return result


def _encode_u8_pad(value: object, pad: bytes) -> bytes:
    return _U8_PAD.pack(_check_int(value, 8))


def _decode_flag(value: bytes, pad: bytes) -> bool:
    _expect_length(value, 0)
    return True


def _encode_flag(value: object, pad: bytes) -> bytes:
    if value is not True:
        raise StunError(f"flag attribute value must be True, got {value!r}")
    return b""


def _decode_even_port(value: bytes, pad: bytes) -> bool:
    # RFC 8656 §18.7: one byte, R bit then 7 RFFU bits.
    _expect_length(value, 1)
    return bool(value[0] & 0x80)


def _encode_even_port(value: object, pad: bytes) -> bytes:
    if not isinstance(value, bool):
        raise StunError(f"EVEN-PORT value must be a bool, got {value!r}")
    return b"\x80" if value else b"\x00"


def _decode_change_request(value: bytes, pad: bytes) -> ChangeRequest:
    # RFC 5780 §7.2: 32 bits, A (0x4) = change IP, B (0x2) = change port.
    _expect_length(value, 4)
    flags = value[3]
    return ChangeRequest(change_ip=bool(flags & 0x04), change_port=bool(flags & 0x02))


def _encode_change_request(value: object, pad: bytes) -> bytes:
    if not isinstance(value, ChangeRequest):
        raise StunError(f"expected ChangeRequest, got {type(value).__name__}")
    return _U32.pack((0x04 if value.change_ip else 0) | (0x02 if value.change_port else 0))


# --- opaque bytes --------------------------------------------------------------------------


def _decode_bytes(value: bytes, pad: bytes) -> bytes:
    return value


def _encode_bytes(value: object, pad: bytes) -> bytes:
    return _check_bytes(value)


def _fixed_bytes_codec(size: int) -> tuple[Decoder, Encoder]:
    def decode(value: bytes, pad: bytes) -> bytes:
        _expect_length(value, size)
        return value

    def encode(value: object, pad: bytes) -> bytes:
        data = _check_bytes(value)
        _expect_length(data, size)
        return data

    return decode, encode


_decode_bytes8, _encode_bytes8 = _fixed_bytes_codec(8)
_decode_bytes20, _encode_bytes20 = _fixed_bytes_codec(20)
_decode_bytes32, _encode_bytes32 = _fixed_bytes_codec(32)


def _decode_mi_sha256(value: bytes, pad: bytes) -> bytes:
    # RFC 8489 §14.6: at most 32 bytes, at least 16, a multiple of 4 (truncated HMAC).
    length = len(value)
    if not (16 <= length <= 32 and length % 4 == 0):
        raise StunError(f"length {length} is not a multiple of 4 in 16..32")
    return value


# --- structured values ---------------------------------------------------------------------


def _decode_error_code(value: bytes, pad: bytes) -> ErrorCode:
    if len(value) < 4:
        raise StunError(f"length {len(value)} is shorter than 4")
    error_class, number = _ERR_HDR.unpack_from(value)
    code = _decode_error_fields(error_class & 0x07, number)
    return ErrorCode(code, _decode_text(value[4:], _TEXT_MAX_CHARS, _TEXT_MAX_BYTES))


def _encode_error_code(value: object, pad: bytes) -> bytes:
    if not isinstance(value, ErrorCode):
        raise StunError(f"expected ErrorCode, got {type(value).__name__}")
    error_class, number = _check_error_code(value.code)
    reason = _encode_text(value.reason, _TEXT_MAX_CHARS, _TEXT_MAX_BYTES)
    return _ERR_HDR.pack(error_class, number) + reason


def _decode_address_error_code(value: bytes, pad: bytes) -> AddressErrorCode:
    if len(value) < 4:
        raise StunError(f"length {len(value)} is shorter than 4")
    family, error_class, number = _AERR_HDR.unpack_from(value)
    if family not in (_FAMILY_IPV4, _FAMILY_IPV6):
        raise StunError(f"unknown address family 0x{family:02x}")
    code = _decode_error_fields(error_class & 0x07, number)
    reason = _decode_text(value[4:], _TEXT_MAX_CHARS, _TEXT_MAX_BYTES)
    return AddressErrorCode(family, code, reason)


def _encode_address_error_code(value: object, pad: bytes) -> bytes:
    if not isinstance(value, AddressErrorCode):
        raise StunError(f"expected AddressErrorCode, got {type(value).__name__}")
    if value.family not in (_FAMILY_IPV4, _FAMILY_IPV6):
        raise StunError(f"unknown address family {value.family!r}")
    error_class, number = _check_error_code(value.code)
    reason = _encode_text(value.reason, _TEXT_MAX_CHARS, _TEXT_MAX_BYTES)
    return _AERR_HDR.pack(value.family, error_class, number) + reason


def _decode_icmp(value: bytes, pad: bytes) -> Icmp:
    # RFC 8656 §18.13: 16 reserved bits, ICMP type, ICMP code, 32-bit error data. (The
    # RFC's bit diagram is ambiguous about the type/code widths; like deployed servers we
    # read one byte each.)
    _expect_length(value, 8)
    icmp_type, icmp_code, error_data = _ICMP.unpack(value)
    return Icmp(icmp_type, icmp_code, error_data)


def _encode_icmp(value: object, pad: bytes) -> bytes:
    if not isinstance(value, Icmp):
        raise StunError(f"expected Icmp, got {type(value).__name__}")
    return _ICMP.pack(
        _check_int(value.icmp_type, 8),
        _check_int(value.icmp_code, 8),
        _check_int(value.error_data, 32),
    )


def _decode_unknown_attributes(value: bytes, pad: bytes) -> tuple[int, ...]:
    # RFC 8489 §14.13: a list of 16-bit attribute types.
    if len(value) % 2:
        raise StunError(f"length {len(value)} is not a multiple of 2")
    return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))


def _encode_unknown_attributes(value: object, pad: bytes) -> bytes:
    if not isinstance(value, tuple):
        raise StunError(f"expected a tuple of ints, got {type(value).__name__}")
    return b"".join(_check_int(item, 16).to_bytes(2, "big") for item in value)


def _check_algorithm(item: object) -> tuple[int, bytes]:
    if not (isinstance(item, tuple) and len(item) == 2):
        raise StunError(f"password algorithm must be (int, bytes), got {item!r}")
    return _check_int(item[0], 16), _check_bytes(item[1])


def _decode_password_algorithms(value: bytes, pad: bytes) -> tuple[tuple[int, bytes], ...]:
    # RFC 8489 §14.11: repeated (algorithm, parameters length, parameters padded to 4).
    result: list[tuple[int, bytes]] = []
    pos, end = 0, len(value)
    while pos < end:
        if end - pos < 4:
            raise StunError(f"truncated algorithm entry at value offset {pos}")
        algorithm, length = _TL.unpack_from(value, pos)
        start = pos + 4
        pos = start + _padded(length)
        if pos > end:
            raise StunError(f"algorithm parameters length {length} overrun the value")
        result.append((algorithm, value[start : start + length]))
    return tuple(result)


def _encode_password_algorithms(value: object, pad: bytes) -> bytes:
    if not isinstance(value, tuple):
        raise StunError(f"expected a tuple of (int, bytes), got {type(value).__name__}")
    parts: list[bytes] = []
    for item in value:
        algorithm, params = _check_algorithm(item)
        parts.append(encode_attribute(algorithm, params))  # same TLV-with-padding layout
    return b"".join(parts)


def _decode_password_algorithm(value: bytes, pad: bytes) -> tuple[int, bytes]:
    # RFC 8489 §14.12: algorithm, parameters length, parameters (padding is the
    # attribute's own; a value carrying the padding inside is accepted too).
    if len(value) < 4:
        raise StunError(f"length {len(value)} is shorter than 4")
    algorithm, length = _TL.unpack_from(value)
    if len(value) - 4 not in (length, _padded(length)):
        raise StunError(f"parameters length {length} does not match value length {len(value)}")
    return algorithm, value[4 : 4 + length]


def _encode_password_algorithm(value: object, pad: bytes) -> bytes:
    algorithm, params = _check_algorithm(value)
    if len(params) > _MAX_ATTRIBUTE_LENGTH - 4:
        raise StunError(f"parameters are {len(params)} bytes, too long")
    return _TL.pack(algorithm, len(params)) + params


def _reject_encode(value: object, pad: bytes) -> bytes:
    raise StunError("is computed by Message.encode(); do not put it in attributes")


A = AttributeType
_TABLE: Final[tuple[tuple[AttributeType, Decoder, Encoder], ...]] = (
    # RFC 8489
    (A.MAPPED_ADDRESS, decode_address, _encode_plain_address),
    (A.XOR_MAPPED_ADDRESS, decode_xor_address, _encode_xor_address),
    (A.USERNAME, _decode_username, _encode_username),
    (A.USERHASH, _decode_bytes32, _encode_bytes32),
    (A.MESSAGE_INTEGRITY, _decode_bytes20, _reject_encode),
    (A.MESSAGE_INTEGRITY_SHA256, _decode_mi_sha256, _reject_encode),
    (A.FINGERPRINT, _decode_u32, _reject_encode),
    (A.ERROR_CODE, _decode_error_code, _encode_error_code),
    (A.REALM, _decode_text127, _encode_text127),
    (A.NONCE, _decode_text127, _encode_text127),
    (A.PASSWORD_ALGORITHMS, _decode_password_algorithms, _encode_password_algorithms),
    (A.PASSWORD_ALGORITHM, _decode_password_algorithm, _encode_password_algorithm),
    (A.UNKNOWN_ATTRIBUTES, _decode_unknown_attributes, _encode_unknown_attributes),
    (A.SOFTWARE, _decode_text127, _encode_text127),
    (A.ALTERNATE_SERVER, decode_address, _encode_plain_address),
    (A.ALTERNATE_DOMAIN, _decode_domain, _encode_domain),
    # RFC 8656 (TURN)
    (A.CHANNEL_NUMBER, _decode_u16_pad, _encode_u16_pad),
    (A.LIFETIME, _decode_u32, _encode_u32),
    (A.XOR_PEER_ADDRESS, decode_xor_address, _encode_xor_address),
    (A.DATA, _decode_bytes, _encode_bytes),
    (A.XOR_RELAYED_ADDRESS, decode_xor_address, _encode_xor_address),
    (A.REQUESTED_ADDRESS_FAMILY, _decode_u8_pad, _encode_u8_pad),
    (A.EVEN_PORT, _decode_even_port, _encode_even_port),
    (A.REQUESTED_TRANSPORT, _decode_u8_pad, _encode_u8_pad),
    (A.DONT_FRAGMENT, _decode_flag, _encode_flag),
    (A.RESERVATION_TOKEN, _decode_bytes8, _encode_bytes8),
    (A.ADDITIONAL_ADDRESS_FAMILY, _decode_u8_pad, _encode_u8_pad),
    (A.ADDRESS_ERROR_CODE, _decode_address_error_code, _encode_address_error_code),
    (A.ICMP, _decode_icmp, _encode_icmp),
    # RFC 6062 (TURN TCP)
    (A.CONNECTION_ID, _decode_u32, _encode_u32),
    # RFC 5780 (NAT behaviour discovery)
    (A.CHANGE_REQUEST, _decode_change_request, _encode_change_request),
    (A.PADDING, _decode_bytes, _encode_bytes),
    (A.RESPONSE_PORT, _decode_u16_pad, _encode_u16_pad),
    (A.RESPONSE_ORIGIN, decode_address, _encode_plain_address),
    (A.OTHER_ADDRESS, decode_address, _encode_plain_address),
    # RFC 8445 (ICE)
    (A.PRIORITY, _decode_u32, _encode_u32),
    (A.USE_CANDIDATE, _decode_flag, _encode_flag),
    (A.ICE_CONTROLLED, _decode_u64, _encode_u64),
    (A.ICE_CONTROLLING, _decode_u64, _encode_u64),
    # RFC 3489 (classic STUN)
    (A.RESPONSE_ADDRESS, decode_address, _encode_plain_address),
    (A.SOURCE_ADDRESS, decode_address, _encode_plain_address),
    (A.CHANGED_ADDRESS, decode_address, _encode_plain_address),
    (A.PASSWORD, _decode_bytes, _encode_bytes),
    (A.REFLECTED_FROM, decode_address, _encode_plain_address),
)
del A

#: AttributeType -> (type, decoder, encoder). Types absent from it are "unknown".
CODECS: Final[dict[int, AttributeCodec]] = {
    attr_type: AttributeCodec(attr_type, decode, encode) for attr_type, decode, encode in _TABLE
}
