"""The STUN message: an immutable value, a strict parser and an encoder.

Representation of the security trailers
---------------------------------------
MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are *not* kept in
``Message.attributes``: they are properties of one encoding, not of the message. The
encoder adds them (``encode(integrity_key=..., integrity_sha256_key=..., fingerprint=...)``,
always in that order, RFC 8489 §14.5-§14.7) and refuses them in ``attributes``. The parser
verifies FINGERPRINT, and records the raw datagram and the offsets of the integrity
attributes in fields that take no part in equality (``raw``, ``has_integrity``,
``has_integrity_sha256``, ``has_fingerprint``), so that :func:`verify_integrity` and
:func:`verify_integrity_sha256` can check them against the exact bytes received. Hence:

* ``parse(m.encode(**any_trailers)) == m`` for any message ``m`` that encodes, and
* ``parse(parse(x).encode(**t)) == parse(x)`` for any ``x`` that parses, where the
  attributes RFC 8489 §14.5/§14.6 tells a receiver to ignore (those after
  MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and after
  MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT) are dropped by the first parse.

Attributes of unknown types are kept, in wire order, as ``(type, raw value bytes)`` and
re-encoded unchanged. Known types are reported as :class:`AttributeType` members, known
methods as :class:`Method` members (both compare equal to plain ints).

Classic RFC 3489 messages (no magic cookie) are parsed only with ``allow_classic=True``;
their ``transaction_id`` is the whole 16-byte field and ``Message.classic`` is true.
Encoding a message with a 16-byte transaction id produces such a message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from struct import Struct
from typing import Final, Literal, TypeAlias, overload

from .attributes import (
    CODECS,
    Address,
    AddressErrorCode,
    AttributeValue,
    ChangeRequest,
    ErrorCode,
    Icmp,
    encode_attribute,
    xor_pad,
)
from .constants import (
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    MAX_BODY_LENGTH,
    AttributeType,
    MessageClass,
    Method,
)
from .errors import StunError
from .integrity import (
    append_fingerprint,
    append_message_integrity,
    append_message_integrity_sha256,
    check_fingerprint,
    check_message_integrity,
    check_message_integrity_sha256,
)

__all__ = [
    "Attributes",
    "Message",
    "decode_message_type",
    "encode_message",
    "encode_message_type",
    "looks_like_stun",
    "parse",
    "verify_integrity",
    "verify_integrity_sha256",
]

#: ``(type, value)`` pairs in wire order. Values are typed ``object`` so that callers can
#: build messages freely (``encode()`` validates each value against its type's codec and
#: raises StunError); messages from :func:`parse` only ever hold ``AttributeValue``s, which
#: is what the typed overloads of :meth:`Message.get` promise.
Attributes: TypeAlias = tuple[tuple[int, object], ...]

_HEADER = Struct("!HHI")
_HEADER_OUT = Struct("!HH")
_TL = Struct("!HH")

_MI: Final = int(AttributeType.MESSAGE_INTEGRITY)
_MI_SHA256: Final = int(AttributeType.MESSAGE_INTEGRITY_SHA256)
_FINGERPRINT: Final = int(AttributeType.FINGERPRINT)
_TRAILERS: Final = frozenset((_MI, _MI_SHA256, _FINGERPRINT))
_CLASSES: Final = tuple(MessageClass)
_METHODS: Final[dict[int, int]] = {int(m): m for m in Method}
_ABSENT: Final = -1

A = AttributeType
_AddressType: TypeAlias = Literal[
    A.MAPPED_ADDRESS,
    A.XOR_MAPPED_ADDRESS,
    A.ALTERNATE_SERVER,
    A.XOR_PEER_ADDRESS,
    A.XOR_RELAYED_ADDRESS,
    A.RESPONSE_ORIGIN,
    A.OTHER_ADDRESS,
    A.RESPONSE_ADDRESS,
    A.SOURCE_ADDRESS,
    A.CHANGED_ADDRESS,
    A.REFLECTED_FROM,
]
_StrType: TypeAlias = Literal[A.USERNAME, A.REALM, A.NONCE, A.SOFTWARE, A.ALTERNATE_DOMAIN]
_IntType: TypeAlias = Literal[
    A.PRIORITY,
    A.LIFETIME,
    A.CHANNEL_NUMBER,
    A.REQUESTED_TRANSPORT,
    A.REQUESTED_ADDRESS_FAMILY,
    A.ADDITIONAL_ADDRESS_FAMILY,
    A.CONNECTION_ID,
    A.RESPONSE_PORT,
    A.ICE_CONTROLLED,
    A.ICE_CONTROLLING,
]
_BoolType: TypeAlias = Literal[A.EVEN_PORT, A.USE_CANDIDATE, A.DONT_FRAGMENT]
_BytesType: TypeAlias = Literal[A.USERHASH, A.DATA, A.RESERVATION_TOKEN, A.PADDING, A.PASSWORD]
del A


def encode_message_type(method: int, message_class: int) -> int:
    """RFC 8489 §5: interleave the 12 method bits M11..M0 with the class bits C1 C0."""
    if not 0 <= method <= 0xFFF:
        raise StunError(f"method 0x{method:x} does not fit in 12 bits")
    if not 0 <= message_class <= 3:
        raise StunError(f"message class {message_class} is not in 0..3")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 1) << 4)
        | ((message_class & 2) << 7)
    )


def decode_message_type(message_type: int) -> tuple[int, MessageClass]:
    """Inverse of :func:`encode_message_type` (top two bits must already be zero)."""
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    message_class = ((message_type >> 4) & 1) | ((message_type >> 7) & 2)
    return _METHODS.get(method, method), _CLASSES[message_class]


def looks_like_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 8489 §6.3, RFC 7983): zero top bits, cookie, length."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 0x40
        and data[4:8] == MAGIC_COOKIE_BYTES
        and ((data[2] << 8) | data[3]) == len(data) - HEADER_LENGTH
        and not data[3] & 3
    )


def encode_message(
    method: int,
    message_class: int,
    transaction_id: bytes,
    attributes: bytes = b"",
    *,
    integrity_key: bytes | None = None,
    integrity_sha256_key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """Header + already encoded attribute TLVs (see ``encode_attribute``) + trailers.

    This is the allocation-light path for servers that build responses without a
    :class:`Message`; :meth:`Message.encode` uses it too.
    """
    if len(attributes) % 4:
        raise StunError(f"attributes are {len(attributes)} bytes, not a multiple of 4")
    if len(attributes) > MAX_BODY_LENGTH:
        raise StunError(f"message body of {len(attributes)} bytes exceeds {MAX_BODY_LENGTH}")
    if not isinstance(method, int) or not isinstance(message_class, int):
        raise StunError(f"method and class must be ints, got {method!r}, {message_class!r}")
    if not isinstance(transaction_id, bytes):
        raise StunError(f"transaction id must be bytes, got {type(transaction_id).__name__}")
    message_type = encode_message_type(method, message_class)
    pad = xor_pad(transaction_id)
    data = b"".join((_HEADER_OUT.pack(message_type, len(attributes)), pad, attributes))
    if integrity_key is not None:
        data = append_message_integrity(data, _key(integrity_key))
    if integrity_sha256_key is not None:
        data = append_message_integrity_sha256(data, _key(integrity_sha256_key))
    if fingerprint:
        data = append_fingerprint(data)
    return data


def _key(key: object) -> bytes:
    if isinstance(key, bytes | bytearray):
        return bytes(key)
    raise StunError(f"integrity key must be bytes, got {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class Message:
    """An immutable STUN message; see the module docstring for the trailer rules."""

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: Attributes = ()
    # Filled by parse(); excluded from equality and repr.
    _raw: bytes = field(default=b"", compare=False, repr=False)
    _integrity_offset: int = field(default=_ABSENT, compare=False, repr=False)
    _integrity_sha256_offset: int = field(default=_ABSENT, compare=False, repr=False)
    _fingerprint_offset: int = field(default=_ABSENT, compare=False, repr=False)

    # --- access ----------------------------------------------------------------------

    @overload
    def get(self, attr_type: _AddressType) -> Address | None: ...
    @overload
    def get(self, attr_type: _StrType) -> str | None: ...
    @overload
    def get(self, attr_type: _IntType) -> int | None: ...
    @overload
    def get(self, attr_type: _BoolType) -> bool | None: ...
    @overload
    def get(self, attr_type: _BytesType) -> bytes | None: ...
    @overload
    def get(self, attr_type: Literal[AttributeType.ERROR_CODE]) -> ErrorCode | None: ...
    @overload
    def get(
        self, attr_type: Literal[AttributeType.ADDRESS_ERROR_CODE]
    ) -> AddressErrorCode | None: ...
    @overload
    def get(self, attr_type: Literal[AttributeType.ICMP]) -> Icmp | None: ...
    @overload
    def get(self, attr_type: Literal[AttributeType.CHANGE_REQUEST]) -> ChangeRequest | None: ...
    @overload
    def get(
        self, attr_type: Literal[AttributeType.UNKNOWN_ATTRIBUTES]
    ) -> tuple[int, ...] | None: ...
    @overload
    def get(
        self, attr_type: Literal[AttributeType.PASSWORD_ALGORITHMS]
    ) -> tuple[tuple[int, bytes], ...] | None: ...
    @overload
    def get(
        self, attr_type: Literal[AttributeType.PASSWORD_ALGORITHM]
    ) -> tuple[int, bytes] | None: ...
    @overload
    def get(self, attr_type: int) -> AttributeValue | None: ...

    def get(self, attr_type: int) -> object:
        """The value of the first attribute of this type, or None."""
        for key, value in self.attributes:
            if key == attr_type:
                return value
        return None

    @overload
    def get_all(self, attr_type: _AddressType) -> tuple[Address, ...]: ...
    @overload
    def get_all(self, attr_type: int) -> tuple[object, ...]: ...

    def get_all(self, attr_type: int) -> tuple[object, ...]:
        """All values of this type in wire order (e.g. several XOR-PEER-ADDRESS)."""
        return tuple(value for key, value in self.attributes if key == attr_type)

    def __contains__(self, attr_type: object) -> bool:
        return any(key == attr_type for key, _ in self.attributes)

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (16-byte transaction id, no magic cookie)."""
        return len(self.transaction_id) == 16

    @property
    def unknown_required(self) -> tuple[int, ...]:
        """Unknown comprehension-required types (< 0x8000), for a 420 response."""
        return tuple(key for key, _ in self.attributes if key < 0x8000 and key not in CODECS)

    @property
    def raw(self) -> bytes:
        """The datagram this message was parsed from (b"" if built locally)."""
        return self._raw

    @property
    def has_integrity(self) -> bool:
        return self._integrity_offset != _ABSENT

    @property
    def has_integrity_sha256(self) -> bool:
        return self._integrity_sha256_offset != _ABSENT

    @property
    def has_fingerprint(self) -> bool:
        """A FINGERPRINT was present (parse() has verified it)."""
        return self._fingerprint_offset != _ABSENT

    # --- encoding --------------------------------------------------------------------

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """Wire bytes, with MESSAGE-INTEGRITY / -SHA256 / FINGERPRINT appended on request."""
        if not isinstance(self.transaction_id, bytes):
            raise StunError(f"transaction id must be bytes, got {self.transaction_id!r}")
        pad = xor_pad(self.transaction_id)
        parts: list[bytes] = []
        for item in self.attributes:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int)):
                raise StunError(f"attribute must be an (int, value) pair, got {item!r}")
            attr_type, value = item
            codec = CODECS.get(attr_type)
            try:
                if codec is None:
                    if not isinstance(value, bytes):
                        raise StunError(
                            f"value of unknown type must be raw bytes, got {type(value).__name__}"
                        )
                    parts.append(encode_attribute(attr_type, value))
                else:
                    parts.append(encode_attribute(attr_type, codec.encode(value, pad)))
            except StunError as exc:
                raise StunError(f"{_name(attr_type)}: {exc}") from None
            except (TypeError, ValueError, OverflowError, struct.error) as exc:
                raise StunError(f"{_name(attr_type)}: cannot encode {value!r}: {exc}") from None
        return encode_message(
            self.method,
            self.message_class,
            self.transaction_id,
            b"".join(parts),
            integrity_key=integrity_key,
            integrity_sha256_key=integrity_sha256_key,
            fingerprint=fingerprint,
        )

    def __bytes__(self) -> bytes:
        return self.encode()


def _name(attr_type: int) -> str:
    codec = CODECS.get(attr_type)
    if codec is None:
        return f"attribute 0x{attr_type:04x}"
    return f"{codec.type.name.replace('_', '-')} (0x{attr_type:04x})"


def parse(data: bytes | bytearray | memoryview, *, allow_classic: bool = False) -> Message:
    """Parse and validate one STUN message; raises only :class:`StunError`.

    FINGERPRINT, when present, must be last and correct. MESSAGE-INTEGRITY(-SHA256) is
    located but not checked: call :func:`verify_integrity` with the right key.
    Unknown comprehension-required attributes do not raise: see
    :attr:`Message.unknown_required`.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise StunError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunError(f"message is {size} bytes, shorter than the 20-byte header")
    message_type, length, cookie = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise StunError(f"top two bits of message type 0x{message_type:04x} are not zero")
    if length != size - HEADER_LENGTH:
        raise StunError(f"header length {length} does not match body of {size - HEADER_LENGTH}")
    if length & 3:
        raise StunError(f"header length {length} is not a multiple of 4")
    if cookie == MAGIC_COOKIE:
        transaction_id = data[8:20]
    elif allow_classic:
        transaction_id = data[4:20]
    else:
        raise StunError(f"magic cookie 0x{cookie:08x} is not 0x{MAGIC_COOKIE:08x}")
    pad = data[4:20]
    method, message_class = decode_message_type(message_type)

    attributes: list[tuple[int, object]] = []
    integrity_offset = integrity_sha256_offset = fingerprint_offset = _ABSENT
    pos = HEADER_LENGTH
    while pos < size:
        # The body length is a multiple of 4 and so is every padded TLV, hence >= 4 bytes.
        if fingerprint_offset != _ABSENT:
            raise StunError(f"FINGERPRINT at offset {fingerprint_offset} is not the last attribute")
        attr_type, attr_length = _TL.unpack_from(data, pos)
        start = pos + 4
        end = start + attr_length
        next_pos = (end + 3) & ~3
        if next_pos > size:
            raise StunError(
                f"attribute 0x{attr_type:04x} at offset {pos} length {attr_length} "
                f"(padded {next_pos - start}) overruns message ({size - start} bytes left)"
            )
        if attr_type == _FINGERPRINT:
            # RFC 8489 §14.7: last attribute, CRC-32 of everything before it.
            if attr_length != 4:
                raise StunError(f"FINGERPRINT at offset {pos} length {attr_length}, expected 4")
            if next_pos != size:
                raise StunError(f"FINGERPRINT at offset {pos} is not the last attribute")
            if not check_fingerprint(data, pos):
                raise StunError(f"FINGERPRINT at offset {pos} does not match the message")
            fingerprint_offset = pos
        elif integrity_sha256_offset != _ABSENT:
            pass  # RFC 8489 §14.6: only FINGERPRINT may follow MESSAGE-INTEGRITY-SHA256.
        elif attr_type == _MI_SHA256:
            _decode(attr_type, data[start:end], pad, pos)
            integrity_sha256_offset = pos
        elif integrity_offset != _ABSENT:
            pass  # RFC 8489 §14.5: ignore what follows MESSAGE-INTEGRITY but the above.
        elif attr_type == _MI:
            _decode(attr_type, data[start:end], pad, pos)
            integrity_offset = pos
        else:
            codec = CODECS.get(attr_type)
            value = data[start:end]
            if codec is None:
                attributes.append((attr_type, value))
            else:
                attributes.append((codec.type, _decode(attr_type, value, pad, pos)))
        pos = next_pos

    return Message(
        method,
        message_class,
        transaction_id,
        tuple(attributes),
        data,
        integrity_offset,
        integrity_sha256_offset,
        fingerprint_offset,
    )


def _decode(attr_type: int, value: bytes, pad: bytes, pos: int) -> AttributeValue:
    try:
        return CODECS[attr_type].decode(value, pad)
    except StunError as exc:
        raise StunError(f"{_name(attr_type)} at offset {pos}: {exc}") from None
    except (ValueError, OSError, struct.error) as exc:  # defensive: decoders raise StunError
        raise StunError(f"{_name(attr_type)} at offset {pos}: {exc}") from None


def verify_integrity(message: Message, key: bytes) -> bool:
    """True if the parsed message has a MESSAGE-INTEGRITY that verifies with ``key``."""
    if message._integrity_offset == _ABSENT:
        return False
    return check_message_integrity(message._raw, message._integrity_offset, key)


def verify_integrity_sha256(message: Message, key: bytes) -> bool:
    """True if the parsed message has a MESSAGE-INTEGRITY-SHA256 valid for ``key``."""
    if message._integrity_sha256_offset == _ABSENT:
        return False
    return check_message_integrity_sha256(message._raw, message._integrity_sha256_offset, key)
