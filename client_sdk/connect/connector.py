"""``Connector``: ``Peer.connect``/``Peer.accept`` -- the rendezvous's punch brokering,
candidates, and the punch on the connectivity socket (issue #6, the direct path).

The procedure (the rendezvous side is ``rendezvous/signaling/punch.py``, DCUtR-style):

1. **Candidates, fresh for each attempt.** The connectivity socket (one per peer, opened
   on first use) asks each STUN server of ``stun`` for its own reflexive address (up to
   1.5 s: 0, 0.25, 0.75 s sends; a silent server just adds none) and adds its host
   addresses (``candidates.local_candidates``).
2. **Dialler**: a ``Punch`` for the peer is registered on the socket (from now on its
   message 1s reach us), then ``punch(peer, candidates)`` goes to the rendezvous, which
   forwards it as a ``PunchRequest`` with our round trip. The answer is ``punch_now``
   with the peer's candidates and a delay.
   **Accepter** (``listen``/``accept``): each ``PunchRequest`` gets its own candidates
   and a registered ``Punch``, then ``punch_accept(sender, id, candidates, rtt)``; its
   ``punch_now`` carries the delay (the candidates were in the request).
3. Both wait ``delay_ms`` -- chosen by the server so both act at the same moment -- and
   start probing (``client_sdk.connect.punch``: the Noise handshake to every candidate,
   first authenticated answer fixes the path).
4. The dialler gets a ``PeerConnection`` when the path is confirmed; the accepter queues
   it for ``accept()`` (``backlog`` at most; beyond that a new one is closed).

A listening peer answers every punch request (at most ``MAX_ACCEPTING`` at once): who
may connect is the app's decision, on ``PeerConnection.remote_peer_id``, which the
handshake has proven.

Every failure of ``connect`` is a ``ConnectError``: the peer connected nowhere
(``unreachable``), no ``punch_now`` within ``answer_timeout`` (it does not accept), or no
direct path within ``PunchConfig.timeout`` after the moment to punch. The relay fallback
will go between the last failure and the error.

Not yet: a simultaneous ``connect`` from both sides to each other (each would hold a
punch for the other; one fails with ``ConnectError``), port prediction for symmetric NATs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from client_sdk.connect.candidates import (
    Address,
    local_candidates,
    local_ipv4_addresses,
    punch_targets,
)
from client_sdk.connect.connection import ConnectError, ConnectionClosed, PeerConnection
from client_sdk.connect.punch import Punch, PunchConfig
from client_sdk.connect.udp import ConnectivitySocket, Link
from client_sdk.identity import Identity
from client_sdk.netcheck.report import NetcheckError
from client_sdk.netcheck.servers import ServerSpec, parse_server, resolve
from client_sdk.rendezvous.client import RendezvousClient, Subscription
from client_sdk.rendezvous.http import Candidate, RendezvousError
from client_sdk.rendezvous.signaling import PunchRequest

__all__ = ["Connector", "parse_stun_servers"]

log = logging.getLogger(__name__)

MAX_ACCEPTING = 32  # punch requests handled at once; more are ignored


def parse_stun_servers(stun: str | Sequence[str] | None) -> tuple[ServerSpec, ...]:
    """``"HOST:PORT"`` or a list of them; ``ValueError`` for a malformed one."""
    if stun is None:
        return ()
    texts = [stun] if isinstance(stun, str) else list(stun)
    try:
        return tuple(parse_server(text) for text in texts)
    except NetcheckError as exc:
        raise ValueError(str(exc)) from None


class Connector:
    """See the module docstring. ``Peer`` owns one."""

    def __init__(
        self,
        identity: Identity,
        rendezvous: RendezvousClient,
        *,
        stun: Sequence[ServerSpec] = (),
        config: PunchConfig | None = None,
        answer_timeout: float = 10.0,
        backlog: int = 16,
    ) -> None:
        self.identity = identity
        self.rendezvous = rendezvous
        self.stun = tuple(stun)
        self.config = config if config is not None else PunchConfig()
        self.answer_timeout = answer_timeout
        self._socket: ConnectivitySocket | None = None
        self._socket_lock = asyncio.Lock()
        self._stun_addresses: list[Address] | None = None
        self._accepted: asyncio.Queue[PeerConnection | None] = asyncio.Queue(
            maxsize=max(1, backlog)
        )
        self._listener: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections: set[Link] = set()
        self._closed = False

    # -- the socket and candidates ---------------------------------------------------------

    async def socket(self) -> ConnectivitySocket:
        async with self._socket_lock:
            if self._closed:
                raise ConnectionClosed("the peer is closed")
            if self._socket is None or self._socket.closed:
                self._socket = await ConnectivitySocket.open()
            return self._socket

    async def _stun_servers(self) -> list[Address]:
        if self._stun_addresses is None:
            found: list[Address] = []
            for spec in self.stun:
                try:
                    resolved = await resolve(spec)
                except NetcheckError as exc:
                    log.warning("STUN server %s: %s", spec.text, exc)
                    continue
                if resolved.ipv4 is not None:
                    found.append(resolved.ipv4)
            self._stun_addresses = found
        return self._stun_addresses

    async def candidates(self, sock: ConnectivitySocket) -> list[Candidate]:
        """Fresh candidates for ``sock``: reflexive (STUN) and host."""
        reflexive = await sock.reflexive_addresses(await self._stun_servers())
        if self.stun and not reflexive:
            log.info("no STUN server answered: offering host candidates only")
        return local_candidates(sock.local_port, local_ipv4_addresses(), reflexive)

    # -- dialling --------------------------------------------------------------------------

    async def connect(self, peer_id: str) -> PeerConnection:
        if peer_id == self.identity.peer_id:
            raise ConnectError("cannot connect to oneself")
        loop = asyncio.get_running_loop()
        started = loop.time()
        sock = await self.socket()
        mine = await self.candidates(sock)
        try:
            link = sock.add(Punch(self.identity, peer_id, self.config))
        except ConnectionError as exc:
            raise ConnectError(str(exc)) from None
        try:
            try:
                go = await self.rendezvous.punch(peer_id, mine, timeout=self.answer_timeout)
            except RendezvousError as exc:
                if exc.code == "timeout":
                    raise ConnectError(
                        f"{peer_id} did not accept within {self.answer_timeout:g} s"
                    ) from None
                raise ConnectError(f"{peer_id}: {exc.code}: {exc}") from None
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            await self._punch(link, punch_targets(go.candidates))
        except BaseException:
            link.close("connect failed")
            raise
        return self._connection(link, loop.time() - started)

    async def _punch(self, link: Link, targets: tuple[Address, ...]) -> None:
        link.start(targets)
        try:
            # The punch fails by itself at its deadline; the outer bound is a safety net.
            async with asyncio.timeout(
                self.config.timeout + self.config.session_config().handshake_timeout
            ):
                await link.found
        except ConnectionError as exc:
            raise ConnectError(str(exc)) from None
        except TimeoutError:
            raise ConnectError(f"no direct path to {link.remote_peer_id}") from None

    def _connection(self, link: Link, elapsed: float) -> PeerConnection:
        self._connections.add(link)
        link.on_closed = lambda _reason: self._connections.discard(link)
        return PeerConnection(link, elapsed=elapsed)

    # -- accepting -------------------------------------------------------------------------

    def listen(self) -> None:
        """Start answering punch requests (idempotent; ``accept`` calls it)."""
        if self._closed:
            raise ConnectionClosed("the peer is closed")
        if self._listener is None:
            requests = self.rendezvous.subscribe((PunchRequest,), maxsize=64)
            self._listener = asyncio.get_running_loop().create_task(self._listen(requests))

    async def accept(self) -> PeerConnection:
        self.listen()
        conn = await self._accepted.get()
        if conn is None:
            self._accepted.put_nowait(None)  # stays ended for the next caller
            raise ConnectionClosed("the peer is closed")
        return conn

    async def _listen(self, requests: Subscription) -> None:
        try:
            async for event in requests:
                if not isinstance(event, PunchRequest):
                    continue
                if len(self._handlers) >= MAX_ACCEPTING:
                    log.warning("too many punch requests at once: ignoring %s", event.sender)
                    continue
                task = asyncio.get_running_loop().create_task(self._answer(event))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        finally:
            requests.close()

    async def _answer(self, request: PunchRequest) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            sock = await self.socket()
            mine = await self.candidates(sock)
            link = sock.add(Punch(self.identity, request.sender, self.config))
        except ConnectionError as exc:
            log.info("punch request from %s: %s", request.sender, exc)
            return
        try:
            go = await self.rendezvous.punch_accept(
                request.sender, request.id, mine, request.rtt_ms, timeout=self.answer_timeout
            )
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            await self._punch(link, punch_targets(request.candidates))
        except (RendezvousError, ConnectError) as exc:
            log.info("punch request from %s: %s", request.sender, exc)
            link.close("accept failed")
            return
        except BaseException:
            link.close("accept failed")
            raise
        conn = self._connection(link, loop.time() - started)
        try:
            self._accepted.put_nowait(conn)
        except asyncio.QueueFull:
            log.warning("accept backlog full: closing the connection from %s", request.sender)
            link.close("the accept backlog is full")

    # -- the end ---------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._handlers] + ([self._listener] if self._listener is not None else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link in list(self._connections):
            link.close("the peer closed")
        if self._socket is not None:
            self._socket.close()
        while not self._accepted.empty():
            waiting = self._accepted.get_nowait()
            if waiting is not None:
                await waiting.close()
        self._accepted.put_nowait(None)
