"""The STUN messages netcheck sends and reads: a thin layer over ``aioice.stun``.

aioice encodes the header, CHANGE-REQUEST and FINGERPRINT and decodes responses; this
module adds what it lacks for RFC 5780 (RESPONSE-PORT, RFC 5780 §7.5, which aioice's
attribute table does not know) and what a client must check before trusting a datagram
(RFC 8489 §6.3: the two leading zero bits and the magic cookie; aioice checks neither),
and turns every failure into ``None``: ``parse`` never raises on network input.

``aioice`` is imported on first use: its package import pulls in its whole ICE agent
(~0.2 s), and everything that imports ``client_sdk`` (the rendezvous server among them,
for ``client_sdk.identity``) would pay for it.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import struct
from dataclasses import dataclass

Address = tuple[str, int]

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = 12
# RFC 5780 §7.2: CHANGE-REQUEST flags.
CHANGE_IP = 0x4
CHANGE_PORT = 0x2
# RFC 5780 §7.5: RESPONSE-PORT, a 16-bit port and 2 bytes of padding.
RESPONSE_PORT = 0x0027
FINGERPRINT = 0x8028


class Kind(enum.Enum):
    """The class of a Binding message (RFC 8489 §5); indications are never returned."""

    REQUEST = "request"
    SUCCESS = "success"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StunMessage:
    """What netcheck reads from a Binding message."""

    kind: Kind
    transaction_id: bytes
    mapped: Address | None = None  # XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS
    response_origin: Address | None = None  # RFC 5780 §7.3
    other_address: Address | None = None  # RFC 5780 §7.4
    error_code: int | None = None


def new_transaction_id() -> bytes:
    """96 random bits (RFC 8489 §5: uniformly random, from a cryptographic source)."""
    return os.urandom(TRANSACTION_ID_LENGTH)


def binding_request(
    transaction_id: bytes,
    *,
    change_ip: bool = False,
    change_port: bool = False,
    response_port: int | None = None,
) -> bytes:
    """A Binding request with FINGERPRINT, and CHANGE-REQUEST / RESPONSE-PORT if asked."""
    from aioice import stun as codec

    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise ValueError(f"a transaction id is 12 bytes, got {len(transaction_id)}")
    message = codec.Message(codec.Method.BINDING, codec.Class.REQUEST, transaction_id)
    if change_ip or change_port:
        message.attributes["CHANGE-REQUEST"] = (CHANGE_IP if change_ip else 0) | (
            CHANGE_PORT if change_port else 0
        )
    data = bytes(message)
    if response_port is not None:
        if not 0 < response_port < 65536:
            raise ValueError(f"RESPONSE-PORT must be 1-65535, got {response_port}")
        data += struct.pack("!HHHH", RESPONSE_PORT, 4, response_port, 0)
    # FINGERPRINT last (RFC 8489 §14.7): aioice's CRC over the message with its length
    # already counting the FINGERPRINT attribute, which the header then says too.
    crc = codec.message_fingerprint(data)
    data = data[:2] + struct.pack("!H", len(data) - HEADER_LENGTH + 8) + data[4:]
    return data + struct.pack("!HHI", FINGERPRINT, 4, crc)


def _address(value: object) -> Address | None:
    """An (ip, port) aioice decoded, checked: attributes come from the network."""
    if not (isinstance(value, tuple) and len(value) == 2):
        return None
    host, port = value
    if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port < 65536:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, port


def parse(data: bytes) -> StunMessage | None:
    """The Binding message in ``data``, or ``None`` for anything else: not STUN, a classic
    RFC 3489 message (no magic cookie), another method, an indication, a malformed
    attribute or a FINGERPRINT that does not match. Never raises."""
    from aioice import stun as codec

    if len(data) < HEADER_LENGTH or data[0] & 0xC0 or data[4:8] != MAGIC_COOKIE:
        return None
    try:
        message = codec.parse_message(data)
    except (ValueError, struct.error, IndexError):
        # aioice raises ValueError (and UnicodeDecodeError, a ValueError) for malformed
        # messages, and struct.error for attributes shorter than their type needs.
        return None
    if message.message_method != codec.Method.BINDING:
        return None
    kinds = {
        codec.Class.REQUEST: Kind.REQUEST,
        codec.Class.RESPONSE: Kind.SUCCESS,
        codec.Class.ERROR: Kind.ERROR,
    }
    kind = kinds.get(message.message_class)
    if kind is None:  # an indication: nothing netcheck waits for
        return None
    attributes = message.attributes
    mapped = _address(attributes.get("XOR-MAPPED-ADDRESS")) or _address(
        attributes.get("MAPPED-ADDRESS")
    )
    error = attributes.get("ERROR-CODE")
    error_code = error[0] if isinstance(error, tuple) and isinstance(error[0], int) else None
    if kind is Kind.ERROR and error_code is None:
        error_code = 0  # an error response without a readable ERROR-CODE is still an error
    return StunMessage(
        kind=kind,
        transaction_id=bytes(message.transaction_id),
        mapped=mapped,
        response_origin=_address(attributes.get("RESPONSE-ORIGIN")),
        other_address=_address(attributes.get("OTHER-ADDRESS")),
        error_code=error_code,
    )
