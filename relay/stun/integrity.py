"""Keys, HMACs and CRCs for MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.

The ``append_*`` functions take a complete encoded message (header length field equal to
the body length) and return it with the trailer attribute appended and the header length
field updated; :meth:`relay.stun.Message.encode` is built on them, and a hot path that
assembles a response with :func:`relay.stun.encode_attribute` can call them directly.

The ``check_*`` functions verify a received message given its raw bytes and the offset of
the attribute header.

Limitation: RFC 8489 §9.2.2 asks for the OpaqueString profile of PRECIS (RFC 8265), and
RFC 5389 for SASLprep (RFC 4013), on the realm and password. :func:`opaque_string` only
maps non-ASCII spaces to U+0020 and applies NFC; it neither applies SASLprep's NFKC and
"mapped to nothing" table nor rejects disallowed code points. Callers with non-ASCII
passwords that need SASLprep (e.g. RFC 5769 §2.4's "The<U+00AD>M<U+00AA>tr<U+2168>",
which SASLprep turns into "TheMatrIX") must pass the already-prepared string.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import zlib
from struct import Struct
from typing import Final

from .constants import FINGERPRINT_XOR, HEADER_LENGTH, MAX_BODY_LENGTH, PasswordAlgorithm
from .errors import StunError

__all__ = [
    "append_fingerprint",
    "append_message_integrity",
    "append_message_integrity_sha256",
    "check_fingerprint",
    "check_message_integrity",
    "check_message_integrity_sha256",
    "fingerprint",
    "hmac_sha1",
    "hmac_sha256",
    "long_term_key",
    "opaque_string",
    "short_term_key",
    "userhash",
]

_U16 = Struct("!H")
_U32 = Struct("!I")
_MI_HEADER: Final = b"\x00\x08\x00\x14"  # MESSAGE-INTEGRITY, length 20
_FP_HEADER: Final = b"\x80\x28\x00\x04"  # FINGERPRINT, length 4
_MI_SHA256_TYPE: Final = 0x001C


def opaque_string(text: str) -> str:
    """Simplified PRECIS OpaqueString (RFC 8265 §4.2): see the module docstring."""
    if text.isascii():
        return text
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    return unicodedata.normalize("NFC", mapped)


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.1: key = OpaqueString(password)."""
    return opaque_string(password).encode("utf-8")


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: PasswordAlgorithm = PasswordAlgorithm.MD5,
) -> bytes:
    """RFC 8489 §9.2.2: H(username ":" OpaqueString(realm) ":" OpaqueString(password)).

    H is MD5 (16-byte key) or SHA-256 (32-byte key) per the PASSWORD-ALGORITHM in use.
    """
    data = b":".join(
        (
            username.encode("utf-8"),
            opaque_string(realm).encode("utf-8"),
            opaque_string(password).encode("utf-8"),
        )
    )
    if algorithm == PasswordAlgorithm.MD5:
        # MD5 is mandated by the protocol here (RFC 8489 §9.2.2, §18.5.1.1).
        return hashlib.md5(data).digest()  # noqa: S324
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(data).digest()
    raise StunError(f"unknown password algorithm {algorithm!r}")


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm))."""
    data = opaque_string(username).encode("utf-8") + b":" + opaque_string(realm).encode("utf-8")
    return hashlib.sha256(data).digest()


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA1, the MESSAGE-INTEGRITY MAC (RFC 8489 §14.5)."""
    return hmac.digest(key, data, "sha1")


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256, the MESSAGE-INTEGRITY-SHA256 MAC (RFC 8489 §14.6)."""
    return hmac.digest(key, data, "sha256")


def fingerprint(data: bytes) -> int:
    """RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR 0x5354554E."""
    return zlib.crc32(data) ^ FINGERPRINT_XOR


def _check_message(message: bytes) -> None:
    length = len(message)
    if length < HEADER_LENGTH or (length - HEADER_LENGTH) % 4:
        raise StunError(f"{length} bytes is not a STUN message (header + 4-byte multiple)")


def _with_length(message: bytes, end: int, body_length: int) -> bytes:
    """``message[:end]`` with the header length field set to ``body_length``.

    RFC 8489 §14.5-§14.7: the hashed header's length points to the end of the attribute
    being computed, not to the end of the whole message.
    """
    if body_length > MAX_BODY_LENGTH:
        raise StunError(f"message body of {body_length} bytes exceeds {MAX_BODY_LENGTH}")
    return message[:2] + _U16.pack(body_length) + message[4:end]


def append_message_integrity(message: bytes, key: bytes) -> bytes:
    """Append MESSAGE-INTEGRITY (HMAC-SHA1 over the message, RFC 8489 §14.5)."""
    _check_message(message)
    covered = _with_length(message, len(message), len(message) - HEADER_LENGTH + 24)
    return covered + _MI_HEADER + hmac.digest(key, covered, "sha1")


def append_message_integrity_sha256(message: bytes, key: bytes, length: int = 32) -> bytes:
    """Append MESSAGE-INTEGRITY-SHA256, truncated to ``length`` bytes (RFC 8489 §14.6)."""
    _check_message(message)
    if not (16 <= length <= 32 and length % 4 == 0):
        raise StunError(f"MESSAGE-INTEGRITY-SHA256 length {length} not a multiple of 4 in 16..32")
    covered = _with_length(message, len(message), len(message) - HEADER_LENGTH + 4 + length)
    mac = hmac.digest(key, covered, "sha256")[:length]
    return covered + _U16.pack(_MI_SHA256_TYPE) + _U16.pack(length) + mac


def append_fingerprint(message: bytes) -> bytes:
    """Append FINGERPRINT (RFC 8489 §14.7); must be the last step of encoding."""
    _check_message(message)
    covered = _with_length(message, len(message), len(message) - HEADER_LENGTH + 8)
    return covered + _FP_HEADER + _U32.pack(zlib.crc32(covered) ^ FINGERPRINT_XOR)


def check_message_integrity(data: bytes, offset: int, key: bytes) -> bool:
    """Verify the MESSAGE-INTEGRITY attribute whose header is at ``data[offset]``."""
    end = offset + 24
    if offset < HEADER_LENGTH or end > len(data):
        return False
    covered = _with_length(data, offset, end - HEADER_LENGTH)
    return hmac.compare_digest(hmac.digest(key, covered, "sha1"), data[offset + 4 : end])


def check_message_integrity_sha256(data: bytes, offset: int, key: bytes) -> bool:
    """Verify the MESSAGE-INTEGRITY-SHA256 attribute whose header is at ``data[offset]``."""
    if offset < HEADER_LENGTH or offset + 4 > len(data):
        return False
    length = _U16.unpack_from(data, offset + 2)[0]
    end = offset + 4 + length
    if not 16 <= length <= 32 or end > len(data):
        return False
    covered = _with_length(data, offset, end - HEADER_LENGTH)
    mac = hmac.digest(key, covered, "sha256")[:length]
    return hmac.compare_digest(mac, data[offset + 4 : end])


def check_fingerprint(data: bytes, offset: int) -> bool:
    """Verify the FINGERPRINT attribute whose header is at ``data[offset]``.

    FINGERPRINT must be last, so the header length already covers it.
    """
    if offset < HEADER_LENGTH or offset + 8 != len(data):
        return False
    expected = zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR
    return bool(_U32.unpack_from(data, offset + 4)[0] == expected)
