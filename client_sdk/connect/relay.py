"""The relay path: a TURN allocation (RFC 8656) carrying the same secure session as a
direct path, for the pairs of NATs no hole punch gets through (issue #6).

**Relay to relay.** Each peer allocates on a relay its rendezvous names (TURN REST
credentials from ``GET /v1/turn-credentials``) and offers the relayed address as a
``relay`` candidate. The relay punch runs between the two allocations: our ``RelaySocket``
sends to the peer's relayed address, the peer's to ours. So each side only ever talks to
its own TURN server, client to server -- over UDP, or over TCP when UDP is blocked
(RFC 8656 §3.1) -- and the path works whatever either NAT does. Sending to a peer installs
the permission for its relay's IP (RFC 8656 §9: permissions are per IP, not per port) and
binds a channel (§12), so the peer's datagrams are let in as soon as ours went out. The
price is two relay hops instead of one (ICE would prefer relay-to-reflexive pairs), paid
only on paths that no direct punch found; the gain is that the relay path never depends on
either side's filtering.

The TURN client is aioice's (``aioice.turn``: allocation, refresh, permissions, channel
binding, TCP framing; the DESIGN's "reuse aioice where it does the job"). ``RelaySocket``
wraps its transport as one more owner of ``Link``s: datagrams the peer sent through its
relay arrive here with that relayed address as their source and are demultiplexed exactly
like the connectivity socket's.

Which server: ``turn:`` URIs (RFC 7065) from the credentials, in the rendezvous's order
(its preferred region, then the least loaded), UDP ones first unless UDP is known to be
blocked, started ``STAGGER`` apart (Happy Eyeballs); each attempt is bounded
(``ATTEMPT_TIMEOUT``). ``turns:`` (TLS) is tried as TCP with TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from asyncio import FIRST_COMPLETED
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from client_sdk.connect.candidates import Address, addresses_of
from client_sdk.connect.udp import ConnectivitySocket
from client_sdk.rendezvous.http import Candidate

__all__ = [
    "ATTEMPT_TIMEOUT",
    "STAGGER",
    "RelaySocket",
    "TurnServer",
    "parse_turn_uri",
    "relay_targets",
    "turn_servers",
]

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 3.0  # seconds for one allocation attempt (connect, 401, Allocate)
STAGGER = 0.25  # seconds between the starts of two attempts (RFC 8305 §5 recommends 250 ms)
MAX_RELAY_TARGETS = 4  # relayed addresses of a peer we probe


@dataclass(frozen=True)
class TurnServer:
    """One TURN server to allocate on: ``transport`` between us and it."""

    host: str
    port: int
    transport: Literal["udp", "tcp"]
    tls: bool = False

    def __str__(self) -> str:
        scheme = "turns" if self.tls else "turn"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}:{host}:{self.port}?transport={self.transport}"


def parse_turn_uri(uri: str) -> TurnServer | None:
    """A ``turn:`` or ``turns:`` URI (RFC 7065 §3.1: ``turn:host[:port][?transport=udp|tcp]``,
    IPv6 in brackets) as a ``TurnServer``; None for anything else (``stun:``, malformed)."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("turn", "turns"):
        return None
    tls = scheme == "turns"
    hostport, _, query = rest.partition("?")
    transport = "tcp" if tls else "udp"
    if query:
        values = parse_qs(query).get("transport")
        if values:
            transport = values[0].lower()
    if transport not in ("udp", "tcp") or (tls and transport != "tcp"):
        return None
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            return None
        port_text = tail[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        return None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    else:
        port = 5349 if tls else 3478  # RFC 8656 §16
    return TurnServer(host, port, "tcp" if transport == "tcp" else "udp", tls)


def turn_servers(uris: Sequence[str], *, udp_first: bool = True) -> list[TurnServer]:
    """The TURN servers among ``uris``, in their order, UDP ones first (or TCP ones first
    when ``udp_first`` is false: UDP is blocked here), without duplicates."""
    servers = list(dict.fromkeys(s for s in map(parse_turn_uri, uris) if s is not None))
    first = "udp" if udp_first else "tcp"
    return sorted(servers, key=lambda s: s.transport != first)  # stable


def relay_targets(candidates: Sequence[Any]) -> tuple[Address, ...]:
    """The relayed addresses among a peer's ``candidates`` (from the network): UDP,
    type ``relay``, checked as every candidate is; at most ``MAX_RELAY_TARGETS``."""
    return addresses_of(candidates, ("relay",), MAX_RELAY_TARGETS)


class _Receiver(asyncio.DatagramProtocol):
    """What aioice's TURN client hands the peers' datagrams to."""

    def __init__(self, owner: RelaySocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # A refused permission/channel (403 for a peer the relay's policy denies) or a
        # send on a lost allocation: the punch toward that target just finds nothing.
        log.debug("TURN: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class RelaySocket(ConnectivitySocket):
    """A TURN allocation as an owner of links (see the module docstring): ``relayed`` is
    the address peers send to; ``server`` the TURN server it lives on."""

    def __init__(self, server: TurnServer) -> None:
        super().__init__()
        self.server = server
        self.relayed: Address = ("", 0)
        self._turn: Any = None  # aioice.turn.TurnTransport
        self._lost_it = False

    @classmethod
    async def allocate(
        cls,
        servers: Sequence[TurnServer],
        username: str,
        password: str,
        *,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        stagger: float = STAGGER,
    ) -> RelaySocket:
        """An allocation on the first of ``servers`` to grant one. Attempts start in order,
        each ``stagger`` seconds after the last unless it failed sooner (RFC 8305's Happy
        Eyeballs: a UDP server that never answers -- UDP blocked -- delays the TCP one by
        ``stagger``, not by a whole timeout); each is bounded by ``attempt_timeout``, the
        first to succeed wins and the others are abandoned (an allocation that a loser
        still got is deleted). ``ConnectionError`` naming every failure otherwise."""
        loop = asyncio.get_running_loop()
        waiting = list(servers)
        attempts: dict[asyncio.Task[RelaySocket], TurnServer] = {}
        failures: list[str] = []

        def launch() -> None:
            server = waiting.pop(0)
            task = loop.create_task(cls._attempt(server, username, password, attempt_timeout))
            attempts[task] = server

        try:
            while waiting or attempts:
                if not attempts:
                    launch()
                done, _ = await asyncio.wait(
                    attempts, timeout=stagger if waiting else None, return_when=FIRST_COMPLETED
                )
                if not done:
                    launch()
                for task in done:
                    server = attempts.pop(task)
                    error = task.exception()
                    if error is None:
                        return task.result()
                    failures.append(f"{server}: {error}")
        finally:
            for task in attempts:
                task.cancel()
            for task in attempts:
                with contextlib.suppress(BaseException):
                    (await task).close()  # a late success: its allocation is not wanted
        raise ConnectionError("no TURN allocation: " + ("; ".join(failures) or "no server"))

    @classmethod
    async def _attempt(
        cls, server: TurnServer, username: str, password: str, timeout: float
    ) -> RelaySocket:
        from aioice.turn import create_turn_endpoint

        owner = cls(server)
        context = ssl.create_default_context() if server.tls else None
        try:
            async with asyncio.timeout(timeout):
                turn, _ = await create_turn_endpoint(
                    lambda: _Receiver(owner),
                    (server.host, server.port),
                    username,
                    password,
                    ssl=context,
                    transport=server.transport,
                )
        except TimeoutError:
            raise ConnectionError(f"no answer within {timeout:g} s") from None
        except (OSError, ConnectionError, ValueError) as exc:
            raise ConnectionError(str(exc) or type(exc).__name__) from None
        relayed = turn.get_extra_info("sockname")
        owner._turn = turn
        owner.relayed = (str(relayed[0]), int(relayed[1]))
        owner.local_port = owner.relayed[1]
        log.info("TURN allocation %s:%d on %s", *owner.relayed, server)
        return owner

    def candidate(self) -> Candidate:
        return Candidate(self.relayed[0], self.relayed[1], "udp", "relay")

    @property
    def closed(self) -> bool:
        return self._turn is None or self._lost_it

    def sendto(self, datagram: bytes, addr: Address) -> None:
        if not self.closed:
            self._turn.sendto(datagram, addr)  # binds the channel first when needed

    def close(self) -> None:
        super().close()
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.close()  # deletes the allocation (a Refresh with lifetime 0), in a task

    def _lost(self) -> None:
        self._lost_it = True
        super()._lost()
