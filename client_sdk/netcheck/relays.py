"""The relays a rendezvous server offers, and the STUN round trip to each.

``GET /v1/turn-credentials`` (signed by a peer identity, as every request that hands out
something is: ``X-Natkit-Key``, ``X-Natkit-Challenge`` from ``GET /v1/challenge``, and
``X-Natkit-Signature`` over the challenge, method, path with query and body digest; see
``client_sdk.identity``) answers ``{"username", "password", "ttl", "uris"}``: the URIs
of up to three live relays (``turn:``, ``turns:`` or ``stun:``). netcheck only needs the
URIs; an ephemeral identity signs when the caller has none.

Latency: three Binding requests over UDP to each distinct host:port of the ``turn:`` and
``stun:`` URIs (natkit relay and coturn answer STUN on their TURN ports; a
``?transport=tcp`` URI is measured at the same port over UDP), one after another without
retransmission (a retransmitted request's round trip is ambiguous, RFC 6298 §5), the
median reported. A relay silent for ``relay_timeout`` is not asked twice more.
``turns:``/``stuns:`` (TLS only) get no figure.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from client_sdk.identity import (
    CHALLENGE_HEADER,
    KEY_HEADER,
    SIGNATURE_HEADER,
    Identity,
    b64encode,
    request_fields,
)
from client_sdk.netcheck.report import NetcheckError, RelayLatency
from client_sdk.netcheck.runner import Runner
from client_sdk.netcheck.servers import ResolvedServer, ServerSpec, resolve, split_host_port
from client_sdk.netcheck.stun import Address
from client_sdk.netcheck.transport import Schedule

CREDENTIALS_PATH = "/v1/turn-credentials"
PROBES = 3
_DEFAULT_PORTS = {"stun": 3478, "turn": 3478, "stuns": 5349, "turns": 5349}


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where a relay URI (RFC 7064 ``stun:``, RFC 7065 ``turn:``) points."""

    uri: str
    scheme: str
    host: str
    port: int

    @property
    def udp(self) -> bool:
        """Whether STUN over UDP reaches it (not for the TLS-only schemes)."""
        return self.scheme in ("stun", "turn")


def parse_relay_uri(uri: str) -> RelayTarget | None:
    """``turn:host[:port][?transport=udp|tcp]``, ``turns:``, ``stun:``, ``stuns:``; None
    for anything else."""
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in _DEFAULT_PORTS:
        return None
    hostport = rest.split("?", 1)[0]
    try:
        host, port = split_host_port(hostport, _DEFAULT_PORTS[scheme], what="relay URI")
    except NetcheckError:
        return None
    return RelayTarget(uri, scheme, host, port)


def api_base(url: str) -> str:
    """The rendezvous URL without a trailing ``/`` or ``/v1`` (``natkit up`` prints
    ``http://127.0.0.1:8470/v1``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise NetcheckError(f"rendezvous URL {url!r}: expected http://HOST:PORT or https://...")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _problem(status: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"HTTP {status} {error.get('code', '')}: {error.get('message', '')}".strip()
    return f"HTTP {status}"


async def fetch_relay_uris(
    url: str,
    *,
    identity: Identity | None = None,
    region: str = "",
    token: str | None = None,
    timeout: float = 3.0,
) -> list[str]:
    """The relay URIs ``GET /v1/turn-credentials`` hands a peer; NetcheckError with the
    server's reason when it refuses (or cannot be reached)."""
    import aiohttp
    import yarl

    base = api_base(url)
    signer = identity if identity is not None else Identity.generate()
    path = CREDENTIALS_PATH + (f"?region={quote(region, safe='')}" if region else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(f"{base}/v1/challenge", headers=headers) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise NetcheckError(f"GET /v1/challenge: {_problem(response.status, body)}")
            challenge = body.get("challenge") if isinstance(body, dict) else None
            if not isinstance(challenge, str):
                raise NetcheckError("GET /v1/challenge: no challenge in the answer")
            signature = signer.sign(*request_fields("GET", path, b"", challenge))
            signed = {
                **headers,
                KEY_HEADER: b64encode(signer.public_key),
                CHALLENGE_HEADER: challenge,
                SIGNATURE_HEADER: b64encode(signature),
            }
            target = yarl.URL(base + path, encoded=True)  # sent as signed, not re-quoted
            async with http.get(target, headers=signed) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise NetcheckError(f"GET {path}: {_problem(response.status, body)}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NetcheckError(f"rendezvous {base}: {exc or type(exc).__name__}") from exc
    uris = body.get("uris") if isinstance(body, dict) else None
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        raise NetcheckError(f"GET {path}: no list of URIs in the answer")
    return list(uris)


async def _latency(runner: Runner, address: Address) -> float | None:
    """Median STUN round trip (ms) to ``address``: up to PROBES sequential probes."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        probe = await runner.socket(family)
    except OSError:
        return None
    once = Schedule((0.0,), runner.timing.relay_timeout)
    rtts: list[float] = []
    for _ in range(PROBES):
        answer = await runner.binding(probe, address, schedule=once)
        if answer is None:
            if not rtts:
                break  # silent: not worth two more timeouts
            continue
        rtts.append(answer.rtt * 1000)
    return round(statistics.median(rtts), 3) if rtts else None


async def measure_relays(
    runner: Runner, uris: Sequence[str], family: socket.AddressFamily, *, probe: bool = True
) -> tuple[RelayLatency, ...]:
    """Each URI with the latency of its host:port (every host:port measured once,
    concurrently). ``probe=False`` (UDP is blocked): the URIs, no figures."""
    targets = {uri: parse_relay_uri(uri) for uri in uris}
    endpoints = sorted(
        {(t.host, t.port) for t in targets.values() if t is not None and t.udp}, key=str
    )
    latency: dict[tuple[str, int], float | None] = dict.fromkeys(endpoints)
    if probe and endpoints:

        async def one(host: str, port: int) -> None:
            try:
                resolved = await resolve(ServerSpec(f"{host}:{port}", host, port))
            except NetcheckError:
                return
            address = _pick(resolved, family)
            if address is not None:
                latency[(host, port)] = await _latency(runner, address)

        await asyncio.gather(*(one(host, port) for host, port in endpoints))
    return tuple(
        RelayLatency(uri, None if t is None or not t.udp else latency[(t.host, t.port)])
        for uri, t in targets.items()
    )


def _pick(resolved: ResolvedServer, family: socket.AddressFamily) -> Address | None:
    other = socket.AF_INET6 if family == socket.AF_INET else socket.AF_INET
    return resolved.address(family) or resolved.address(other)


def preferred_relay(relays: Sequence[RelayLatency]) -> str | None:
    """The URI with the lowest latency (the rendezvous's order breaks ties)."""
    measured = [(r.latency_ms, i, r.uri) for i, r in enumerate(relays) if r.latency_ms is not None]
    return min(measured)[2] if measured else None
