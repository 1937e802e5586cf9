"""The STUN long-term credential mechanism for the TURN server (RFC 8489 §9.2, RFC 8656 §7).

:class:`LongTermAuthenticator` checks every authenticated TURN request (Allocate, Refresh,
CreatePermission, ChannelBind) and answers either :class:`Authenticated` (protect the
response with ``key``, as ``integrity`` says) or :class:`Rejected` (send an error response
with ``code``, ``reason`` and ``attributes``, *without* message integrity).

Accounts
--------
* Static users: a mapping name -> password. Their keys (MD5 and SHA-256 flavours, RFC 8489
  §9.2.2 / §18.5.1) are derived once, at construction, so a request costs one HMAC for the
  MESSAGE-INTEGRITY and one for the nonce.
* TURN REST API users (the scheme of coturn's ``use-auth-secret``, pion and eturnal):
  ``username = "<expiry unix time>:<user>"`` (or just ``"<expiry>"``) and
  ``password = base64(HMAC-SHA1(secret, username))``; see :func:`rest_api_credentials`.
  Several secrets may be configured (rotation): a request is accepted when the key derived
  from any of them verifies. Keys that verified are kept in a small bounded cache.
  USERHASH cannot address such a username (the server cannot enumerate expiries), so REST
  users must send USERNAME.

Nonces
------
Stateless: ``"obMatJos2" + base64(features) + base64url(issued u32 | salt 8 | mac 12)``
(45 printable ASCII characters, RFC 8489 §14.10), where ``mac`` is a truncated
HMAC-SHA256 under ``nonce_secret`` of the cookie, the issue time, the salt and the client
IP. The random salt makes every minted nonce distinct, which satisfies RFC 8489 §9.2.4
("MUST NOT choose the same NONCE for two requests unless they have the same source IP
address and port") without knowing the port; a nonce is accepted from the IP it was minted
for (a NAT may move the client to another port) for ``nonce_lifetime`` seconds.

Security feature bits (RFC 8489 §9.2, §18.1): "Password algorithms" is bit 0 and
"Username anonymity" bit 1, numbered from the *least* significant bit of the 24 as the
verified Erratum 6290 corrects §18.1 (the published text numbers them from the most
significant side). So the cookie is ``obMatJos2AAAB`` (password algorithms), or
``obMatJos2AAAD`` with ``username_anonymity=True`` (the server then accepts USERHASH and
RFC 8489 clients MUST send it, §9.2.5, hence it is refused together with REST secrets).
USERHASH from static users is accepted in any case.

Decisions
---------
* Checks run in the order of RFC 8489 §9.2.4; in particular a stale nonce is reported
  (438) only once the MESSAGE-INTEGRITY has verified, and a wrong integrity is a 401.
* The PASSWORD-ALGORITHM(S) check is applied whatever the nonce looks like: every nonce we
  mint carries the "Password algorithms" bit, and one without it is not ours (it gets 438
  once the integrity verifies).
* REALM different from ours: 401 (failure ``wrong_realm``) with our REALM. §9.2.4 has no
  case for it; the key of §9.2.2 hashes the realm, so the integrity check would fail with
  401 anyway, and a 401 carrying REALM is what lets a client retry (§9.2.5). 400 is
  reserved by §9.2.4 for missing attributes and the password-algorithm checks.
* The response is protected with the integrity attribute the request was verified with
  (MESSAGE-INTEGRITY-SHA256 when present, which is verified in preference, §9.2.4). For
  RFC 8489 clients (which use MESSAGE-INTEGRITY-SHA256 once they have seen
  PASSWORD-ALGORITHMS, §9.2.5) and RFC 5389 clients (no PASSWORD-ALGORITHM, MESSAGE-
  INTEGRITY) this is what the last paragraph of §9.2.4 asks for.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from relay.stun import (
    AttributeType,
    Message,
    PasswordAlgorithm,
    long_term_key,
    userhash,
    verify_integrity,
    verify_integrity_sha256,
)

__all__ = [
    "FEATURE_PASSWORD_ALGORITHMS",
    "FEATURE_USERNAME_ANONYMITY",
    "NONCE_COOKIE",
    "OFFERED_PASSWORD_ALGORITHMS",
    "Authenticated",
    "IntegrityKind",
    "LongTermAuthenticator",
    "Rejected",
    "nonce_features",
    "rest_api_credentials",
    "rest_api_password",
]

#: RFC 8489 §9.2: every NONCE of an RFC 8489 server starts with this, then 4 base64
#: characters of the 24-bit STUN Security Features.
NONCE_COOKIE: Final = "obMatJos2"
#: RFC 8489 §18.1 bit 0, the least significant of the 24 (verified Erratum 6290).
FEATURE_PASSWORD_ALGORITHMS: Final = 1 << 0
#: RFC 8489 §18.1 bit 1 (verified Erratum 6290).
FEATURE_USERNAME_ANONYMITY: Final = 1 << 1
#: The PASSWORD-ALGORITHMS value of every challenge, in order of preference (RFC 8489
#: §14.11; neither algorithm takes parameters, §18.5.1).
OFFERED_PASSWORD_ALGORITHMS: Final[tuple[tuple[int, bytes], ...]] = (
    (int(PasswordAlgorithm.SHA256), b""),
    (int(PasswordAlgorithm.MD5), b""),
)

_EMPTY_USERS: Final[Mapping[str, str]] = MappingProxyType({})
_COOKIE_LENGTH: Final = len(NONCE_COOKIE) + 4
_TIME_BYTES: Final = 4
_SALT_BYTES: Final = 8
_MAC_BYTES: Final = 12
_NONCE_BODY_BYTES: Final = _TIME_BYTES + _SALT_BYTES + _MAC_BYTES  # 24 -> 32 base64 chars
_NONCE_LENGTH: Final = _COOKIE_LENGTH + _NONCE_BODY_BYTES * 4 // 3
_TIME_MASK: Final = 0xFFFFFFFF
_MAX_SKEW: Final = 2  # seconds a nonce may seem to come from the future
_REST_CACHE_SIZE: Final = 4096
_MAX_EXPIRY_DIGITS: Final = 20
_REALM_MAX_CHARS: Final = 127  # RFC 8489 §14.9

_REALM: Final = AttributeType.REALM
_NONCE: Final = AttributeType.NONCE
_PASSWORD_ALGORITHMS: Final = AttributeType.PASSWORD_ALGORITHMS


class IntegrityKind(enum.Enum):
    """Which integrity attribute the request was verified with (and the response needs)."""

    SHA1 = "sha1"  # MESSAGE-INTEGRITY (RFC 8489 §14.5)
    SHA256 = "sha256"  # MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The request is authentic: protect the response with ``key`` as ``integrity`` says."""

    username: str  # the USERNAME as sent (REST: "expiry:user"); the user name for USERHASH
    user: str  # the account: static user name, or the REST user part
    key: bytes = field(repr=False)  # long-term key (RFC 8489 §9.2.2)
    integrity: IntegrityKind


@dataclass(frozen=True, slots=True)
class Rejected:
    """Send an error response with these attributes and no message integrity."""

    code: int  # 400, 401 or 438
    reason: str
    attributes: tuple[tuple[int, object], ...]  # REALM, NONCE, PASSWORD-ALGORITHMS as needed
    failure: str  # short label for metrics


def rest_api_password(secret: bytes | str, username: str) -> str:
    """TURN REST API password: ``base64(HMAC-SHA1(secret, username))``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    return base64.b64encode(hmac.digest(key, username.encode("utf-8"), "sha1")).decode("ascii")


def rest_api_credentials(secret: bytes | str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """Mint TURN REST API ``(username, password)`` valid until ``int(now) + ttl``.

    The username is ``"<expiry>:<user>"`` (just ``"<expiry>"`` when ``user`` is empty), as
    coturn (``use-auth-secret``), pion and eturnal expect.
    """
    expiry = int(now) + int(ttl)
    username = f"{expiry}:{user}" if user else str(expiry)
    return username, rest_api_password(secret, username)


def nonce_features(nonce: str) -> int | None:
    """The 24-bit security feature set of a nonce cookie, or None without a cookie."""
    if len(nonce) < _COOKIE_LENGTH or not nonce.startswith(NONCE_COOKIE):
        return None
    encoded = nonce[len(NONCE_COOKIE) : _COOKIE_LENGTH]
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 3 else None


def _rest_expiry(username: str) -> tuple[int, str] | None:
    """``(expiry, user)`` of a REST API username, or None if it is not one."""
    head, separator, tail = username.partition(":")
    if not (0 < len(head) <= _MAX_EXPIRY_DIGITS and head.isascii() and head.isdigit()):
        return None
    # A username of digits only names no user: the whole username is the account.
    return int(head), (tail if separator else username)


class LongTermAuthenticator:
    """RFC 8489 §9.2.4 server-side checks for static and TURN REST API credentials."""

    __slots__ = (
        "_cookie",
        "_cookie_bytes",
        "_md5_keys",
        "_nonce_lifetime",
        "_nonce_secret",
        "_realm",
        "_rest_cache",
        "_secrets",
        "_sha256_keys",
        "_userhashes",
    )

    def __init__(
        self,
        *,
        realm: str,
        users: Mapping[str, str] = _EMPTY_USERS,
        secrets: Sequence[bytes | str] = (),
        nonce_secret: bytes,
        nonce_lifetime: float = 3600.0,
        username_anonymity: bool = False,
    ) -> None:
        if not isinstance(realm, str) or not realm or len(realm) > _REALM_MAX_CHARS:
            raise ValueError(f"realm must be 1..{_REALM_MAX_CHARS} characters, got {realm!r}")
        if not isinstance(nonce_secret, bytes | bytearray) or not nonce_secret:
            raise ValueError("nonce_secret must be non-empty bytes")
        if not nonce_lifetime > 0:
            raise ValueError(f"nonce_lifetime must be positive, got {nonce_lifetime!r}")
        if isinstance(secrets, str | bytes):
            raise ValueError("secrets must be a sequence of secrets, not one secret")
        keyed: list[bytes] = []
        for secret in secrets:
            raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
            if not raw:
                raise ValueError("a REST API secret must not be empty")
            keyed.append(raw)
        if username_anonymity and keyed:
            # RFC 8489 §9.2.5: with the bit set clients MUST send USERHASH, which cannot
            # name a REST API username.
            raise ValueError("username_anonymity cannot be combined with REST API secrets")

        self._realm = realm
        self._secrets: tuple[bytes, ...] = tuple(keyed)
        self._nonce_secret = bytes(nonce_secret)
        self._nonce_lifetime = float(nonce_lifetime)
        features = FEATURE_PASSWORD_ALGORITHMS
        if username_anonymity:
            features |= FEATURE_USERNAME_ANONYMITY
        # RFC 8489 §9.2: cookie + 4-character base64 of the 3 feature bytes.
        self._cookie = NONCE_COOKIE + base64.b64encode(features.to_bytes(3, "big")).decode()
        self._cookie_bytes = self._cookie.encode("ascii")
        # Static users never change: derive both key flavours once (RFC 8489 §9.2.2).
        self._md5_keys: dict[str, bytes] = {}
        self._sha256_keys: dict[str, bytes] = {}
        self._userhashes: dict[bytes, str] = {}
        for name, password in users.items():
            self._md5_keys[name] = long_term_key(name, realm, password, PasswordAlgorithm.MD5)
            self._sha256_keys[name] = long_term_key(name, realm, password, PasswordAlgorithm.SHA256)
            self._userhashes[userhash(name, realm)] = name
        self._rest_cache: dict[tuple[str, int], bytes] = {}

    # --- nonces -------------------------------------------------------------------------

    @property
    def realm(self) -> str:
        return self._realm

    @property
    def nonce_cookie(self) -> str:
        """The 13-character prefix of every nonce this authenticator mints."""
        return self._cookie

    def new_nonce(self, client_ip: str, now: float) -> str:
        """A fresh nonce for ``client_ip``, valid ``nonce_lifetime`` seconds from ``now``."""
        head = (int(now) & _TIME_MASK).to_bytes(_TIME_BYTES, "big") + os.urandom(_SALT_BYTES)
        body = base64.urlsafe_b64encode(head + self._nonce_mac(head, client_ip))
        return self._cookie + body.decode("ascii")

    def nonce_valid(self, nonce: str, client_ip: str, now: float) -> bool:
        """True if we minted ``nonce`` for ``client_ip`` and it has not expired."""
        if len(nonce) != _NONCE_LENGTH or not nonce.startswith(self._cookie):
            return False
        body = nonce[_COOKIE_LENGTH:]
        if not body.isascii():
            return False
        encoded = body.encode("ascii")
        try:
            raw = base64.urlsafe_b64decode(encoded)
        except (binascii.Error, ValueError):
            return False
        # urlsafe_b64decode skips foreign characters: insist on the canonical encoding.
        if len(raw) != _NONCE_BODY_BYTES or base64.urlsafe_b64encode(raw) != encoded:
            return False
        # Seconds since issue, modulo 2**32 and signed; a little clock skew between
        # workers sharing nonce_secret is tolerated.
        age = (int(now) - int.from_bytes(raw[:_TIME_BYTES], "big")) & _TIME_MASK
        if age > _TIME_MASK >> 1:
            age -= _TIME_MASK + 1
        if not -_MAX_SKEW <= age < self._nonce_lifetime:
            return False
        head = raw[: _TIME_BYTES + _SALT_BYTES]
        return hmac.compare_digest(
            raw[_TIME_BYTES + _SALT_BYTES :], self._nonce_mac(head, client_ip)
        )

    def _nonce_mac(self, head: bytes, client_ip: str) -> bytes:
        data = self._cookie_bytes + head + client_ip.encode("utf-8", "surrogateescape")
        return hmac.digest(self._nonce_secret, data, "sha256")[:_MAC_BYTES]

    def _challenge(
        self, code: int, reason: str, failure: str, client_ip: str, now: float
    ) -> Rejected:
        # RFC 8489 §9.2.4: 401 and 438 carry REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
        return Rejected(
            code,
            reason,
            (
                (_REALM, self._realm),
                (_NONCE, self.new_nonce(client_ip, now)),
                (_PASSWORD_ALGORITHMS, OFFERED_PASSWORD_ALGORITHMS),
            ),
            failure,
        )

    # --- the checks ---------------------------------------------------------------------

    def authenticate(
        self, message: Message, client_ip: str, now: float
    ) -> Authenticated | Rejected:
        """RFC 8489 §9.2.4 for one parsed request from ``client_ip`` at unix time ``now``."""
        if not (message.has_integrity or message.has_integrity_sha256):
            return self._challenge(401, "Unauthenticated", "missing_integrity", client_ip, now)

        username = message.get(AttributeType.USERNAME)
        hashed = message.get(AttributeType.USERHASH) if username is None else None
        realm = message.get(AttributeType.REALM)
        nonce = message.get(AttributeType.NONCE)
        if (username is None and hashed is None) or realm is None or nonce is None:
            # RFC 8489 §9.2.4: 400 without USERNAME, USERHASH, NONCE or REALM.
            return Rejected(400, "Bad Request", (), "bad_request")

        algorithm = self._password_algorithm(message)
        if algorithm is None:
            return Rejected(400, "Bad Request", (), "bad_password_algorithm")

        if realm != self._realm:
            return self._challenge(401, "Unauthenticated", "wrong_realm", client_ip, now)

        sha256 = message.has_integrity_sha256  # §9.2.4: verify it in preference to SHA-1
        result: Authenticated | Rejected
        if username is None:
            result = self._static(message, self._userhashes.get(hashed or b""), algorithm, sha256)
        elif username in self._md5_keys:
            result = self._static(message, username, algorithm, sha256)
        else:
            result = self._rest(message, username, algorithm, sha256, now)
        if isinstance(result, Rejected):
            return self._challenge(401, "Unauthenticated", result.failure, client_ip, now)

        # §9.2.4: the nonce is checked last, once the request is known to be authentic.
        if not self.nonce_valid(nonce, client_ip, now):
            return self._challenge(438, "Stale Nonce", "stale_nonce", client_ip, now)
        return result

    @staticmethod
    def _password_algorithm(message: Message) -> PasswordAlgorithm | None:
        """RFC 8489 §9.2.4 PASSWORD-ALGORITHM(S) checks; None means 400."""
        chosen = message.get(AttributeType.PASSWORD_ALGORITHM)
        offered = message.get(AttributeType.PASSWORD_ALGORITHMS)
        if chosen is None and offered is None:
            return PasswordAlgorithm.MD5  # processed as though PASSWORD-ALGORITHM were MD5
        # Both present, the list exactly as we sent it, the choice one of its entries.
        if chosen is None or offered != OFFERED_PASSWORD_ALGORITHMS or chosen not in offered:
            return None
        return PasswordAlgorithm(chosen[0])

    def _static(
        self, message: Message, name: str | None, algorithm: PasswordAlgorithm, sha256: bool
    ) -> Authenticated | Rejected:
        if name is None:
            return _UNKNOWN_USER
        keys = self._sha256_keys if algorithm == PasswordAlgorithm.SHA256 else self._md5_keys
        key = keys[name]
        kind = _verify(message, key, sha256)
        if kind is None:
            return _BAD_INTEGRITY
        return Authenticated(name, name, key, kind)

    def _rest(
        self,
        message: Message,
        username: str,
        algorithm: PasswordAlgorithm,
        sha256: bool,
        now: float,
    ) -> Authenticated | Rejected:
        parsed = _rest_expiry(username) if self._secrets else None
        if parsed is None:
            return _UNKNOWN_USER
        expiry, user = parsed
        if expiry < now:
            return _EXPIRED_USERNAME
        cache_key = (username, int(algorithm))
        key = self._rest_cache.get(cache_key)
        if key is not None:
            kind = _verify(message, key, sha256)
            if kind is not None:
                return Authenticated(username, user, key, kind)
        for secret in self._secrets:
            password = rest_api_password(secret, username)
            key = long_term_key(username, self._realm, password, algorithm)
            kind = _verify(message, key, sha256)
            if kind is not None:
                self._remember(cache_key, key)
                return Authenticated(username, user, key, kind)
        return _BAD_INTEGRITY

    def _remember(self, cache_key: tuple[str, int], key: bytes) -> None:
        cache = self._rest_cache
        cache.pop(cache_key, None)
        if len(cache) >= _REST_CACHE_SIZE:
            del cache[next(iter(cache))]  # the oldest entry
        cache[cache_key] = key


def _verify(message: Message, key: bytes, sha256: bool) -> IntegrityKind | None:
    if sha256:
        return IntegrityKind.SHA256 if verify_integrity_sha256(message, key) else None
    return IntegrityKind.SHA1 if verify_integrity(message, key) else None


# Placeholders returned by the account lookups; authenticate() turns them into 401s.
_UNKNOWN_USER: Final = Rejected(401, "Unauthenticated", (), "unknown_user")
_EXPIRED_USERNAME: Final = Rejected(401, "Unauthenticated", (), "expired_username")
_BAD_INTEGRITY: Final = Rejected(401, "Unauthenticated", (), "bad_integrity")
