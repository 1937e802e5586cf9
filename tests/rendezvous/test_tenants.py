"""Tenant credentials without HTTP: API keys by hash, JWTs (HS256 and EdDSA) with their
claims checked against the server's clock, and the tenants file's validation."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.tenants import AccessError, Tenants, TenantsFile, load_tenants

NOW = 1_800_000_000.0
SECRET = "s" * 40
API_KEY = "acme-live-key-0123456789"
SIGNING_KEY = Ed25519PrivateKey.generate()
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CONFIG: dict[str, Any] = {
    "tenants": {
        "acme": {
            "api_keys_sha256": [sha256(API_KEY)],
            "jwt": {"secret": SECRET},
            "rate_limit": 5,
            "rate_burst": 10,
        },
        "globex": {"jwt": {"public_key": PUBLIC_PEM, "audience": "natkit"}},
        "keys-only": {"api_keys_sha256": [sha256("other-key")]},
    }
}
TENANTS = Tenants(TenantsFile.model_validate(CONFIG))


def hs256(**claims: Any) -> str:
    return jwt.encode({"iss": "acme", "exp": NOW + 60, **claims}, SECRET, algorithm="HS256")


def eddsa(**claims: Any) -> str:
    body = {"iss": "globex", "exp": NOW + 60, "aud": "natkit", **claims}
    return jwt.encode(body, SIGNING_KEY, algorithm="EdDSA")


def test_api_key() -> None:
    grant = TENANTS.authenticate(API_KEY, NOW)
    assert (grant.tenant, grant.swarms, grant.rate, grant.burst) == ("acme", None, 5, 10)
    assert grant.bucket.startswith("key:")
    assert TENANTS.authenticate("other-key", NOW).tenant == "keys-only"
    with pytest.raises(AccessError, match="unknown API key"):
        TENANTS.authenticate(API_KEY + "x", NOW)


def test_hs256_token_with_swarms_and_subject() -> None:
    grant = TENANTS.authenticate(hs256(sub="user-7", swarms=["room-42", "game-*"]), NOW)
    assert grant.tenant == "acme"
    assert grant.bucket == "jwt:acme:user-7"
    assert grant.allows("room-42")
    assert grant.allows("game-chess")
    assert not grant.allows("room-43")
    assert TENANTS.authenticate(hs256(), NOW).bucket == "jwt:acme"


def test_eddsa_token_and_audience() -> None:
    assert TENANTS.authenticate(eddsa(), NOW).tenant == "globex"
    with pytest.raises(AccessError, match=r"[Aa]udience"):
        TENANTS.authenticate(eddsa(aud="someone-else"), NOW)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (hs256(exp=NOW - 31), "expired"),  # beyond the 30 s leeway
        (hs256(nbf=NOW + 31), "not valid yet"),
        (hs256(exp="tomorrow"), "exp must be a number"),
        (jwt.encode({"iss": "acme"}, SECRET, algorithm="HS256"), 'missing the "exp"'),
        (jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256"), "no iss"),
        (hs256(iss="nobody"), "not a tenant that accepts tokens"),
        (hs256(iss="keys-only"), "not a tenant that accepts tokens"),
        (jwt.encode({"iss": "acme", "exp": NOW + 60}, "x" * 40, algorithm="HS256"), "Signature"),
        (jwt.encode({"iss": "acme", "exp": NOW + 60}, "", algorithm="none"), "alg"),
        (eddsa(iss="acme"), "alg"),  # an EdDSA token for an HS256 tenant
        (hs256(swarms="room-*"), "swarms must be a list"),
        (hs256(swarms=[]), "swarms must be a list"),
        (hs256(sub=7), r"[Ss]ub.* must be a string"),
        ("a.b.c", "malformed"),
        ("", "1 to 4096"),
        ("x" * 5000, "1 to 4096"),
    ],
)
def test_refused_tokens(token: str, message: str) -> None:
    with pytest.raises(AccessError, match=message):
        TENANTS.authenticate(token, NOW)


def test_the_servers_clock_decides_expiry() -> None:
    token = hs256(exp=NOW + 60)
    assert TENANTS.authenticate(token, NOW + 89).tenant == "acme"  # within the leeway
    with pytest.raises(AccessError, match="expired"):
        TENANTS.authenticate(token, NOW + 90)


@given(st.text(max_size=300))
def test_any_text_is_a_grant_or_an_access_error(token: str) -> None:
    with contextlib.suppress(AccessError):
        TENANTS.authenticate(token, NOW)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"tenants": {"bad name!": {}}}', "tenant name"),
        ('{"tenants": {"a": {"api_keys_sha256": ["abc"]}}}', "SHA-256"),
        ('{"tenants": {"a": {"jwt": {}}}}', "exactly one of secret"),
        ('{"tenants": {"a": {"jwt": {"secret": "short"}}}}', "at least 32"),
        ('{"tenants": {"a": {"rate_limit": -1}}}', "greater than or equal"),
        ('{"tenant": {}}', "Extra inputs"),
    ],
)
def test_bad_tenants_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_tenants(str(path))


def test_tenants_file_loads_and_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(CONFIG))
    assert load_tenants(str(path)).authenticate(API_KEY, NOW).tenant == "acme"
    assert not load_tenants("")
    with pytest.raises(ValueError, match=r"nope\.json"):
        load_tenants(str(tmp_path / "nope.json"))
