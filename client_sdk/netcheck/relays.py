"""The relays a rendezvous server offers, and the STUN round trip to each.

``GET /v1/turn-credentials`` (signed by a peer identity, as every request that hands out
something is: ``X-Natkit-Key``, ``X-Natkit-Challenge`` from ``GET /v1/challenge``, and
``X-Natkit-Signature`` over the challenge, method, path with query and body digest; see
``client_sdk.identity``) answers ``{"username", "password", "ttl", "uris"}``: the URIs
of up to three live relays (``turn:``, ``turns:`` or ``stun:``). netcheck only needs the
URIs (``client_sdk.rendezvous`` makes the signed call); an ephemeral identity signs when
the caller has none.

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

from client_sdk.identity import Identity
from client_sdk.netcheck.report import NetcheckError, RelayLatency
from client_sdk.netcheck.runner import Runner
from client_sdk.netcheck.servers import ResolvedServer, ServerSpec, resolve, split_host_port
from client_sdk.netcheck.stun import Address
from client_sdk.netcheck.transport import Schedule
from client_sdk.rendezvous.http import RendezvousError, RendezvousHttp
from client_sdk.rendezvous.http import api_base as http_api_base

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
    """The rendezvous URL as ``client_sdk.rendezvous`` reads it; NetcheckError when it
    cannot work."""
    try:
        return http_api_base(url)
    except ValueError as exc:
        raise NetcheckError(str(exc)) from None


async def fetch_relay_uris(
    url: str,
    *,
    identity: Identity | None = None,
    region: str = "",
    token: str | None = None,
    timeout: float = 3.0,
) -> list[str]:
    """The relay URIs ``GET /v1/turn-credentials`` hands a peer (a signed request, as
    ``identity`` or a throwaway one); NetcheckError with the server's reason when it
    refuses, or cannot be reached."""
    signer = identity if identity is not None else Identity.generate()
    try:
        async with RendezvousHttp(
            url, signer, token=token, timeout=timeout, rate_limit_retries=0
        ) as rendezvous:
            credentials = await rendezvous.turn_credentials(region)
    except RendezvousError as exc:
        raise NetcheckError(f"rendezvous: {exc}") from exc
    except ValueError as exc:
        raise NetcheckError(f"rendezvous {url!r}: {exc}") from exc
    return list(credentials.uris)


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
