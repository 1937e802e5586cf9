"""STUN numbers: header constants, message classes, methods and attribute types.

References: RFC 8489 (STUN), RFC 8656 (TURN), RFC 6062 (TURN-TCP), RFC 5780 (NAT
behaviour discovery), RFC 8445 (ICE) and RFC 3489 (classic STUN).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = [
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "MAGIC_COOKIE_BYTES",
    "MAX_BODY_LENGTH",
    "AttributeType",
    "MessageClass",
    "Method",
    "PasswordAlgorithm",
]

#: RFC 8489 §5: fixed value of header bytes 4..8.
MAGIC_COOKIE: Final = 0x2112A442
MAGIC_COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
#: RFC 8489 §5: type (2) + length (2) + cookie (4) + transaction id (12).
HEADER_LENGTH: Final = 20
#: RFC 8489 §14.7: the CRC-32 of the message is XOR-ed with this ("STUN").
FINGERPRINT_XOR: Final = 0x5354554E
#: The 16-bit length field must be a multiple of 4 (RFC 8489 §5).
MAX_BODY_LENGTH: Final = 0xFFFC


class MessageClass(IntEnum):
    """The two class bits C1C0 of the message type (RFC 8489 §5)."""

    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Method(IntEnum):
    """Known 12-bit methods (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class PasswordAlgorithm(IntEnum):
    """PASSWORD-ALGORITHM numbers (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


class AttributeType(IntEnum):
    """Attribute types known to the codec.

    Types below 0x8000 are comprehension-required, the others comprehension-optional
    (RFC 8489 §14).
    """

    # RFC 8489 §18.3.1 (comprehension-required)
    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489
    CHANGE_REQUEST = 0x0003  # RFC 5780 §7
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    PASSWORD = 0x0007  # RFC 3489
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REFLECTED_FROM = 0x000B  # RFC 3489
    CHANNEL_NUMBER = 0x000C  # RFC 8656 §18.1
    LIFETIME = 0x000D  # RFC 8656 §18.2
    XOR_PEER_ADDRESS = 0x0012  # RFC 8656 §18.3
    DATA = 0x0013  # RFC 8656 §18.4
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016  # RFC 8656 §18.5
    REQUESTED_ADDRESS_FAMILY = 0x0017  # RFC 8656 §18.6
    EVEN_PORT = 0x0018  # RFC 8656 §18.7
    REQUESTED_TRANSPORT = 0x0019  # RFC 8656 §18.8
    DONT_FRAGMENT = 0x001A  # RFC 8656 §18.9
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022  # RFC 8656 §18.10
    PRIORITY = 0x0024  # RFC 8445 §16.1
    USE_CANDIDATE = 0x0025  # RFC 8445 §16.1
    PADDING = 0x0026  # RFC 5780 §7
    RESPONSE_PORT = 0x0027  # RFC 5780 §7
    CONNECTION_ID = 0x002A  # RFC 6062 §6.2
    # RFC 8489 §18.3.2 (comprehension-optional)
    ADDITIONAL_ADDRESS_FAMILY = 0x8000  # RFC 8656 §18.11
    ADDRESS_ERROR_CODE = 0x8001  # RFC 8656 §18.12
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004  # RFC 8656 §18.13
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029  # RFC 8445 §16.1
    ICE_CONTROLLING = 0x802A  # RFC 8445 §16.1
    RESPONSE_ORIGIN = 0x802B  # RFC 5780 §7
    OTHER_ADDRESS = 0x802C  # RFC 5780 §7
