"""``client_sdk.Peer``: a peer of a natkit deployment (issue #6).

The identity (generated, given, or kept in a file), everything that goes through the
rendezvous -- swarms (``join``, ``leave``, ``peers``) and signaling (``signal``,
``signals()``, the punch brokering) -- and connections: ``connect(peer_id)`` /
``accept()`` (or ``async for conn in peer``) give a ``PeerConnection``, end-to-end
encrypted, over a hole-punched direct UDP path or, where none is found, a TURN relay
(``client_sdk.connect``).

    urls = ["https://rv1.example", "https://rv2.example"]
    async with Peer(urls, identity_file="peer.key") as peer:
        await peer.join("room-42", candidates=[Candidate("192.0.2.7", 4000)])
        for info in (await peer.peers("room-42")).peers:
            await peer.signal(info.peer_id, {"hello": peer.peer_id})
        async for event in peer.signals():
            ...

    async with Peer(url, stun="203.0.113.1:3478") as peer:   # dialler
        async with await peer.connect(other_id) as conn:
            await conn.send(b"hi")
            reply = await conn.recv()
    async with Peer(url, stun="203.0.113.1:3478") as peer:   # accepter
        async for conn in peer:
            ...
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client_sdk.connect import (
    ConnectError,
    ConnectionClosed,
    Connector,
    PeerConnection,
    PunchConfig,
)
from client_sdk.connect.connector import parse_stun_servers
from client_sdk.identity import Identity, IdentityError
from client_sdk.rendezvous.client import Backoff, RendezvousClient, Subscription
from client_sdk.rendezvous.http import (
    Candidate,
    JoinResult,
    PeerSample,
    Scalar,
    TurnCredentials,
)
from client_sdk.rendezvous.signaling import (
    IncomingSignal,
    ProtocolError,
    PunchNow,
    PunchRequest,
    ServerError,
)

__all__ = ["ConnectError", "Peer", "PeerConnection", "load_identity"]

log = logging.getLogger(__name__)

SIGNAL_EVENTS: tuple[type, ...] = (
    IncomingSignal,
    PunchRequest,
    PunchNow,
    ServerError,
    ProtocolError,
)


def load_identity(path: str | os.PathLike[str]) -> Identity:
    """The identity kept in ``path`` (an unencrypted PKCS#8 PEM Ed25519 key, as ``openssl
    genpkey -algorithm ed25519`` writes); a new one, saved there with mode 0600, when the
    file does not exist. ``IdentityError`` for a file that holds something else."""
    file = Path(path)
    try:
        # O_EXCL: two processes starting together do not overwrite each other's key.
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_identity(file)
    identity = Identity.generate()
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        file.unlink(missing_ok=True)
        raise
    return identity


def _read_identity(file: Path) -> Identity:
    mode = file.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("identity file %s is readable by others (mode %o)", file, mode & 0o777)
    data = file.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{file}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{file}: not an Ed25519 key")
    return Identity(key)


class Peer:
    """A peer: its identity, its rendezvous client, and (later) its connections.

    ``rendezvous_urls``: one URL or several instances of one deployment (failover in
    order). ``identity`` or ``identity_file`` (loaded, or created with mode 0600); neither:
    a fresh identity each run. ``token``: a tenant's API key or JWT. ``connect_timeout``:
    how long ``async with`` waits for the first signaling connection (None: not at all).

    Connections: ``stun``, STUN servers (``"HOST:PORT"`` or a list; the relay answers
    STUN) that tell the connectivity socket its public address (none: host candidates
    only, enough on one network). ``punch_timeout``: how long to look for a direct path
    once both sides punch (then ``ConnectError``). ``answer_timeout``: how long
    ``connect`` waits for the other peer to accept. ``keepalive``: seconds between
    keepalives on an idle connection (holds the NAT mappings; below the shortest idle
    mapping lifetime netcheck measured: ``keepalive_for(report)``); ``idle_timeout``: a
    connection silent that long has ended (None: three keepalives). ``backlog``:
    accepted connections waiting for ``accept()``. ``relay``: fall back to a TURN relay
    (credentials from the rendezvous; ``relay_region``'s relays first) when no direct path
    is found; ``direct_grace``: seconds a direct punch still gets once the relay path is
    up (the connection then starts on the relay and upgrades when the punch succeeds).
    ``direct=False``: relay only, our addresses are never offered to the other peer.
    ``repunch_attempts``: how many times a dialler punches again for a connection left
    without a direct path (its punch failed, or the path died), first after
    ``repunch_after`` seconds, then waiting twice as long each time.
    The other keywords go to ``RendezvousClient``."""

    def __init__(
        self,
        rendezvous_urls: str | Sequence[str],
        *,
        identity: Identity | None = None,
        identity_file: str | os.PathLike[str] | None = None,
        token: str | None = None,
        connect_timeout: float | None = 10.0,
        backoff: Backoff | None = None,
        stun: str | Sequence[str] | None = None,
        punch_timeout: float = 5.0,
        answer_timeout: float = 10.0,
        keepalive: float = 25.0,
        idle_timeout: float | None = None,
        backlog: int = 16,
        relay: bool = True,
        relay_region: str = "",
        direct_grace: float = 1.0,
        direct: bool = True,
        repunch_attempts: int = 4,
        repunch_after: float = 5.0,
        **client_options: Any,
    ) -> None:
        if identity is not None and identity_file is not None:
            raise ValueError("give identity or identity_file, not both")
        if identity is None:
            identity = load_identity(identity_file) if identity_file else Identity.generate()
        self.identity = identity
        self.peer_id = identity.peer_id
        self.connect_timeout = connect_timeout
        self.rendezvous = RendezvousClient(
            rendezvous_urls, identity, token=token, backoff=backoff, **client_options
        )
        config = PunchConfig(timeout=punch_timeout, keepalive=keepalive, idle_timeout=idle_timeout)
        self.connector = Connector(
            identity,
            self.rendezvous,
            stun=parse_stun_servers(stun),
            config=config,
            answer_timeout=answer_timeout,
            backlog=backlog,
            relay=relay,
            relay_region=relay_region,
            direct_grace=direct_grace,
            direct=direct,
            repunch_attempts=repunch_attempts,
            repunch_after=repunch_after,
        )

    async def __aenter__(self) -> Peer:
        await self.rendezvous.start()
        if self.connect_timeout is not None:
            try:
                await self.rendezvous.wait_connected(self.connect_timeout)
            except BaseException:
                await self.rendezvous.close(leave=False)
                raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection, leave every swarm (best effort) and disconnect."""
        await self.connector.close()
        await self.rendezvous.close()

    # -- swarms -------------------------------------------------------------------------

    async def join(
        self,
        swarm: str,
        *,
        candidates: Sequence[Candidate] = (),
        nat: str | None = None,
        metadata: Mapping[str, Scalar] | None = None,
        ttl: int | None = None,
        seeder: bool = False,
    ) -> JoinResult:
        """Register in ``swarm``; kept registered (refreshed, re-joined after a
        reconnection) until ``leave`` or the end of the ``async with``."""
        return await self.rendezvous.join(
            swarm, candidates=candidates, nat=nat, metadata=metadata, ttl=ttl, seeder=seeder
        )

    async def leave(self, swarm: str) -> None:
        await self.rendezvous.leave(swarm)

    async def peers(self, swarm: str, *, numwant: int | None = None) -> PeerSample:
        """A random sample of the other live peers of ``swarm``."""
        return await self.rendezvous.peers(swarm, numwant=numwant, exclude=self.peer_id)

    async def turn_credentials(self, region: str = "") -> TurnCredentials:
        return await self.rendezvous.turn_credentials(region)

    # -- signaling (the connectivity layer's hooks) -------------------------------------

    async def signal(self, peer_id: str, data: Any, *, timeout: float | None = 10.0) -> None:
        """Send ``data`` (JSON, at most 16 KiB) to ``peer_id``; returns once delivered,
        ``RendezvousError`` (code ``unreachable``) when it is connected nowhere."""
        await self.rendezvous.signal(peer_id, data, timeout=timeout)

    def signals(self, *, maxsize: int = 1024) -> Subscription:
        """Incoming signaling events -- ``IncomingSignal``, ``PunchRequest``,
        ``PunchNow``, ``ServerError``, ``ProtocolError`` -- as an async iterator (``async
        with`` it, or ``close()`` it, to stop receiving)."""
        return self.rendezvous.subscribe(SIGNAL_EVENTS, maxsize=maxsize)

    def events(self, *, maxsize: int = 1024) -> Subscription:
        """Every event: the signaling ones and the connection's (``Connected``,
        ``Disconnected``, ``Registered``, ``RegistrationFailed``)."""
        return self.rendezvous.subscribe(None, maxsize=maxsize)

    # -- connections (client_sdk.connect) ------------------------------------------------

    async def connect(self, peer_id: str) -> PeerConnection:
        """A connection to ``peer_id`` over a hole-punched direct path, or the relay;
        ``ConnectError`` when the peer is unreachable, does not accept, or no path is
        found in time."""
        return await self.connector.connect(peer_id)

    def listen(self) -> None:
        """Start accepting incoming connections (``accept`` and ``async for`` do it too);
        until then, punch requests from other peers are ignored."""
        self.connector.listen()

    async def accept(self) -> PeerConnection:
        """The next incoming connection (``ConnectionClosed`` once the peer is closed)."""
        return await self.connector.accept()

    def __aiter__(self) -> AsyncIterator[PeerConnection]:
        return self._incoming()

    async def _incoming(self) -> AsyncIterator[PeerConnection]:
        """Incoming connections until the peer closes."""
        while True:
            try:
                conn = await self.accept()
            except ConnectionClosed:
                return
            yield conn
