"""The Noise handshake of the secure channel, and how it binds to natkit identities.

Two layers:

* ``HandshakeState`` / ``SymmetricState`` / ``CipherState``: the Noise Protocol Framework
  (revision 34, noiseprotocol.org/noise.html, sections 5.1-5.3) for
  ``Noise_{NN,XX,IK}_25519_ChaChaPoly_SHA256``, written token by token from the spec. Every
  primitive comes from ``cryptography``: X25519 (RFC 7748), ChaCha20-Poly1305 (RFC 8439),
  SHA-256 and HKDF (RFC 5869; with an empty ``info`` it is exactly Noise's ``HKDF()``).
  ``tests/client_sdk/test_secure_noise.py`` checks it against the cacophony test vectors.
* ``InitiatorHandshake`` / ``ResponderHandshake``: natkit's use of ``XX`` between two
  peers, with the Noise static key bound to the Ed25519 identity as libp2p's Noise
  handshake does (libp2p specs, ``noise/README.md``, "Static Key Authentication"): the
  encrypted payload of messages 2 and 3 carries the sender's Ed25519 public key and its
  signature over ``STATIC_KEY_PREFIX`` + the Noise static public key. The prefix differs
  from ``client_sdk.identity.SIGNING_CONTEXT``, so no rendezvous signature can pass for a
  channel binding or the other way round.

Each handshake object is single-use and, where a message could be forged or replayed,
reads it on a copy of its state, so that a message that fails leaves it as it was (the
session layer relies on that to drop forged datagrams without harm).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client_sdk.identity import PEER_ID_LENGTH, Identity, peer_id_of

DHLEN = 32
HASHLEN = 32
TAGLEN = 16
# Noise reserves nonce 2^64-1 (spec 5.1).
MAX_NONCE = 2**64 - 1

STATIC_KEY_PREFIX = b"natkit-noise-static-key:"
PROLOGUE_LABEL = b"natkit-secure-channel/1"
MAX_PURPOSE_LENGTH = 255


class ChannelError(Exception):
    """The secure channel cannot do what was asked; the message says why."""


# --------------------------------------------------------------------------- Noise core


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # a low-order point gives the all-zero secret
        raise ChannelError("Diffie-Hellman with an invalid public key") from exc


def _hash(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    out = HKDF(hashes.SHA256(), length=2 * HASHLEN, salt=chaining_key, info=b"").derive(ikm)
    return out[:HASHLEN], out[HASHLEN:]


def noise_nonce(n: int) -> bytes:
    """The ChaChaPoly nonce for counter ``n``: 32 zero bits, then ``n`` little-endian."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class CipherState:
    """Spec 5.1: a key (or none) and a nonce counter."""

    __slots__ = ("_aead", "key", "n")

    def __init__(self, key: bytes | None = None, n: int = 0) -> None:
        self.key = key
        self.n = n
        self._aead = ChaCha20Poly1305(key) if key is not None else None

    def has_key(self) -> bool:
        return self.key is not None

    def copy(self) -> CipherState:
        return CipherState(self.key, self.n)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise ChannelError("nonce space exhausted")
        ciphertext = self._aead.encrypt(noise_nonce(self.n), plaintext, ad)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise ChannelError("nonce space exhausted")
        try:
            plaintext = self._aead.decrypt(noise_nonce(self.n), ciphertext, ad)
        except InvalidTag as exc:
            raise ChannelError("handshake message failed authentication") from exc
        self.n += 1
        return plaintext


class SymmetricState:
    """Spec 5.2: chaining key, handshake hash and the current CipherState."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def copy(self) -> SymmetricState:
        clone = SymmetricState.__new__(SymmetricState)
        clone.ck, clone.h, clone.cipher = self.ck, self.h, self.cipher.copy()
        return clone

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


# Spec 7: (initiator pre-message, responder pre-message, messages); message i (from 0) is
# written by the initiator when i is even.
PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


class HandshakeState:
    """Spec 5.3 for the patterns in ``PATTERNS`` with 25519, ChaChaPoly and SHA256.

    ``e`` fixes the ephemeral key (test vectors only); ``rs`` is the responder's static
    public key for patterns that pre-share it (IK)."""

    def __init__(
        self,
        pattern: str,
        *,
        initiator: bool,
        prologue: bytes,
        s: X25519PrivateKey | None = None,
        e: X25519PrivateKey | None = None,
        rs: bytes | None = None,
    ) -> None:
        if pattern not in PATTERNS:
            raise ChannelError(f"unsupported Noise pattern {pattern!r}")
        pre_initiator, pre_responder, messages = PATTERNS[pattern]
        self.protocol_name = f"Noise_{pattern}_25519_ChaChaPoly_SHA256".encode()
        self.initiator = initiator
        self.symmetric = SymmetricState(self.protocol_name)
        self.symmetric.mix_hash(prologue)
        self.s = s
        self.e = e
        self.rs = rs
        self.re: bytes | None = None
        self._messages = messages
        self._index = 0
        for owner_is_initiator, tokens in ((True, pre_initiator), (False, pre_responder)):
            for tok in tokens:
                if tok != "s":
                    raise ChannelError(f"unsupported pre-message token {tok!r}")
                if owner_is_initiator == initiator:
                    if s is None:
                        raise ChannelError("the pattern needs a local static key")
                    self.symmetric.mix_hash(_raw_public(s))
                else:
                    if rs is None:
                        raise ChannelError("the pattern needs the remote static key")
                    self.symmetric.mix_hash(rs)

    def copy(self) -> HandshakeState:
        clone = HandshakeState.__new__(HandshakeState)
        clone.__dict__.update(self.__dict__)
        clone.symmetric = self.symmetric.copy()
        return clone

    @property
    def complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    def _next_tokens(self, writing: bool) -> tuple[str, ...]:
        if self.complete:
            raise ChannelError("the handshake is already complete")
        if ((self._index % 2 == 0) == self.initiator) != writing:
            raise ChannelError("not this side's turn in the handshake")
        tokens = self._messages[self._index]
        self._index += 1
        return tokens

    def _mix_dh(self, tok: str) -> None:
        local_e_first = tok[0] == "e"
        remote_e_second = tok[1] == "e"
        if not self.initiator:  # "es" is e(initiator) with s(responder): swap roles
            local_e_first, remote_e_second = remote_e_second, local_e_first
        private = self.e if local_e_first else self.s
        public = self.re if remote_e_second else self.rs
        if private is None or public is None:
            raise ChannelError(f"key missing for token {tok!r}")
        self.symmetric.mix_key(_dh(private, public))

    def write_message(self, payload: bytes) -> bytes:
        out: list[bytes] = []
        for tok in self._next_tokens(writing=True):
            if tok == "e":
                if self.e is None:
                    self.e = X25519PrivateKey.generate()
                public = _raw_public(self.e)
                self.symmetric.mix_hash(public)
                out.append(public)
            elif tok == "s":
                if self.s is None:
                    raise ChannelError("the pattern needs a local static key")
                out.append(self.symmetric.encrypt_and_hash(_raw_public(self.s)))
            else:
                self._mix_dh(tok)
        out.append(self.symmetric.encrypt_and_hash(payload))
        return b"".join(out)

    def read_message(self, message: bytes) -> bytes:
        view = memoryview(message)
        for tok in self._next_tokens(writing=False):
            if tok == "e":
                if len(view) < DHLEN:
                    raise ChannelError("handshake message too short")
                self.re = bytes(view[:DHLEN])
                view = view[DHLEN:]
                self.symmetric.mix_hash(self.re)
            elif tok == "s":
                size = DHLEN + (TAGLEN if self.symmetric.cipher.has_key() else 0)
                if len(view) < size:
                    raise ChannelError("handshake message too short")
                self.rs = self.symmetric.decrypt_and_hash(bytes(view[:size]))
                view = view[size:]
            else:
                self._mix_dh(tok)
        if self.symmetric.cipher.has_key() and len(view) < TAGLEN:
            raise ChannelError("handshake message too short")
        return self.symmetric.decrypt_and_hash(bytes(view))

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator-to-responder, responder-to-initiator) cipher states."""
        if not self.complete:
            raise ChannelError("the handshake is not complete")
        return self.symmetric.split()


# ------------------------------------------------------------ natkit's XX with identities


def make_prologue(purpose: bytes, initiator_peer_id: str, responder_peer_id: str) -> bytes:
    """Binds a handshake to its context (Noise spec 6): a label and version, the purpose,
    and both peer ids, each length-prefixed. Both sides must agree on all of them, or the
    first encrypted handshake field fails to decrypt."""
    if len(purpose) > MAX_PURPOSE_LENGTH:
        raise ChannelError(f"purpose longer than {MAX_PURPOSE_LENGTH} bytes")
    parts = (PROLOGUE_LABEL, purpose, initiator_peer_id.encode(), responder_peer_id.encode())
    return b"".join(bytes((len(part),)) + part for part in parts)


@dataclass(frozen=True)
class LocalStatic:
    """A peer's Noise static key pair and its identity binding. A fresh one per session
    is the default (libp2p allows either): it costs one signature per session."""

    identity: Identity
    private: X25519PrivateKey
    public: bytes
    signature: bytes

    @classmethod
    def generate(cls, identity: Identity) -> LocalStatic:
        private = X25519PrivateKey.generate()
        public = _raw_public(private)
        return cls(identity, private, public, sign_static_key(identity, public))

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def identity_payload(self) -> bytes:
        return self.identity.public_key + self.signature


def sign_static_key(identity: Identity, static_public: bytes) -> bytes:
    return identity.private_key.sign(STATIC_KEY_PREFIX + static_public)


def verify_static_key(identity_public: bytes, signature: bytes, static_public: bytes) -> bool:
    if len(identity_public) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(identity_public).verify(
            signature, STATIC_KEY_PREFIX + static_public
        )
    except (InvalidSignature, ValueError):
        return False
    return True


IDENTITY_PAYLOAD_LENGTH = 32 + 64
_INDEX = struct.Struct("<I")
# Message 1 payload (cleartext, but hashed into the transcript): version, the
# initiator's session index, its peer id, zero padding up to the size of message 2, so
# that a spoofed message 1 never draws a larger answer (no amplification).
PAYLOAD_VERSION = 1
MSG1_BODY_LENGTH = DHLEN + (DHLEN + TAGLEN) + (4 + IDENTITY_PAYLOAD_LENGTH + TAGLEN)
MSG1_PAYLOAD_LENGTH = MSG1_BODY_LENGTH - DHLEN
MSG2_BODY_LENGTH = MSG1_BODY_LENGTH
MSG3_BODY_LENGTH = (DHLEN + TAGLEN) + (IDENTITY_PAYLOAD_LENGTH + TAGLEN)
_MSG1_USED = 1 + 4 + PEER_ID_LENGTH


def peek_msg1(body: bytes) -> tuple[int, str] | None:
    """(initiator index, claimed initiator peer id) of a message 1 body, or None when it
    is malformed. The claim is only a hint until message 3 proves it."""
    if len(body) != MSG1_BODY_LENGTH:
        return None
    payload = body[DHLEN:]
    if payload[0] != PAYLOAD_VERSION or any(payload[_MSG1_USED:]):
        return None
    (index,) = _INDEX.unpack_from(payload, 1)
    try:
        peer_id = payload[5:_MSG1_USED].decode("ascii")
    except UnicodeDecodeError:
        return None
    if index == 0 or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in peer_id):
        return None
    return index, peer_id


def _check_identity(payload: bytes, remote_static: bytes | None, expected: str | None) -> str:
    if len(payload) != IDENTITY_PAYLOAD_LENGTH or remote_static is None:
        raise ChannelError("malformed identity payload")
    identity_public, signature = payload[:32], payload[32:]
    if not verify_static_key(identity_public, signature, remote_static):
        raise ChannelError("the Noise static key is not signed by the presented identity")
    peer_id = peer_id_of(identity_public)
    if expected is not None and peer_id != expected:
        raise ChannelError(f"remote identity is {peer_id}, expected {expected}")
    return peer_id


@dataclass(frozen=True)
class HandshakeResult:
    remote_peer_id: str
    remote_index: int
    send: CipherState
    receive: CipherState
    handshake_hash: bytes


class InitiatorHandshake:
    """The initiator's side of natkit XX: knows the peer id it wants, accepts no other."""

    def __init__(
        self,
        local: LocalStatic,
        remote_peer_id: str,
        *,
        purpose: bytes,
        local_index: int,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self.remote_peer_id = remote_peer_id
        prologue = make_prologue(purpose, local.peer_id, remote_peer_id)
        self._state = HandshakeState("XX", initiator=True, prologue=prologue, s=local.private)
        if ephemeral is not None:
            self._state.e = ephemeral
        self._local = local
        payload = (
            bytes((PAYLOAD_VERSION,)) + _INDEX.pack(local_index) + local.peer_id.encode()
        ).ljust(MSG1_PAYLOAD_LENGTH, b"\x00")
        self.msg1 = self._state.write_message(payload)

    def read_msg2(self, body: bytes) -> tuple[bytes, HandshakeResult]:
        """Message 3 and the session keys, or ChannelError (then nothing changed)."""
        if len(body) != MSG2_BODY_LENGTH:
            raise ChannelError(f"message 2 must be {MSG2_BODY_LENGTH} bytes, got {len(body)}")
        state = self._state.copy()
        payload = state.read_message(body)
        (remote_index,) = _INDEX.unpack_from(payload, 0)
        if remote_index == 0:
            raise ChannelError("responder index 0 is reserved")
        peer_id = _check_identity(payload[4:], state.rs, self.remote_peer_id)
        msg3 = state.write_message(self._local.identity_payload())
        send, receive = state.split()
        self._state = state
        return msg3, HandshakeResult(peer_id, remote_index, send, receive, state.handshake_hash)


class ResponderHandshake:
    """The responder's side: answers one message 1 (its claimed peer id goes into the
    prologue), and accepts a message 3 only from that identity."""

    def __init__(
        self,
        local: LocalStatic,
        msg1: bytes,
        *,
        purpose: bytes,
        local_index: int,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        peeked = peek_msg1(msg1)
        if peeked is None:
            raise ChannelError("malformed message 1")
        self.remote_index, self.claimed_peer_id = peeked
        prologue = make_prologue(purpose, self.claimed_peer_id, local.peer_id)
        state = HandshakeState("XX", initiator=False, prologue=prologue, s=local.private)
        if ephemeral is not None:
            state.e = ephemeral
        state.read_message(msg1)
        self.msg2 = state.write_message(_INDEX.pack(local_index) + local.identity_payload())
        self._state = state

    def read_msg3(self, body: bytes) -> HandshakeResult:
        if len(body) != MSG3_BODY_LENGTH:
            raise ChannelError(f"message 3 must be {MSG3_BODY_LENGTH} bytes, got {len(body)}")
        state = self._state.copy()
        payload = state.read_message(body)
        peer_id = _check_identity(payload, state.rs, self.claimed_peer_id)
        c1, c2 = state.split()
        self._state = state
        return HandshakeResult(peer_id, self.remote_index, c2, c1, state.handshake_hash)
