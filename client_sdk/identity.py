"""Peer identity: an Ed25519 key pair, and the ``peer_id`` derived from its public key.

A peer proves it holds the key by signing what the rendezvous server asks it to sign (a
server challenge and the request it authorises), so nobody can register, receive or
answer as another peer: a peer can only register itself (the rule libp2p rendezvous
follows). The rendezvous server verifies with the same functions, so the wire format of
identities lives in this one module.

* ``peer_id`` = lowercase base32 (no padding) of the first 20 bytes of SHA-256(public key):
  32 characters ``[a-z2-7]``.
* Keys and signatures travel as base64url without padding.
* A signature covers ``SIGNING_CONTEXT`` + the fields of ``signed_message`` joined by
  newlines, so a signature for one purpose is never valid for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

SIGNING_CONTEXT = b"natkit-rendezvous-v1"
# What a peer signs, after the server's challenge, to open a signaling WebSocket.
WEBSOCKET_HELLO = b"websocket-hello"
# A signed HTTP request (rendezvous.api.auth checks it): the public key, the challenge
# from GET /v1/challenge, and the signature over ``request_fields``.
KEY_HEADER = "X-Natkit-Key"
CHALLENGE_HEADER = "X-Natkit-Challenge"
SIGNATURE_HEADER = "X-Natkit-Signature"
PEER_ID_LENGTH = 32


class IdentityError(ValueError):
    """A malformed key, peer id or signature."""


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str, *, what: str, size: int | None = None) -> bytes:
    """Strict base64url without padding; ``size``: the exact decoded length required."""
    if len(text) > 1024:
        raise IdentityError(f"{what} is too long")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise IdentityError(f"{what} is not base64url") from exc
    if b64encode(data) != text:
        raise IdentityError(f"{what} is not canonical base64url (no padding)")
    if size is not None and len(data) != size:
        raise IdentityError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def peer_id_of(public_key: bytes) -> str:
    """The peer id of a raw 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    digest = hashlib.sha256(public_key).digest()[:20]
    return base64.b32encode(digest).decode().lower()


def request_fields(method: str, path_qs: str, body: bytes, challenge: str) -> tuple[bytes, ...]:
    """What a request signature covers: the challenge, the method, the path with its
    query, and the SHA-256 (hex) of the body (clients sign these, the server checks them)."""
    digest = hashlib.sha256(body).hexdigest()
    return challenge.encode(), method.upper().encode(), path_qs.encode(), digest.encode()


def signed_message(*fields: bytes) -> bytes:
    """What a signature covers: the context, then each field, newline-separated. Fields
    may not contain newlines (they are challenges, methods, paths and digests)."""
    for field in fields:
        if b"\n" in field:
            raise IdentityError("a signed field may not contain a newline")
    return b"\n".join((SIGNING_CONTEXT, *fields))


def verify(public_key: bytes, signature: bytes, *fields: bytes) -> bool:
    """Whether ``signature`` by ``public_key`` covers ``fields`` (see ``signed_message``)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed_message(*fields))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A peer's key pair. ``Identity.generate()`` for a new one; keep ``private_bytes()``
    to be the same peer next time (``Identity.from_private_bytes``)."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        if len(raw) != 32:
            raise IdentityError(f"an Ed25519 private key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def peer_id(self) -> str:
        return peer_id_of(self.public_key)

    def sign(self, *fields: bytes) -> bytes:
        return self.private_key.sign(signed_message(*fields))
