"""Request signatures: a peer proves it is ``peer_id`` for each request that changes state.

Headers: ``X-Natkit-Key`` (the Ed25519 public key, base64url), ``X-Natkit-Challenge`` (from
``GET /v1/challenge``) and ``X-Natkit-Signature`` (base64url) over the challenge, the method,
the path with its query, and the SHA-256 (hex) of the body -- see ``client_sdk.identity``.
"""

from __future__ import annotations

from aiohttp import web

from client_sdk.identity import (
    CHALLENGE_HEADER,
    KEY_HEADER,
    SIGNATURE_HEADER,
    IdentityError,
    b64decode,
    peer_id_of,
    request_fields,
    verify,
)
from rendezvous import keys
from rendezvous.api.errors import ApiError

__all__ = ["CHALLENGE_HEADER", "KEY_HEADER", "SIGNATURE_HEADER", "request_fields", "signed_peer"]


async def signed_peer(request: web.Request) -> tuple[str, bytes]:
    """(peer_id, public key) of the peer that signed ``request``; 401 otherwise."""
    headers = request.headers
    key_text = headers.get(KEY_HEADER)
    challenge = headers.get(CHALLENGE_HEADER)
    signature_text = headers.get(SIGNATURE_HEADER)
    if not key_text or not challenge or not signature_text:
        raise ApiError(
            401,
            "unauthenticated",
            f"sign the request: {KEY_HEADER}, {CHALLENGE_HEADER} and {SIGNATURE_HEADER}",
        )
    try:
        public_key = b64decode(key_text, what=KEY_HEADER, size=32)
        signature = b64decode(signature_text, what=SIGNATURE_HEADER, size=64)
    except IdentityError as exc:
        raise ApiError(401, "unauthenticated", str(exc)) from exc
    problem = request.app[keys.CHALLENGES].check(challenge, request.app[keys.CLOCK]())
    if problem is not None:
        raise ApiError(401, "bad_challenge", problem)
    body = await request.read()
    fields = request_fields(request.method, request.path_qs, body, challenge)
    if not verify(public_key, signature, *fields):
        raise ApiError(401, "bad_signature", "the signature does not match the request")
    return peer_id_of(public_key), public_key
