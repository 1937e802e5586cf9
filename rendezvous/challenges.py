"""Stateless challenges: what a peer signs to prove it holds its key.

A challenge is ``<issued>.<nonce>.<mac>``: the issue time (Unix seconds), 16 random bytes
and an HMAC-SHA256 over both, all base64url. Any instance with the same secret accepts it
until ``lifetime`` seconds after issue, so no state is shared and no store round trip is
spent. Within that window a signed request could be replayed as it is (the same body to
the same path): every signed request is idempotent (join/refresh, leave) for that reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from client_sdk.identity import IdentityError, b64decode, b64encode


class Challenges:
    def __init__(self, secret: bytes, lifetime: float) -> None:
        self._key = hashlib.sha256(b"natkit challenge\n" + secret).digest()
        self.lifetime = lifetime

    def _mac(self, issued: bytes, nonce: bytes) -> bytes:
        return hmac.new(self._key, issued + nonce, hashlib.sha256).digest()[:16]

    def issue(self, now: float) -> str:
        issued = int(now).to_bytes(8, "big")
        nonce = os.urandom(16)
        return ".".join(b64encode(part) for part in (issued, nonce, self._mac(issued, nonce)))

    def check(self, challenge: str, now: float) -> str | None:
        """Why ``challenge`` is not acceptable now, or ``None``."""
        parts = challenge.split(".")
        if len(parts) != 3:
            return "challenge is malformed"
        try:
            issued = b64decode(parts[0], what="challenge", size=8)
            nonce = b64decode(parts[1], what="challenge", size=16)
            mac = b64decode(parts[2], what="challenge", size=16)
        except IdentityError:
            return "challenge is malformed"
        if not hmac.compare_digest(mac, self._mac(issued, nonce)):
            return "challenge was not issued here"
        age = now - int.from_bytes(issued, "big")
        if age > self.lifetime:
            return "challenge expired: get a new one"
        if age < -5:
            return "challenge is from the future"
        return None
