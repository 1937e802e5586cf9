"""Sans-IO STUN codec (RFC 8489) with TURN (RFC 8656, RFC 6062), RFC 5780, ICE (RFC 8445)
and classic RFC 3489 attributes.

Typical use::

    from relay.stun import AttributeType, Message, MessageClass, Method, parse

    request = parse(datagram)                      # raises StunError only
    if request.unknown_required: ...               # answer 420 with UNKNOWN-ATTRIBUTES
    response = Message(
        Method.BINDING,
        MessageClass.SUCCESS,
        request.transaction_id,
        ((AttributeType.XOR_MAPPED_ADDRESS, addr),),
    )
    wire = response.encode(fingerprint=True)

See :mod:`relay.stun.message` for how MESSAGE-INTEGRITY and FINGERPRINT are represented,
and :mod:`relay.stun.attributes` for the Python type of every attribute value.
"""

from .attributes import (
    CODECS,
    Address,
    AddressErrorCode,
    AttributeCodec,
    AttributeValue,
    ChangeRequest,
    ErrorCode,
    Icmp,
    decode_address,
    decode_xor_address,
    encode_address,
    encode_attribute,
    encode_xor_address,
    xor_pad,
)
from .constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    MAX_BODY_LENGTH,
    AttributeType,
    MessageClass,
    Method,
    PasswordAlgorithm,
)
from .errors import StunError
from .integrity import (
    append_fingerprint,
    append_message_integrity,
    append_message_integrity_sha256,
    check_fingerprint,
    check_message_integrity,
    check_message_integrity_sha256,
    fingerprint,
    hmac_sha1,
    hmac_sha256,
    long_term_key,
    opaque_string,
    short_term_key,
    userhash,
)
from .message import (
    Attributes,
    Message,
    decode_message_type,
    encode_message,
    encode_message_type,
    looks_like_stun,
    parse,
    verify_integrity,
    verify_integrity_sha256,
)

__all__ = [
    "CODECS",
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "MAGIC_COOKIE_BYTES",
    "MAX_BODY_LENGTH",
    "Address",
    "AddressErrorCode",
    "AttributeCodec",
    "AttributeType",
    "AttributeValue",
    "Attributes",
    "ChangeRequest",
    "ErrorCode",
    "Icmp",
    "Message",
    "MessageClass",
    "Method",
    "PasswordAlgorithm",
    "StunError",
    "append_fingerprint",
    "append_message_integrity",
    "append_message_integrity_sha256",
    "check_fingerprint",
    "check_message_integrity",
    "check_message_integrity_sha256",
    "decode_address",
    "decode_message_type",
    "decode_xor_address",
    "encode_address",
    "encode_attribute",
    "encode_message",
    "encode_message_type",
    "encode_xor_address",
    "fingerprint",
    "hmac_sha1",
    "hmac_sha256",
    "long_term_key",
    "looks_like_stun",
    "opaque_string",
    "parse",
    "short_term_key",
    "userhash",
    "verify_integrity",
    "verify_integrity_sha256",
    "xor_pad",
]
