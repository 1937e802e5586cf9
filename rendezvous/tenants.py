"""Multi-tenant access: who a bearer token belongs to, and what it may touch.

A deployment that serves several apps (tenants) gives each its own namespace: a tenant's
swarms and signaling peers are invisible to anyone without one of its credentials. The
tenants are configured in a JSON file (``--tenants-file``, e.g. a mounted Kubernetes
Secret)::

    {"tenants": {
        "acme": {
            "api_keys_sha256": ["<sha256 hex of an API key>"],
            "jwt": {"secret": "<HS256 key, 32+ bytes>"},
            "rate_limit": 200, "rate_burst": 400
        },
        "globex": {"jwt": {"public_key": "-----BEGIN PUBLIC KEY-----...", "audience": "natkit"}}
    }}

Two kinds of credential, both sent as ``Authorization: Bearer <token>``:

* an **API key**: any secret string; the file holds only its SHA-256, so a leaked file
  does not leak keys. For a tenant's own servers.
* a **JWT** (RFC 7519) the tenant's backend mints for its users, signed with the tenant's
  HS256 secret or its private key (EdDSA, ES256 or RS256, verified with ``public_key``):
  ``iss`` names the tenant, ``exp`` is required, ``aud`` is checked when configured,
  ``sub`` (optional) gets its own rate-limit bucket, and ``swarms`` (optional, up to 32
  ``fnmatch`` patterns such as ``"room-42"`` or ``"game-*"``) limits the swarms the token
  opens -- a private swarm is one only such tokens name.

``Tenants.authenticate`` is pure (no I/O): the HTTP layer (``rendezvous.api.access``)
turns its ``AccessError`` into a 401 and applies the grant.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "PUBLIC",
    "Access",
    "AccessError",
    "Grant",
    "JwtConfig",
    "Tenant",
    "Tenants",
    "TenantsFile",
    "load_tenants",
]

TENANT_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TOKEN_BYTES: Final = 4096
MAX_SWARM_PATTERNS: Final = 32
_SHA256_HEX: Final = r"^[0-9a-f]{64}$"
_ASYMMETRIC: Final = ("EdDSA", "ES256", "RS256")


class AccessError(Exception):
    """A credential that is refused; the message says why (it goes to the client)."""


class JwtConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(default=None, min_length=32, description="HS256 key")
    public_key: str | None = Field(default=None, description="PEM: EdDSA, ES256 or RS256")
    audience: str | None = Field(default=None, max_length=256)
    leeway: float = Field(default=30.0, ge=0, le=300, description="clock skew allowed (s)")

    @model_validator(mode="after")
    def _one_key(self) -> JwtConfig:
        if (self.secret is None) == (self.public_key is None):
            raise ValueError("give exactly one of secret (HS256) and public_key")
        return self


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_keys_sha256: list[str] = Field(default_factory=list, max_length=1024)
    jwt: JwtConfig | None = None
    rate_limit: float | None = Field(default=None, ge=0, description="requests/s per key")
    rate_burst: float | None = Field(default=None, ge=1)

    @field_validator("api_keys_sha256")
    @classmethod
    def _hashes(cls, hashes: list[str]) -> list[str]:
        for value in hashes:
            if not re.fullmatch(_SHA256_HEX, value):
                raise ValueError(f"{value[:16]!r}...: not a lower-case SHA-256 hex digest")
        return hashes


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, Tenant] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _names(cls, tenants: dict[str, Tenant]) -> dict[str, Tenant]:
        for name in tenants:
            if not re.fullmatch(TENANT_NAME, name):
                raise ValueError(f"tenant name {name[:64]!r}: 1-64 of A-Z a-z 0-9 _ . -")
        return tenants


@dataclass(frozen=True, slots=True)
class Grant:
    """What one accepted credential opens."""

    tenant: str
    swarms: tuple[str, ...] | None  # fnmatch patterns; None: all of the tenant's swarms
    bucket: str  # its rate-limit bucket in the store
    rate: float | None  # None: the server's --rate-limit
    burst: float | None

    def allows(self, swarm: str) -> bool:
        return self.swarms is None or any(fnmatchcase(swarm, p) for p in self.swarms)


class Tenants:
    """The configured tenants, indexed for ``authenticate``."""

    def __init__(self, config: TenantsFile) -> None:
        self.config = config
        self._keys: dict[bytes, str] = {}  # sha256 digest -> tenant
        for name, tenant in config.tenants.items():
            for digest in tenant.api_keys_sha256:
                self._keys[bytes.fromhex(digest)] = name

    def __bool__(self) -> bool:
        return bool(self.config.tenants)

    def authenticate(self, token: str, now: float) -> Grant:
        """The grant of a bearer token, or ``AccessError`` saying why not."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise AccessError(f"a bearer token is 1 to {MAX_TOKEN_BYTES} characters")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        tenant = self._api_key_tenant(digest)
        if tenant is not None:
            settings = self.config.tenants[tenant]
            bucket = f"key:{digest[:12].hex()}"
            return Grant(tenant, None, bucket, settings.rate_limit, settings.rate_burst)
        if token.count(".") != 2:
            raise AccessError("unknown API key")
        return self._jwt_grant(token, now)

    def _api_key_tenant(self, digest: bytes) -> str | None:
        # A dict lookup by digest: the digest of a guess tells nothing about the keys.
        tenant = self._keys.get(digest)
        if tenant is None:
            return None
        for known in self.config.tenants[tenant].api_keys_sha256:  # constant-time confirm
            if hmac.compare_digest(bytes.fromhex(known), digest):
                return tenant
        return None

    def _jwt_grant(self, token: str, now: float) -> Grant:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AccessError(f"malformed token: {exc}") from None
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise AccessError("the token has no iss naming its tenant")
        tenant = self.config.tenants.get(issuer)
        if tenant is None or tenant.jwt is None:
            raise AccessError("the token's iss is not a tenant that accepts tokens")
        config = tenant.jwt
        key: Any = config.secret if config.secret is not None else config.public_key
        algorithms = ["HS256"] if config.secret is not None else list(_ASYMMETRIC)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=config.audience,
                issuer=issuer,
                leeway=config.leeway,
                # exp/nbf are checked below against the server's clock, not PyJWT's.
                options={
                    "require": ["exp", "iss"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AccessError(f"token refused: {exc}") from None
        self._check_times(claims, now, config.leeway)
        swarms = _swarm_patterns(claims.get("swarms"))
        subject = claims.get("sub")
        if subject is not None and (not isinstance(subject, str) or len(subject) > 128):
            raise AccessError("token refused: sub must be a string of at most 128 characters")
        bucket = f"jwt:{issuer}:{subject}" if subject else f"jwt:{issuer}"
        return Grant(issuer, swarms, bucket, tenant.rate_limit, tenant.rate_burst)

    @staticmethod
    def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
        """``exp`` and ``nbf`` (RFC 7519 §4.1.4-5, NumericDate) against ``now``."""
        exp, nbf = claims["exp"], claims.get("nbf")
        for name, value in (("exp", exp), ("nbf", nbf)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise AccessError(f"token refused: {name} must be a number of seconds")
        if now >= exp + leeway:
            raise AccessError("token refused: it has expired")
        if nbf is not None and now < nbf - leeway:
            raise AccessError("token refused: it is not valid yet (nbf)")


def _swarm_patterns(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_SWARM_PATTERNS
        or not all(isinstance(p, str) and 1 <= len(p) <= 128 for p in value)
    ):
        raise AccessError(
            f"token refused: swarms must be a list of 1 to {MAX_SWARM_PATTERNS} patterns "
            "of at most 128 characters"
        )
    return tuple(value)


def load_tenants(path: str) -> Tenants:
    """The tenants of the JSON file at ``path`` ("" for none); ``ValueError`` naming the
    problem when the file cannot be read or is not a valid tenants file."""
    if not path:
        return Tenants(TenantsFile())
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return Tenants(TenantsFile.model_validate(raw))
    except OSError as exc:
        raise ValueError(f"tenants file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"tenants file {path}: not JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise ValueError(f"tenants file {path}: {where}: {first['msg']}") from None


@dataclass(frozen=True, slots=True)
class Access:
    """The namespace one request acts in: the public one (``tenant`` None) or a
    tenant's, with the grant of the credential that opened it."""

    tenant: str | None = None
    grant: Grant | None = None

    @property
    def namespace(self) -> str:
        """The prefix of this namespace's names in the store and on the signaling bus."""
        return "p" if self.tenant is None else f"t:{self.tenant}"

    def store_swarm(self, swarm: str) -> str:
        """The store's name of a ``/v1`` swarm: apart from other tenants' and from the
        BitTorrent tracker's (``bt:``)."""
        return f"{self.namespace}:{swarm}"

    def allows(self, swarm: str) -> bool:
        return self.grant is None or self.grant.allows(swarm)

    def address(self, peer_id: str) -> str:
        """Where a signaling socket of ``peer_id`` in this namespace is reached: the same
        peer id in two namespaces is two addresses, so signals never cross tenants."""
        return peer_id if self.tenant is None else f"t:{self.tenant}/{peer_id}"


PUBLIC: Final = Access()
