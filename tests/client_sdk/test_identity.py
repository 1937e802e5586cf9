"""Peer identities: peer ids derive from keys, signatures bind to their exact fields, and
every decoder of network input (keys, signatures, challenges) fails only with its error."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.identity import (
    Identity,
    IdentityError,
    b64decode,
    b64encode,
    peer_id_of,
    signed_message,
    verify,
)
from rendezvous.challenges import Challenges


def test_peer_id_is_base32_of_the_key_digest() -> None:
    identity = Identity.generate()
    peer_id = identity.peer_id
    assert len(peer_id) == 32
    assert set(peer_id) <= set("abcdefghijklmnopqrstuvwxyz234567")
    import base64

    digest = hashlib.sha256(identity.public_key).digest()[:20]
    assert base64.b32decode(peer_id.upper()) == digest
    again = Identity.from_private_bytes(identity.private_bytes())
    assert again.peer_id == peer_id
    assert Identity.generate().peer_id != peer_id


def test_signatures_cover_exactly_their_fields() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"challenge", b"PUT", b"/path")
    assert verify(identity.public_key, signature, b"challenge", b"PUT", b"/path")
    assert not verify(identity.public_key, signature, b"challenge", b"PUT", b"/other")
    assert not verify(identity.public_key, signature, b"challenge", b"PUT/path")
    assert not verify(Identity.generate().public_key, signature, b"challenge", b"PUT", b"/path")
    assert not verify(identity.public_key, signature[:-1], b"challenge", b"PUT", b"/path")
    with pytest.raises(IdentityError, match="newline"):
        signed_message(b"a\nb")


@pytest.mark.parametrize(
    ("text", "size", "message"),
    [
        ("A", None, "not base64url"),
        ("AAAA=", None, "canonical"),
        ("AA==", None, "canonical"),
        ("AAB", None, "canonical"),
        ("+/8", None, "not canonical"),
        ("AAAA", 4, "must be 4 bytes, got 3"),
        ("A" * 1100, None, "too long"),
    ],
)
def test_b64decode_errors(text: str, size: int | None, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        b64decode(text, what="field", size=size)


@given(st.binary(max_size=100))
def test_b64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data), what="x") == data


@given(st.text(max_size=200))
def test_b64decode_of_anything_is_bytes_or_identity_error(text: str) -> None:
    try:
        decoded = b64decode(text, what="x")
    except IdentityError:
        return
    assert b64encode(decoded) == text


def test_peer_id_needs_a_32_byte_key() -> None:
    with pytest.raises(IdentityError, match="32 bytes, got 31"):
        peer_id_of(bytes(31))
    assert not verify(bytes(31), bytes(64), b"x")


def test_challenges_expire_and_are_bound_to_the_secret() -> None:
    challenges = Challenges(b"secret", lifetime=60)
    challenge = challenges.issue(1000.0)
    assert challenges.check(challenge, 1000.0) is None
    assert challenges.check(challenge, 1060.0) is None
    assert challenges.check(challenge, 1061.0) == "challenge expired: get a new one"
    assert challenges.check(challenge, 990.0) == "challenge is from the future"
    assert Challenges(b"other", 60).check(challenge, 1000.0) == "challenge was not issued here"
    assert challenges.issue(1000.0) != challenge  # a fresh nonce each time


@given(st.text(max_size=120))
def test_any_challenge_text_is_checked_without_raising(text: str) -> None:
    problem = Challenges(b"secret", 60).check(text, 1000.0)
    assert problem is not None
