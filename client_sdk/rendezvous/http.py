"""Signed calls to one rendezvous server's ``/v1`` HTTP API.

A request that changes state (join, leave) or hands something out (TURN credentials) is
signed: ``GET /v1/challenge`` gives a challenge, and the request carries ``X-Natkit-Key``,
``X-Natkit-Challenge`` and ``X-Natkit-Signature`` over ``request_fields`` (see
``client_sdk.identity``). A challenge is stateless and valid on the server that issued it
(and every instance sharing its ``--secret``) for ``expires_in`` seconds, so one is reused
until shortly before it expires; a ``bad_challenge`` refusal fetches a new one and tries
once more.

Every refusal is a ``RendezvousError`` with the server's ``{"error": {"code",
"message"}}`` and the HTTP status (``status=None``: no answer at all). A 429 with
``Retry-After`` is waited out and retried, up to ``rate_limit_retries`` times.

Answers are parsed field by field into frozen dataclasses: nothing the server sends is
trusted to have the documented shape (a malformed answer is ``RendezvousError`` with code
``bad_response``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import yarl

from client_sdk.identity import (
    CHALLENGE_HEADER,
    KEY_HEADER,
    SIGNATURE_HEADER,
    Identity,
    b64encode,
    request_fields,
)

__all__ = [
    "Candidate",
    "JoinResult",
    "PeerInfo",
    "PeerPage",
    "PeerSample",
    "RendezvousError",
    "RendezvousHttp",
    "Scalar",
    "SwarmStats",
    "TurnCredentials",
    "api_base",
    "check_peer_id",
    "check_swarm",
]

_T = TypeVar("_T")
Scalar: TypeAlias = str | int | float | bool
TransportProtocol = Literal["udp", "tcp"]
CandidateType = Literal["host", "srflx", "prflx", "relay"]

SWARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PEER_ID = re.compile(r"[a-z2-7]{32}")
_PROTOCOLS: tuple[TransportProtocol, ...] = ("udp", "tcp")
_TYPES: tuple[CandidateType, ...] = ("host", "srflx", "prflx", "relay")
CHALLENGE_MARGIN = 15.0  # seconds before a challenge's expiry it is no longer reused
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a peers answer of --max-numwant entries fits easily


class RendezvousError(Exception):
    """The rendezvous refused a request, or could not be reached.

    ``status``: the HTTP status (``None``: no HTTP answer -- connection refused, timeout,
    WebSocket trouble); ``code``: the server's error code (``unreachable``,
    ``rate_limited``, ``forbidden``, ...) or the client's own (``connection_failed``,
    ``bad_response``, ``timeout``, ``disconnected``, ``protocol``); ``retry_after``:
    seconds the server asked to wait (429)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        where = f" ({url})" if url else ""
        prefix = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{prefix}{code}: {message}{where}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.url = url

    @property
    def retriable_elsewhere(self) -> bool:
        """Whether another rendezvous instance might answer (the server is down or
        cannot reach its store), as opposed to a refusal every instance would repeat."""
        return (
            (self.status is None and self.code in ("connection_failed", "timeout"))
            or self.status in (502, 504)
            or self.code == "store_unavailable"
        )


def check_swarm(swarm: str) -> str:
    """A valid swarm name (as the server's path accepts it), else ``ValueError``."""
    if not isinstance(swarm, str) or not SWARM_NAME.fullmatch(swarm):
        raise ValueError(
            f"swarm {swarm!r}: 1-128 characters of A-Z a-z 0-9 . _ : -, starting alphanumeric"
        )
    return swarm


def check_peer_id(peer_id: str) -> str:
    if not isinstance(peer_id, str) or not PEER_ID.fullmatch(peer_id):
        raise ValueError(f"peer id {peer_id!r}: 32 characters of a-z 2-7")
    return peer_id


def api_base(url: str) -> str:
    """``http(s)://host:port[/prefix]`` without a trailing ``/`` or ``/v1``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"rendezvous URL {url!r}: expected http://HOST:PORT or https://...")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


# -- typed answers ---------------------------------------------------------------------


class _Malformed(ValueError):
    """An answer without the documented shape."""


def _field(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    # bool is an int to isinstance: an int field never accepts true/false.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Malformed(f"{key}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise _Malformed(f"{key}: expected {kind}, got {type(value).__name__}")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{what}: expected an object")
    return value


@dataclass(frozen=True, slots=True)
class Candidate:
    """An address a peer can be reached at (an ICE-style candidate)."""

    ip: str
    port: int
    protocol: TransportProtocol = "udp"
    type: CandidateType = "host"

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port, "protocol": self.protocol, "type": self.type}

    @classmethod
    def from_json(cls, value: Any) -> Candidate:
        """Parse a candidate from the server; ``ValueError`` when malformed."""
        body = _object(value, "candidate")
        ip = _field(body, "ip", str)
        port = _field(body, "port", int)
        protocol = body.get("protocol", "udp")
        kind = body.get("type", "host")
        if len(ip) > 45 or not 1 <= port <= 65535:
            raise _Malformed("candidate: ip or port out of range")
        for p in _PROTOCOLS:
            if protocol == p:
                for t in _TYPES:
                    if kind == t:
                        return cls(ip, port, p, t)
        raise _Malformed("candidate: unknown protocol or type")


def candidates_from_json(value: Any, limit: int = 16) -> tuple[Candidate, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise _Malformed(f"candidates: expected a list of at most {limit}")
    return tuple(Candidate.from_json(c) for c in value)


@dataclass(frozen=True, slots=True)
class JoinResult:
    joined: bool  # True: a new registration (201); False: a refresh (200)
    ttl: int  # seconds the registration lives unless refreshed
    peers: int  # peers in the swarm now


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One registration in a swarm."""

    peer_id: str
    public_key: str  # base64url Ed25519 public key
    candidates: tuple[Candidate, ...]
    nat: str | None
    metadata: Mapping[str, Scalar] = field(hash=False)
    expires_in: int

    @classmethod
    def from_json(cls, value: Any) -> PeerInfo:
        body = _object(value, "peer")
        peer_id = _field(body, "peer_id", str)
        if not PEER_ID.fullmatch(peer_id):
            raise _Malformed("peer_id: not a peer id")
        nat = body.get("nat")
        if nat is not None and not isinstance(nat, str):
            raise _Malformed("nat: expected a string or null")
        metadata = _object(body.get("metadata", {}), "metadata")
        for value_ in metadata.values():
            if not isinstance(value_, str | int | float | bool):
                raise _Malformed("metadata: values are strings, numbers or booleans")
        return cls(
            peer_id=peer_id,
            public_key=_field(body, "public_key", str),
            candidates=candidates_from_json(body.get("candidates", [])),
            nat=nat,
            metadata=dict(metadata),
            expires_in=_field(body, "expires_in", int),
        )


@dataclass(frozen=True, slots=True)
class PeerSample:
    """``GET /v1/swarms/{swarm}/peers``: a random sample, and how many peers there are."""

    peers: tuple[PeerInfo, ...]
    total: int


@dataclass(frozen=True, slots=True)
class PeerPage:
    """``GET /v1/swarms/{swarm}/peers?cookie=``: registrations since the cookie, oldest
    first; pass ``cookie`` back for the next page."""

    peers: tuple[PeerInfo, ...]
    cookie: str


@dataclass(frozen=True, slots=True)
class SwarmStats:
    swarm: str
    peers: int
    seeders: int
    leechers: int


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """TURN REST API credentials (the shape of WebRTC's ``RTCIceServer``)."""

    username: str
    password: str
    ttl: int
    uris: tuple[str, ...]


def _peers(body: Mapping[str, Any]) -> tuple[PeerInfo, ...]:
    entries = body.get("peers")
    if not isinstance(entries, list):
        raise _Malformed("peers: expected a list")
    return tuple(PeerInfo.from_json(entry) for entry in entries)


# -- the client -------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _Challenge:
    text: str
    fetched: float  # monotonic
    lifetime: float


class RendezvousHttp:
    """The ``/v1`` API of one rendezvous server, as ``identity``.

    ``session``: an ``aiohttp.ClientSession`` to share (else one is made and closed by
    ``close``); ``token``: a tenant's API key or JWT (``Authorization: Bearer``);
    ``rate_limit_retries``: how many 429s with ``Retry-After`` are waited out (each wait
    at most ``max_retry_after`` s) before the 429 is raised."""

    def __init__(
        self,
        url: str,
        identity: Identity,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        rate_limit_retries: int = 2,
        max_retry_after: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = api_base(url)
        self.identity = identity
        self.token = token
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = max(0, rate_limit_retries)
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._challenge: _Challenge | None = None

    async def __aenter__(self) -> RendezvousHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._own_session:
                raise RendezvousError("closed", "the shared HTTP session is closed", url=self.base)
            self._session = aiohttp.ClientSession()
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- the API ------------------------------------------------------------------------

    async def challenge(self) -> str:
        """A fresh challenge from ``GET /v1/challenge``."""
        _, body, _ = await self._request("GET", "/v1/challenge", signed=False)
        text, lifetime = self._parse("/v1/challenge", body, challenge_answer)
        self._challenge = _Challenge(text, self._clock(), lifetime)
        return text

    async def join(
        self,
        swarm: str,
        candidates: Sequence[Candidate] = (),
        nat: str | None = None,
        metadata: Mapping[str, Scalar] | None = None,
        ttl: int | None = None,
        seeder: bool = False,
    ) -> JoinResult:
        """Register (or refresh) this peer in ``swarm``."""
        body: dict[str, Any] = {
            "candidates": [c.to_json() for c in candidates],
            "metadata": dict(metadata or {}),
            "seeder": seeder,
        }
        if nat is not None:
            body["nat"] = nat
        if ttl is not None:
            body["ttl"] = ttl
        path = f"/v1/swarms/{check_swarm(swarm)}/peers/{self.identity.peer_id}"
        payload = json.dumps(body, separators=(",", ":")).encode()
        return self._parse(path, await self._call("PUT", path, payload), _join)

    async def leave(self, swarm: str) -> None:
        """Remove this peer from ``swarm`` (idempotent)."""
        path = f"/v1/swarms/{check_swarm(swarm)}/peers/{self.identity.peer_id}"
        await self._call("DELETE", path, b"")

    async def peers(
        self, swarm: str, numwant: int | None = None, exclude: str | None = None
    ) -> PeerSample:
        """A random sample of ``numwant`` live peers (the server's default when None),
        without ``exclude``."""
        query = []
        if numwant is not None:
            query.append(f"numwant={int(numwant)}")
        if exclude is not None:
            query.append(f"exclude={check_peer_id(exclude)}")
        path = f"/v1/swarms/{check_swarm(swarm)}/peers" + ("?" + "&".join(query) if query else "")
        return self._parse(path, await self._call("GET", path, b"", signed=False), _sample)

    async def poll(self, swarm: str, cookie: str = "", limit: int | None = None) -> PeerPage:
        """Registrations since ``cookie`` ("" from the start), oldest first, and the
        cookie for the next call (libp2p rendezvous DISCOVER paging)."""
        if cookie and not cookie.isdigit():
            raise ValueError("cookie: pass back the cookie of the last answer")
        query = f"cookie={cookie}" + (f"&limit={int(limit)}" if limit is not None else "")
        path = f"/v1/swarms/{check_swarm(swarm)}/peers?{query}"
        return self._parse(path, await self._call("GET", path, b"", signed=False), _page)

    async def stats(self, swarm: str) -> SwarmStats:
        path = f"/v1/swarms/{check_swarm(swarm)}"
        return self._parse(path, await self._call("GET", path, b"", signed=False), _stats)

    async def turn_credentials(self, region: str = "") -> TurnCredentials:
        """TURN REST credentials for this peer, relays of ``region`` first."""
        path = "/v1/turn-credentials" + (f"?region={quote(region, safe='')}" if region else "")
        return self._parse(path, await self._call("GET", path, b""), _turn)

    # -- plumbing -----------------------------------------------------------------------

    def _parse(self, path: str, body: Any, reader: Callable[[Mapping[str, Any]], _T]) -> _T:
        """``reader``'s typed answer; ``RendezvousError("bad_response")`` for a body
        without the documented shape."""
        try:
            return reader(_object(body, "answer"))
        except (_Malformed, ValueError) as exc:
            raise RendezvousError("bad_response", f"{path}: {exc}", url=self.base) from None

    async def _signed_headers(
        self, method: str, path: str, body: bytes, fresh: bool
    ) -> dict[str, str]:
        cached = self._challenge
        if (
            fresh
            or cached is None
            or self._clock() - cached.fetched > cached.lifetime - CHALLENGE_MARGIN
        ):
            challenge = await self.challenge()
        else:
            challenge = cached.text
        signature = self.identity.sign(*request_fields(method, path, body, challenge))
        return {
            KEY_HEADER: b64encode(self.identity.public_key),
            CHALLENGE_HEADER: challenge,
            SIGNATURE_HEADER: b64encode(signature),
        }

    async def _call(self, method: str, path: str, body: bytes, *, signed: bool = True) -> Any:
        """The JSON answer of a (signed) request; a bad challenge is fetched anew once."""
        try:
            return (await self._request(method, path, body=body, signed=signed))[1]
        except RendezvousError as exc:
            if not signed or exc.code != "bad_challenge":
                raise
        return (await self._request(method, path, body=body, signed=signed, fresh=True))[1]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        signed: bool,
        fresh: bool = False,
    ) -> tuple[int, Any, Mapping[str, str]]:
        attempt = 0
        while True:
            headers = self._headers()
            if signed:
                headers.update(await self._signed_headers(method, path, body, fresh))
            if body:
                headers["Content-Type"] = "application/json"
            try:
                return await self._once(method, path, body, headers)
            except RendezvousError as exc:
                if exc.status != 429 or exc.retry_after is None or attempt >= self._retries:
                    raise
                attempt += 1
                await self._sleep(min(exc.retry_after, self._max_retry_after))

    async def _once(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Any, Mapping[str, str]]:
        target = yarl.URL(self.base + path, encoded=True)  # sent exactly as signed
        try:
            async with self._http().request(
                method, target, data=body or None, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status, answer_headers = response.status, response.headers
        except TimeoutError:
            raise RendezvousError(
                "timeout", f"{method} {path}: no answer in time", url=self.base
            ) from None
        except aiohttp.ClientError as exc:
            raise RendezvousError(
                "connection_failed", f"{method} {path}: {exc or type(exc).__name__}", url=self.base
            ) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise RendezvousError("bad_response", f"{path}: answer too large", url=self.base)
        decoded: Any = None
        if raw:
            try:
                decoded = json.loads(raw)
            except (ValueError, RecursionError):
                decoded = None
        if 200 <= status < 300:
            if raw and decoded is None:
                raise RendezvousError(
                    "bad_response", f"{method} {path}: not JSON", status=status, url=self.base
                )
            return status, decoded, answer_headers
        code, message = "http_error", f"{method} {path} refused"
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if isinstance(error, dict):
            if isinstance(error.get("code"), str):
                code = error["code"][:64]
            if isinstance(error.get("message"), str):
                message = error["message"][:1024]
        raise RendezvousError(
            code,
            message,
            status=status,
            retry_after=_retry_after(answer_headers.get("Retry-After")),
            url=self.base,
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds; an HTTP date is not used by
    this server and counts as absent)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def challenge_answer(body: Mapping[str, Any]) -> tuple[str, float]:
    """(challenge, seconds it is valid) of ``GET /v1/challenge``."""
    text = _field(body, "challenge", str)
    lifetime = float(_field(body, "expires_in", (int, float)))
    if "\n" in text or not 0 < len(text) <= 256 or not 0 < lifetime <= 86400:
        raise _Malformed("a malformed challenge")
    return text, lifetime


def _join(body: Mapping[str, Any]) -> JoinResult:
    return JoinResult(
        joined=_field(body, "joined", bool),
        ttl=_field(body, "ttl", int),
        peers=_field(body, "peers", int),
    )


def _sample(body: Mapping[str, Any]) -> PeerSample:
    return PeerSample(peers=_peers(body), total=_field(body, "total", int))


def _page(body: Mapping[str, Any]) -> PeerPage:
    return PeerPage(peers=_peers(body), cookie=_field(body, "cookie", str))


def _stats(body: Mapping[str, Any]) -> SwarmStats:
    return SwarmStats(
        swarm=_field(body, "swarm", str),
        peers=_field(body, "peers", int),
        seeders=_field(body, "seeders", int),
        leechers=_field(body, "leechers", int),
    )


def _turn(body: Mapping[str, Any]) -> TurnCredentials:
    uris = _field(body, "uris", list)
    if not all(isinstance(uri, str) for uri in uris):
        raise _Malformed("uris: expected strings")
    return TurnCredentials(
        username=_field(body, "username", str),
        password=_field(body, "password", str),
        ttl=_field(body, "ttl", int),
        uris=tuple(uris),
    )
