"""The TURN long-term credential mechanism (RFC 8489 §9.2) of relay.turn.auth."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import time
from collections.abc import Iterator
from typing import cast

import pytest
from aioice import stun as aioice_stun
from aioice import turn as aioice_turn
from hypothesis import given, settings
from hypothesis import strategies as st

import relay.turn.auth as auth_module
from relay.stun import (
    AttributeType,
    ErrorCode,
    Message,
    MessageClass,
    Method,
    PasswordAlgorithm,
    long_term_key,
    parse,
    userhash,
)
from relay.turn.auth import (
    NONCE_COOKIE,
    OFFERED_PASSWORD_ALGORITHMS,
    Authenticated,
    IntegrityKind,
    LongTermAuthenticator,
    Rejected,
    nonce_features,
    rest_api_credentials,
    rest_api_password,
)
from tests import stunutil
from tests.netutil import free_udp_port

A = AttributeType
REALM = "natkit.test"
IP = "192.0.2.10"
NOW = 1_700_000_000.0
USERS = {"alice": "wonderland", "bob": "builder"}
SECRET = "rest-secret-1"
OLD_SECRET = b"rest-secret-0"
SHA256_CHOICE = (int(PasswordAlgorithm.SHA256), b"")
MD5_CHOICE = (int(PasswordAlgorithm.MD5), b"")
# RFC 3261 qdtext without LWS, the NONCE grammar (RFC 8489 §14.10).
QDTEXT = {chr(c) for c in (0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F))}


def make_auth(**overrides: object) -> LongTermAuthenticator:
    options: dict[str, object] = {
        "realm": REALM,
        "users": USERS,
        "secrets": (SECRET, OLD_SECRET),
        "nonce_secret": b"n" * 32,
    }
    options.update(overrides)
    return LongTermAuthenticator(**options)  # type: ignore[arg-type]


def request(
    *,
    key: bytes | None,
    username: str | None = None,
    realm: str | None = REALM,
    nonce: str | None = None,
    hashed: bytes | None = None,
    algorithm: tuple[int, bytes] | None = None,
    algorithms: tuple[tuple[int, bytes], ...] | None = None,
    sha256: bool = False,
    method: int = Method.ALLOCATE,
) -> Message:
    """An encoded-then-parsed request, as the server would see it."""
    attributes: list[tuple[int, object]] = [(A.REQUESTED_TRANSPORT, 17)]
    if username is not None:
        attributes.append((A.USERNAME, username))
    if hashed is not None:
        attributes.append((A.USERHASH, hashed))
    if realm is not None:
        attributes.append((A.REALM, realm))
    if nonce is not None:
        attributes.append((A.NONCE, nonce))
    if algorithms is not None:
        attributes.append((A.PASSWORD_ALGORITHMS, algorithms))
    if algorithm is not None:
        attributes.append((A.PASSWORD_ALGORITHM, algorithm))
    message = Message(method, MessageClass.REQUEST, os.urandom(12), tuple(attributes))
    if key is None:
        return parse(message.encode(fingerprint=True))
    if sha256:
        return parse(message.encode(integrity_sha256_key=key, fingerprint=True))
    return parse(message.encode(integrity_key=key, fingerprint=True))


def challenge(auth: LongTermAuthenticator, ip: str = IP, now: float = NOW) -> str:
    """The NONCE of the 401 an unauthenticated request gets."""
    result = auth.authenticate(request(key=None), ip, now)
    assert isinstance(result, Rejected)
    nonce = dict(result.attributes)[A.NONCE]
    assert isinstance(nonce, str)
    return nonce


def md5_key(username: str, password: str, realm: str = REALM) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def sha256_key(username: str, password: str, realm: str = REALM) -> bytes:
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).digest()


def assert_challenge(
    result: object, code: int, failure: str, auth: LongTermAuthenticator, now: float = NOW
) -> str:
    """A 401/438 with REALM, a valid fresh NONCE and PASSWORD-ALGORITHMS; returns the nonce."""
    assert isinstance(result, Rejected), result
    assert (result.code, result.failure) == (code, failure)
    assert [t for t, _ in result.attributes] == [A.REALM, A.NONCE, A.PASSWORD_ALGORITHMS]
    values = dict(result.attributes)
    assert values[A.REALM] == REALM
    assert values[A.PASSWORD_ALGORITHMS] == ((2, b""), (1, b""))
    nonce = values[A.NONCE]
    assert isinstance(nonce, str)
    assert auth.nonce_valid(nonce, IP, now)
    return nonce


# --- 401 challenge and the nonce cookie ----------------------------------------------------


def test_request_without_integrity_gets_401_challenge() -> None:
    auth = make_auth()
    result = auth.authenticate(request(key=None, username="alice", nonce="x"), IP, NOW)
    nonce = assert_challenge(result, 401, "missing_integrity", auth)
    assert isinstance(result, Rejected)
    assert result.reason == "Unauthenticated"
    # RFC 8489 §9.2: "obMatJos2" + base64 of the 24 feature bits; "Password algorithms" is
    # bit 0, the least significant (verified Erratum 6290 to §18.1).
    assert nonce.startswith(NONCE_COOKIE + "AAAB")
    assert nonce_features(nonce) == 0x000001
    assert base64.b64decode(nonce[9:13]) == b"\x00\x00\x01"
    # RFC 8489 §14.10: fewer than 128 characters of qdtext.
    assert len(nonce) < 128
    assert set(nonce) <= QDTEXT


def test_challenge_encodes_as_error_response_without_integrity() -> None:
    auth = make_auth()
    result = auth.authenticate(request(key=None), IP, NOW)
    assert isinstance(result, Rejected)
    response = Message(
        Method.ALLOCATE,
        MessageClass.ERROR,
        b"\x01" * 12,
        ((A.ERROR_CODE, ErrorCode(result.code, result.reason)), *result.attributes),
    )
    parsed = parse(response.encode())
    assert parsed.get(A.ERROR_CODE) == ErrorCode(401, "Unauthenticated")
    assert parsed.get(A.PASSWORD_ALGORITHMS) == OFFERED_PASSWORD_ALGORITHMS
    assert not parsed.has_integrity
    assert not parsed.has_integrity_sha256


def test_every_challenge_has_a_distinct_nonce() -> None:
    # RFC 8489 §9.2.4: never the same NONCE for two requests unless same IP and port.
    auth = make_auth()
    nonces = {challenge(auth) for _ in range(50)}
    assert len(nonces) == 50


def test_username_anonymity_feature_bits() -> None:
    auth = make_auth(secrets=(), username_anonymity=True)
    nonce = challenge(auth)
    assert nonce.startswith("obMatJos2AAAD")
    assert nonce_features(nonce) == 0b11
    assert auth.nonce_cookie == "obMatJos2AAAD"
    with pytest.raises(ValueError, match="username_anonymity"):
        make_auth(username_anonymity=True)


def test_nonce_features_without_cookie() -> None:
    assert nonce_features("f//499k954d6OL34oL9FSTvy64sA") is None
    assert nonce_features("obMatJos2") is None
    assert nonce_features("obMatJos2!!!!abc") is None
    assert nonce_features("obMatJos2gAAA") == 0x800000


# --- static users ---------------------------------------------------------------------------


@pytest.mark.parametrize("sha256", [False, True], ids=["MI", "MI-SHA256"])
@pytest.mark.parametrize(
    ("choice", "derive"),
    [(None, md5_key), (MD5_CHOICE, md5_key), (SHA256_CHOICE, sha256_key)],
    ids=["no-algorithm", "MD5", "SHA-256"],
)
def test_static_user_succeeds(
    sha256: bool, choice: tuple[int, bytes] | None, derive: object
) -> None:
    auth = make_auth()
    nonce = challenge(auth)
    assert callable(derive)
    key = derive("alice", "wonderland")
    message = request(
        key=key,
        username="alice",
        nonce=nonce,
        algorithm=choice,
        algorithms=OFFERED_PASSWORD_ALGORITHMS if choice else None,
        sha256=sha256,
    )
    result = auth.authenticate(message, IP, NOW + 10)
    assert result == Authenticated(
        "alice", "alice", key, IntegrityKind.SHA256 if sha256 else IntegrityKind.SHA1
    )
    assert isinstance(result, Authenticated)
    assert result.key == long_term_key(
        "alice",
        REALM,
        "wonderland",
        PasswordAlgorithm(choice[0]) if choice else PasswordAlgorithm.MD5,
    )
    assert "key" not in repr(result)


def test_both_integrity_attributes_prefers_sha256() -> None:
    auth = make_auth()
    key = md5_key("bob", "builder")
    message = Message(
        Method.REFRESH,
        MessageClass.REQUEST,
        os.urandom(12),
        ((A.USERNAME, "bob"), (A.REALM, REALM), (A.NONCE, challenge(auth))),
    )
    # Good SHA-256 MAC, bad SHA-1 MAC: accepted and answered with MI-SHA256 (§9.2.4).
    good = parse(message.encode(integrity_key=b"wrong", integrity_sha256_key=key))
    result = auth.authenticate(good, IP, NOW)
    assert isinstance(result, Authenticated)
    assert result.integrity is IntegrityKind.SHA256
    # Good SHA-1 MAC, bad SHA-256 MAC: rejected, the SHA-256 one is the one verified.
    bad = parse(message.encode(integrity_key=key, integrity_sha256_key=b"wrong"))
    assert_challenge(auth.authenticate(bad, IP, NOW), 401, "bad_integrity", auth)


def test_static_user_wrong_password() -> None:
    auth = make_auth()
    message = request(key=md5_key("alice", "nope"), username="alice", nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "bad_integrity", auth)


def test_unknown_user() -> None:
    auth = make_auth()
    message = request(key=md5_key("carol", "x"), username="carol", nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "unknown_user", auth)


def test_wrong_realm_is_401_with_our_realm() -> None:
    auth = make_auth()
    key = md5_key("alice", "wonderland", realm="other.example")
    message = request(key=key, username="alice", realm="other.example", nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "wrong_realm", auth)


def test_static_keys_are_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make_auth()
    nonce = challenge(auth)

    def forbidden(*args: object) -> bytes:
        raise AssertionError("long-term key derived per request")

    monkeypatch.setattr(auth_module, "long_term_key", forbidden)
    for choice, key in (
        (None, md5_key("bob", "builder")),
        (SHA256_CHOICE, sha256_key("bob", "builder")),
    ):
        message = request(
            key=key,
            username="bob",
            nonce=nonce,
            algorithm=choice,
            algorithms=OFFERED_PASSWORD_ALGORITHMS if choice else None,
            sha256=choice is not None,
        )
        assert isinstance(auth.authenticate(message, IP, NOW), Authenticated)


# --- USERHASH --------------------------------------------------------------------------------


@pytest.mark.parametrize("anonymity", [False, True])
def test_userhash_of_static_user(anonymity: bool) -> None:
    auth = make_auth(secrets=(), username_anonymity=anonymity)
    hashed = hashlib.sha256(f"alice:{REALM}".encode()).digest()  # RFC 8489 §14.4
    assert hashed == userhash("alice", REALM)
    key = sha256_key("alice", "wonderland")
    message = request(
        key=key,
        hashed=hashed,
        nonce=challenge(auth),
        algorithm=SHA256_CHOICE,
        algorithms=OFFERED_PASSWORD_ALGORITHMS,
        sha256=True,
    )
    result = auth.authenticate(message, IP, NOW)
    assert result == Authenticated("alice", "alice", key, IntegrityKind.SHA256)


def test_unknown_userhash() -> None:
    auth = make_auth(secrets=(), username_anonymity=True)
    message = request(key=md5_key("x", "y"), hashed=bytes(32), nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "unknown_user", auth)


# --- 400 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["username", "realm", "nonce"])
@pytest.mark.parametrize("sha256", [False, True])
def test_missing_attribute_with_integrity_is_400(missing: str, sha256: bool) -> None:
    auth = make_auth()
    fields: dict[str, str | None] = {"username": "alice", "realm": REALM, "nonce": challenge(auth)}
    fields[missing] = None
    message = request(
        key=md5_key("alice", "wonderland"),
        sha256=sha256,
        username=fields["username"],
        realm=fields["realm"],
        nonce=fields["nonce"],
    )
    result = auth.authenticate(message, IP, NOW)
    # RFC 8489 §9.2.4: 400 without USERNAME, USERHASH, NONCE or REALM.
    assert result == Rejected(400, "Bad Request", (), "bad_request")


@pytest.mark.parametrize(
    ("choice", "offered"),
    [
        ((3, b""), OFFERED_PASSWORD_ALGORITHMS),  # not one of those offered
        ((2, b"x"), OFFERED_PASSWORD_ALGORITHMS),  # parameters that were not offered
        (SHA256_CHOICE, ((2, b""),)),  # list not as sent
        (SHA256_CHOICE, ((1, b""), (2, b""))),  # list reordered
        (MD5_CHOICE, ((2, b""), (1, b""), (3, b""))),  # list extended
        (SHA256_CHOICE, None),  # choice without the list
        (None, OFFERED_PASSWORD_ALGORITHMS),  # list without a choice
    ],
)
def test_password_algorithm_mismatch_is_400(
    choice: tuple[int, bytes] | None, offered: tuple[tuple[int, bytes], ...] | None
) -> None:
    auth = make_auth()
    message = request(
        key=sha256_key("alice", "wonderland"),
        username="alice",
        nonce=challenge(auth),
        algorithm=choice,
        algorithms=offered,
        sha256=True,
    )
    assert auth.authenticate(message, IP, NOW) == Rejected(
        400, "Bad Request", (), "bad_password_algorithm"
    )


# --- 438 --------------------------------------------------------------------------------------


def alice(nonce: str, **overrides: object) -> Message:
    options: dict[str, object] = {"key": md5_key("alice", "wonderland"), "username": "alice"}
    options.update(overrides)
    return request(nonce=nonce, **options)  # type: ignore[arg-type]


def test_expired_nonce_is_438() -> None:
    auth = make_auth()
    nonce = challenge(auth, now=NOW - 3601)
    assert_challenge(auth.authenticate(alice(nonce), IP, NOW), 438, "stale_nonce", auth)
    # Just inside the lifetime it is still good.
    nonce = challenge(auth, now=NOW - 3599)
    assert isinstance(auth.authenticate(alice(nonce), IP, NOW), Authenticated)


def test_nonce_lifetime_is_configurable() -> None:
    auth = make_auth(nonce_lifetime=10.0)
    nonce = challenge(auth)
    assert isinstance(auth.authenticate(alice(nonce), IP, NOW + 9), Authenticated)
    result = auth.authenticate(alice(nonce), IP, NOW + 11)
    assert isinstance(result, Rejected)
    assert result.code == 438
    fresh = dict(result.attributes)[A.NONCE]
    assert isinstance(fresh, str)
    assert isinstance(auth.authenticate(alice(fresh), IP, NOW + 11), Authenticated)


def test_nonce_from_the_future_is_438() -> None:
    auth = make_auth()
    nonce = challenge(auth, now=NOW + 120)
    assert_challenge(auth.authenticate(alice(nonce), IP, NOW), 438, "stale_nonce", auth)


def test_nonce_for_another_ip_is_438() -> None:
    auth = make_auth()
    nonce = challenge(auth, ip="198.51.100.7")
    assert_challenge(auth.authenticate(alice(nonce), IP, NOW), 438, "stale_nonce", auth)


@pytest.mark.parametrize(
    "forge",
    [
        lambda good: make_auth(nonce_secret=b"other").new_nonce(IP, NOW),  # other secret
        lambda good: good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),  # MAC altered
        lambda good: good[:20] + ("A" if good[20] != "A" else "B") + good[21:],  # time/salt
        lambda good: "obMatJos2gAAA" + good[13:],  # feature bits altered (bid-down)
        lambda good: good[:13] + "!" + good[14:],  # not base64
        lambda good: good + "A",  # too long
        lambda good: "made-up-nonce",
        lambda good: "obMatJos2AAAB" + "é" * 32,
    ],
)
def test_forged_nonce_is_438(forge: object) -> None:
    auth = make_auth()
    assert callable(forge)
    nonce = forge(challenge(auth))
    assert isinstance(nonce, str)
    assert_challenge(auth.authenticate(alice(nonce), IP, NOW), 438, "stale_nonce", auth)


def test_stale_nonce_with_bad_integrity_is_401() -> None:
    # RFC 8489 §9.2.4 order: integrity is checked before the nonce.
    auth = make_auth()
    message = alice("made-up-nonce", key=md5_key("alice", "nope"))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "bad_integrity", auth)


# --- TURN REST API ----------------------------------------------------------------------------


def test_rest_formula_golden() -> None:
    username, password = rest_api_credentials("north-gov-secret", "alice", 3600, 1_700_000_000.5)
    assert username == "1700003600:alice"
    expected = base64.b64encode(
        hmac.new(b"north-gov-secret", b"1700003600:alice", hashlib.sha1).digest()
    ).decode()
    assert password == expected
    # Pinned: `printf %s 1700003600:alice | openssl dgst -sha1 -hmac north-gov-secret
    # -binary | base64` gives the same value.
    assert password == "te0YKp9kR8O+uDKThi8GMykuIqE="
    assert rest_api_password(b"north-gov-secret", username) == password
    assert rest_api_credentials("s", "", 10, 100.0)[0] == "110"


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET], ids=["new", "old"])
@pytest.mark.parametrize("sha256", [False, True])
def test_rest_credentials_accepted_with_any_secret(secret: str | bytes, sha256: bool) -> None:
    auth = make_auth()
    username, password = rest_api_credentials(secret, "carol", 600, NOW)
    choice = SHA256_CHOICE if sha256 else None
    key = long_term_key(
        username, REALM, password, PasswordAlgorithm.SHA256 if sha256 else PasswordAlgorithm.MD5
    )
    message = request(
        key=key,
        username=username,
        nonce=challenge(auth),
        algorithm=choice,
        algorithms=OFFERED_PASSWORD_ALGORITHMS if choice else None,
        sha256=sha256,
    )
    result = auth.authenticate(message, IP, NOW)
    kind = IntegrityKind.SHA256 if sha256 else IntegrityKind.SHA1
    assert result == Authenticated(username, "carol", key, kind)
    # Again, now from the cache of verified keys.
    assert auth.authenticate(message, IP, NOW + 1) == result


def test_rest_digits_only_username() -> None:
    auth = make_auth()
    username, password = rest_api_credentials(SECRET, "", 600, NOW)
    assert username.isdigit()
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    result = auth.authenticate(message, IP, NOW)
    assert isinstance(result, Authenticated)
    assert (result.username, result.user) == (username, username)


def test_rest_expired_username() -> None:
    auth = make_auth()
    username, password = rest_api_credentials(SECRET, "carol", -1, NOW)
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "expired_username", auth)
    # Expiry == now is still valid; it is rejected once now has passed it.
    username, password = rest_api_credentials(SECRET, "carol", 0, NOW)
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    assert isinstance(auth.authenticate(message, IP, NOW), Authenticated)
    result = auth.authenticate(message, IP, NOW + 1)
    assert_challenge(result, 401, "expired_username", auth, NOW + 1)


def test_rest_wrong_password_and_unknown_secret() -> None:
    auth = make_auth()
    username, _ = rest_api_credentials(SECRET, "carol", 600, NOW)
    message = request(key=md5_key(username, "guess"), username=username, nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "bad_integrity", auth)
    username, password = rest_api_credentials("retired-secret", "carol", 600, NOW)
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "bad_integrity", auth)


def test_rest_username_without_secrets_is_unknown() -> None:
    auth = make_auth(secrets=())
    username, password = rest_api_credentials(SECRET, "carol", 600, NOW)
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    assert_challenge(auth.authenticate(message, IP, NOW), 401, "unknown_user", auth)


def test_rest_cache_avoids_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make_auth()
    username, password = rest_api_credentials(OLD_SECRET, "carol", 600, NOW)
    message = request(key=md5_key(username, password), username=username, nonce=challenge(auth))
    calls: list[str] = []
    real = auth_module.long_term_key

    def counting(*args: object) -> bytes:
        calls.append(str(args[0]))
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(auth_module, "long_term_key", counting)
    assert isinstance(auth.authenticate(message, IP, NOW), Authenticated)
    assert len(calls) == 2  # the new secret failed, the old one verified
    assert isinstance(auth.authenticate(message, IP, NOW), Authenticated)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"realm": ""}, "realm"),
        ({"realm": "r" * 128}, "realm"),
        ({"nonce_secret": b""}, "nonce_secret"),
        ({"nonce_lifetime": 0.0}, "nonce_lifetime"),
        ({"secrets": ("",)}, "secret"),
        ({"secrets": "one-secret"}, "secrets"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_auth(**kwargs)


# --- fuzz ----------------------------------------------------------------------------------

text = st.text(max_size=40) | st.sampled_from(["alice", "bob", REALM, "1700000600:carol"])


@settings(max_examples=300, deadline=None)
@given(
    username=st.none() | text,
    hashed=st.none() | st.binary(min_size=32, max_size=32),
    realm=st.none() | text,
    nonce=st.none() | text | st.just("obMatJos2AAAB" + "A" * 32),
    key=st.binary(min_size=1, max_size=40),
    sha256=st.booleans(),
    choice=st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=6)),
    offered=st.none()
    | st.just(OFFERED_PASSWORD_ALGORITHMS)
    | st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=6)), max_size=3).map(tuple),
    now=st.floats(0, 2**32 - 1, allow_nan=False),
)
def test_arbitrary_requests_are_rejected_without_raising(
    username: str | None,
    hashed: bytes | None,
    realm: str | None,
    nonce: str | None,
    key: bytes,
    sha256: bool,
    choice: tuple[int, bytes] | None,
    offered: tuple[tuple[int, bytes], ...] | None,
    now: float,
) -> None:
    auth = make_auth()
    message = request(
        key=key,
        username=username,
        hashed=hashed,
        realm=realm,
        nonce=nonce,
        algorithm=choice,
        algorithms=offered,
        sha256=sha256,
    )
    result = auth.authenticate(message, IP, now)
    assert isinstance(result, Rejected)
    assert result.code in (400, 401, 438)


# --- interop: aioice and coturn ---------------------------------------------------------------


def aioice_allocate(username: str, password: str, realm: str, nonce: str) -> bytes:
    """An Allocate request as aioice's TURN client builds it after a 401."""
    message = aioice_stun.Message(
        message_method=aioice_stun.Method.ALLOCATE, message_class=aioice_stun.Class.REQUEST
    )
    message.attributes["LIFETIME"] = 600
    message.attributes["REQUESTED-TRANSPORT"] = 0x11000000
    message.attributes["USERNAME"] = username
    message.attributes["NONCE"] = nonce.encode()
    message.attributes["REALM"] = realm
    message.add_message_integrity(aioice_turn.make_integrity_key(username, realm, password))
    return bytes(message)


@pytest.mark.interop
def test_aioice_request_with_rest_credentials_is_accepted() -> None:
    auth = make_auth()
    username, password = rest_api_credentials(SECRET, "dave", 300, NOW)
    wire = aioice_allocate(username, password, REALM, challenge(auth))
    result = auth.authenticate(parse(wire), IP, NOW)
    assert isinstance(result, Authenticated)
    assert (result.username, result.user, result.integrity) == (
        username,
        "dave",
        IntegrityKind.SHA1,
    )
    # And one with a password not minted from our secret is not.
    wire = aioice_allocate(username, "not-the-password", REALM, challenge(auth))
    assert_challenge(auth.authenticate(parse(wire), IP, NOW), 401, "bad_integrity", auth)


class _MiniTurnServer(asyncio.DatagramProtocol):
    """Just enough of a TURN server for aioice's client: our authenticator decides."""

    def __init__(self, auth: LongTermAuthenticator) -> None:
        self.auth = auth
        self.transport: asyncio.DatagramTransport | None = None
        self.results: list[Authenticated | Rejected] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        message = parse(data)
        result = self.auth.authenticate(message, addr[0], time.time())
        self.results.append(result)
        if isinstance(result, Rejected):
            error = Message(
                message.method,
                MessageClass.ERROR,
                message.transaction_id,
                ((A.ERROR_CODE, ErrorCode(result.code, result.reason)), *result.attributes),
            )
            self.transport.sendto(error.encode(), addr)
            return
        attributes: tuple[tuple[int, object], ...] = ((A.LIFETIME, 600),)
        if message.method == Method.ALLOCATE:
            attributes += (
                (A.XOR_RELAYED_ADDRESS, ("127.0.0.1", 50000)),
                (A.XOR_MAPPED_ADDRESS, addr),
            )
        response = Message(message.method, MessageClass.SUCCESS, message.transaction_id, attributes)
        if result.integrity is IntegrityKind.SHA256:
            self.transport.sendto(response.encode(integrity_sha256_key=result.key), addr)
        else:
            self.transport.sendto(response.encode(integrity_key=result.key), addr)


@pytest.mark.interop
async def test_aioice_turn_client_against_our_authenticator() -> None:
    """aioice's TURN client accepts our 401 challenge and verifies our response integrity."""
    auth = make_auth(secrets=(SECRET,))
    loop = asyncio.get_running_loop()
    server_transport, server = await loop.create_datagram_endpoint(
        lambda: _MiniTurnServer(auth), local_addr=("127.0.0.1", 0)
    )
    try:
        port = server_transport.get_extra_info("sockname")[1]
        username, password = rest_api_credentials(SECRET, "erin", 600, time.time())
        transport, _ = await asyncio.wait_for(
            aioice_turn.create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", port), username, password
            ),
            10,
        )
        assert transport.get_extra_info("sockname") == ("127.0.0.1", 50000)
        transport.close()
        await asyncio.sleep(0.2)  # let aioice's Refresh(LIFETIME=0) complete
        failures = [r.failure for r in server.results if isinstance(r, Rejected)]
        assert failures == ["missing_integrity"]
        assert sum(isinstance(r, Authenticated) for r in server.results) == 2
    finally:
        server_transport.close()


@pytest.fixture
def coturn() -> Iterator[tuple[int, str]]:
    """coturn's turnserver with the TURN REST API (use-auth-secret) on 127.0.0.1."""
    if shutil.which("turnserver") is None:
        pytest.skip("turnserver not installed (Debian package coturn)")
    secret = "coturn-" + os.urandom(8).hex()
    port = free_udp_port()
    args = ["--no-tcp", "--use-auth-secret", f"--static-auth-secret={secret}"]
    args += ["--realm=natkit.test", "--listening-ip=127.0.0.1", f"--listening-port={port}"]
    args += ["--relay-ip=127.0.0.1", "--allow-loopback-peers"]
    with stunutil.coturn(*args, server=("127.0.0.1", port)):
        yield port, secret


@pytest.mark.interop
async def test_coturn_accepts_minted_rest_credentials(coturn: tuple[int, str]) -> None:
    port, secret = coturn
    username, password = rest_api_credentials(secret, "natkit", 600, time.time())
    transport, _ = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol, ("127.0.0.1", port), username, password
        ),
        15,
    )
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed is not None
        assert relayed[0] == "127.0.0.1"
    finally:
        transport.close()
        await asyncio.sleep(0.2)

    # The same credentials, built into a request by aioice, pass our authenticator.
    auth = LongTermAuthenticator(realm="natkit.test", secrets=(secret,), nonce_secret=b"k" * 16)
    nonce = auth.new_nonce(IP, time.time())
    result = auth.authenticate(
        parse(aioice_allocate(username, password, "natkit.test", nonce)), IP, time.time()
    )
    assert isinstance(result, Authenticated)
    assert result.user == "natkit"

    # A password that is not HMAC(secret, username) is refused by coturn too.
    with pytest.raises(aioice_stun.TransactionFailed) as refused:
        await asyncio.wait_for(
            aioice_turn.create_turn_endpoint(
                asyncio.DatagramProtocol, ("127.0.0.1", port), username, password[::-1]
            ),
            15,
        )
    assert refused.value.response.error_code == 401
