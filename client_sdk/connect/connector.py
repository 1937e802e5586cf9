"""``Connector``: ``Peer.connect``/``Peer.accept`` -- the rendezvous's punch brokering,
candidates, the direct punch, the relay fallback and the choice between them (issue #6).

The procedure (the rendezvous side is ``rendezvous/signaling/punch.py``, DCUtR-style):

1. **Candidates, fresh for each attempt.** The connectivity socket (one per peer, opened
   on first use) asks each STUN server of ``stun`` for its own reflexive address (up to
   1.5 s: 0, 0.25, 0.75 s sends; a silent server just adds none) and adds its host
   addresses (``candidates.local_candidates``). At the same time the peer's TURN
   allocation (``client_sdk.connect.relay``; one per peer, opened on first use with
   credentials from the rendezvous, kept and refreshed) adds its ``relay`` candidate.
2. **Dialler**: a direct ``Punch`` for the peer is registered on the connectivity socket
   and a relay one on the allocation (from now on their message 1s reach us), then
   ``punch(peer, candidates)`` goes to the rendezvous, which forwards it as a
   ``PunchRequest`` with our round trip. The answer is ``punch_now`` with the peer's
   candidates and a delay.
   **Accepter** (``listen``/``accept``): each ``PunchRequest`` gets its own candidates
   and registered punches, then ``punch_accept(sender, id, candidates, rtt)``; its
   ``punch_now`` carries the delay (the candidates were in the request).
3. Both wait ``delay_ms`` -- chosen by the server so both act at the same moment -- and
   start both punches: the direct one toward the peer's host and reflexive candidates
   (``client_sdk.connect.punch``: the Noise handshake to every candidate, first
   authenticated answer fixes the path), the relay one from our allocation to the peer's.
   When exactly one side's mapping varies by destination (it offered two reflexive
   addresses with different ports: ``candidates.mapping_varies``), both sides also run
   port prediction (``client_sdk.connect.predict``): the hard side sends from many
   sockets, the easy side sprays probes at random ports of the hard side's address.
4. **The choice.** A direct path wins at once. When the relay path is up first, the
   direct punch gets ``direct_grace`` more seconds; without a direct path by then the
   connection starts on the relay, and the direct punch goes on looking until its own
   timeout -- when it succeeds, the connection upgrades (``PeerConnection``). The relay
   link stays beside a direct path as the fallback should it die.
6. **Punching again.** A connection left without a direct path -- its punch failed, or
   the path died and the connection fell back to the relay -- is punched again by its
   dialler (``repunch_attempts`` times, after ``repunch_after`` seconds, doubling). Such
   a punch goes through the rendezvous like the first, its id ``<session>.<n>``
   (``punch_id``: the server passes ids through), so the accepter attaches the new
   direct link to the connection it already has instead of accepting a new one.
5. The dialler gets the ``PeerConnection``; the accepter queues it for ``accept()``
   (``backlog`` at most; beyond that a new one is closed).

**Crossing dials**: when two peers ``connect`` to each other at the same moment, each
gets the other's ``PunchRequest`` while its own dial is under way. The peer with the
higher peer id gives up its dial and answers the other's; its ``connect`` returns that
connection. The lower one ignores the request: its own dial is the one answered.

A listening peer answers every punch request (at most ``MAX_ACCEPTING`` at once): who
may connect is the app's decision, on ``PeerConnection.remote_peer_id``, which the
handshake has proven.

Every failure of ``connect`` is a ``ConnectError``: the peer connected nowhere
(``unreachable``), no ``punch_now`` within ``answer_timeout`` (it does not accept), or
neither a direct nor a relay path within the punch timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from client_sdk.connect.candidates import (
    Address,
    local_candidates,
    local_ipv4_addresses,
    punch_targets,
)
from client_sdk.connect.connection import (
    ConnectError,
    ConnectionClosed,
    PathKind,
    PeerConnection,
)
from client_sdk.connect.predict import arrange
from client_sdk.connect.punch import Punch, PunchConfig
from client_sdk.connect.relay import RelaySocket, relay_targets, turn_servers
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
REPUNCH_MAX = 120.0  # the longest wait between two more punches
SPRAY_COOLDOWN = 30.0  # seconds between two port-prediction sprays toward one IP
RELAY_RETRY = 15.0  # seconds before asking for a relay again after failing to get one


def parse_stun_servers(stun: str | Sequence[str] | None) -> tuple[ServerSpec, ...]:
    """``"HOST:PORT"`` or a list of them; ``ValueError`` for a malformed one."""
    if stun is None:
        return ()
    texts = [stun] if isinstance(stun, str) else list(stun)
    try:
        return tuple(parse_server(text) for text in texts)
    except NetcheckError as exc:
        raise ValueError(str(exc)) from None


@dataclass
class _Dial:
    """A ``connect`` under way: ``crossed`` gets the connection when a crossing dial
    from the peer is answered instead (see the module docstring)."""

    crossed: asyncio.Future[PeerConnection]
    task: asyncio.Task[PeerConnection] | None = None
    yielded: bool = False


@dataclass
class _Attempt:
    """One side's punches toward one peer, registered before the punch starts: the
    direct one and the relay one (when we have an allocation)."""

    peer_id: str
    started: float
    mine: list[Candidate] = field(default_factory=list)  # what we offered the peer
    links: dict[PathKind, Link] = field(default_factory=dict)
    failures: dict[PathKind, str] = field(default_factory=dict)

    def close(self, reason: str) -> None:
        for link in self.links.values():
            link.close(reason)


class Connector:
    """See the module docstring. ``Peer`` owns one.

    ``relay``: use the TURN fallback (credentials from the rendezvous, relays of
    ``relay_region`` first). ``direct_grace``: seconds a direct punch still gets once the
    relay path is up. ``repunch_attempts``/``repunch_after``: how often, and first after
    how long, the dialler punches again for a connection without a direct path.
    ``direct=False``: relay only -- no host or reflexive candidate is offered, so the peer
    never learns our addresses (WebRTC's ``iceTransportPolicy: "relay"``)."""

    def __init__(
        self,
        identity: Identity,
        rendezvous: RendezvousClient,
        *,
        stun: Sequence[ServerSpec] = (),
        config: PunchConfig | None = None,
        answer_timeout: float = 10.0,
        backlog: int = 16,
        relay: bool = True,
        relay_region: str = "",
        direct_grace: float = 1.0,
        direct: bool = True,
        repunch_attempts: int = 4,
        repunch_after: float = 5.0,
    ) -> None:
        if direct_grace < 0:
            raise ValueError("direct_grace must not be negative")
        self.identity = identity
        self.rendezvous = rendezvous
        self.stun = tuple(stun)
        self.config = config if config is not None else PunchConfig()
        self.answer_timeout = answer_timeout
        self.relay_enabled = relay
        self.relay_region = relay_region
        self.direct_grace = direct_grace
        self.direct_enabled = direct
        self.repunch_attempts = max(0, repunch_attempts)
        if repunch_after <= 0:
            raise ValueError("repunch_after must be positive")
        self.repunch_after = repunch_after
        self._socket: ConnectivitySocket | None = None
        self._socket_lock = asyncio.Lock()
        self._stun_addresses: list[Address] | None = None
        self._udp_blocked = False  # no STUN server answered the last time we asked
        self._relay: RelaySocket | None = None
        self._relay_lock = asyncio.Lock()
        self._relay_retry_at = 0.0
        self._accepted: asyncio.Queue[PeerConnection | None] = asyncio.Queue(
            maxsize=max(1, backlog)
        )
        self._listener: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._upgraders: set[asyncio.Task[None]] = set()
        self._sprayed: dict[str, float] = {}  # IP -> when we last sprayed it
        self._dials: dict[str, _Dial] = {}
        self._connections: set[PeerConnection] = set()
        self._closed = False

    # -- the sockets and candidates --------------------------------------------------------

    async def socket(self) -> ConnectivitySocket:
        async with self._socket_lock:
            if self._closed:
                raise ConnectionClosed("the peer is closed")
            if self._socket is None or self._socket.closed:
                self._socket = await ConnectivitySocket.open()
            return self._socket

    async def relay_socket(self) -> RelaySocket | None:
        """The peer's TURN allocation, made on first use; None when the relay is off,
        the rendezvous has no relay for us, or no allocation succeeded (asked again
        after ``RELAY_RETRY`` seconds)."""
        if not self.relay_enabled:
            return None
        async with self._relay_lock:
            if self._closed:
                raise ConnectionClosed("the peer is closed")
            if self._relay is not None and not self._relay.closed:
                return self._relay
            loop = asyncio.get_running_loop()
            if loop.time() < self._relay_retry_at:
                return None
            try:
                credentials = await self.rendezvous.turn_credentials(self.relay_region)
                servers = turn_servers(credentials.uris, udp_first=not self._udp_blocked)
                self._relay = await RelaySocket.allocate(
                    servers, credentials.username, credentials.password
                )
            except (RendezvousError, ConnectionError) as exc:
                log.warning("no relay: %s", exc)
                self._relay_retry_at = loop.time() + RELAY_RETRY
                return None
            return self._relay

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
        if self.stun:
            self._udp_blocked = not reflexive
            if not reflexive:
                log.info("no STUN server answered: offering host candidates only")
        return local_candidates(sock.local_port, local_ipv4_addresses(), reflexive)

    async def _prepare(
        self, peer_id: str, *, relay_too: bool = True
    ) -> tuple[_Attempt, list[Candidate]]:
        """Our candidates and registered punches toward ``peer_id`` (direct only, for a
        re-punch, without ``relay_too``)."""
        attempt = _Attempt(peer_id, asyncio.get_running_loop().time())
        sock: ConnectivitySocket | None = None
        mine: list[Candidate] = []
        relay: RelaySocket | None = None
        if self.direct_enabled:
            sock = await self.socket()
            if relay_too:
                mine, relay = await asyncio.gather(self.candidates(sock), self.relay_socket())
            else:
                mine = await self.candidates(sock)
        elif relay_too:
            relay = await self.relay_socket()
        try:
            if sock is not None:
                attempt.links["direct"] = sock.add(Punch(self.identity, peer_id, self.config))
            if relay is not None:
                attempt.links["relay"] = relay.add(Punch(self.identity, peer_id, self.config))
                mine.append(relay.candidate())
        except ConnectionError as exc:
            attempt.close("connect failed")
            raise ConnectError(str(exc)) from None
        if not attempt.links:
            raise ConnectError("nothing to try: direct paths are off and no relay is available")
        attempt.mine = mine
        return attempt, mine

    # -- finding a path --------------------------------------------------------------------

    def _start(self, attempt: _Attempt, theirs: Sequence[Candidate]) -> None:
        """Start the attempt's punches toward the peer's candidates ``theirs``; a punch
        with no candidate of its kind to go to is closed and dropped."""
        targets = {"direct": punch_targets(theirs), "relay": relay_targets(theirs)}
        for kind, link in list(attempt.links.items()):
            if targets[kind]:
                # One side's mapping varies by destination, the other's does not: the hard
                # side fans out over many sockets, the easy one sprays (``predict``).
                spray = (
                    arrange(link, attempt.mine, theirs, self.config) if kind == "direct" else None
                )
                if spray is not None and not self._may_spray(spray.ip):
                    spray = None
                link.start(targets[kind], spray)
            else:
                attempt.failures[kind] = f"the peer offered no {kind} candidate"
                link.close(attempt.failures[kind])
                del attempt.links[kind]

    def _may_spray(self, ip: str) -> bool:
        """Whether a spray may go to ``ip`` now: one per IP per ``SPRAY_COOLDOWN``. The IP
        comes from the peer's candidates, unchecked; a peer lying about them could
        otherwise point a stream of probes (``predict_probes`` of them) at a third party
        with every punch it asks for."""
        now = asyncio.get_running_loop().time()
        for old in [ip for ip, at in self._sprayed.items() if now - at >= SPRAY_COOLDOWN]:
            del self._sprayed[old]
        if ip in self._sprayed:
            log.info("no spray toward %s: one went there %.0f s ago", ip, now - self._sprayed[ip])
            return False
        self._sprayed[ip] = now
        return True

    async def _establish(
        self, attempt: _Attempt, theirs: Sequence[Candidate], session: str, *, dialled: bool
    ) -> PeerConnection:
        """Run the punches toward the peer's candidates ``theirs``; the connection on the
        first path, per the module docstring's choice. The attempt's links belong to the
        connection afterwards; on failure they are closed by the caller."""
        self._start(attempt, theirs)
        direct = attempt.links.get("direct")
        relayed = attempt.links.get("relay")
        # The punches fail by themselves at their deadline; the outer bound is a net.
        bound = self.config.timeout + self.config.session_config().handshake_timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                waiting = {link.found for link in attempt.links.values()}
                while waiting and not (direct is not None and direct.established):
                    _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if relayed is not None and relayed.established:
                        if direct is not None and not direct.found.done() and self.direct_grace:
                            await asyncio.wait({direct.found}, timeout=self.direct_grace)
                        break
        established = [kind for kind, link in attempt.links.items() if link.established]
        if not established:
            for kind, link in attempt.links.items():
                attempt.failures[kind] = link.failure or f"nothing within {bound:g} s"
            reasons = "; ".join(f"{kind}: {why}" for kind, why in attempt.failures.items())
            raise ConnectError(f"no path to {attempt.peer_id} ({reasons})")
        loop = asyncio.get_running_loop()
        conn = PeerConnection(
            attempt.peer_id,
            elapsed=loop.time() - attempt.started,
            session=session,
            dialled=dialled,
        )
        for kind in sorted(attempt.links, key=lambda k: k not in established):
            conn.attach(kind, attempt.links[kind])
        self._connections.add(conn)
        conn.on_closed = self._connections.discard
        if dialled and self.direct_enabled and self.repunch_attempts:
            task = loop.create_task(self._keep_upgrading(conn))
            self._upgraders.add(task)
            task.add_done_callback(self._upgraders.discard)
        return conn

    # -- punching again ---------------------------------------------------------------------

    async def _keep_upgrading(self, conn: PeerConnection) -> None:
        """The dialler's side of re-punching: while ``conn`` lacks a direct path (its
        punch failed, or the path died), punch again -- after ``repunch_after`` seconds,
        then twice as long each time, at most ``repunch_attempts`` times in a row. A
        direct path that comes up resets the count: when it dies, the next tries start
        over."""
        first = self.repunch_after
        delay, tries = first, 0
        while not conn.closed:
            await asyncio.sleep(first if conn.has_path("direct") else delay)
            if conn.closed:
                return
            if conn.has_path("direct"):
                delay, tries = first, 0
                continue
            if tries >= self.repunch_attempts:
                return
            tries += 1
            try:
                await self._repunch(conn, tries)
            except (ConnectError, RendezvousError) as exc:
                log.info("punching %s again: %s", conn.remote_peer_id, exc)
            delay = min(2 * delay, REPUNCH_MAX)

    async def _repunch(self, conn: PeerConnection, number: int) -> None:
        """One more direct punch for ``conn`` (see ``_keep_upgrading``); the new direct
        link is attached at once and upgrades the connection when it succeeds."""
        peer_id = conn.remote_peer_id
        attempt, mine = await self._prepare(peer_id, relay_too=False)
        try:
            go = await self.rendezvous.punch(
                peer_id,
                mine,
                timeout=self.answer_timeout,
                message_id=punch_id(conn.session, number),
            )
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            self._start(attempt, go.candidates)
        except BaseException:
            attempt.close("punching again failed")
            raise
        for kind, link in attempt.links.items():
            conn.attach(kind, link)

    async def _answer_repunch(self, request: PunchRequest, conn: PeerConnection) -> None:
        """The accepter's side: the dialler of ``conn`` punches again."""
        attempt, mine = await self._prepare(request.sender, relay_too=False)
        try:
            go = await self.rendezvous.punch_accept(
                request.sender, request.id, mine, request.rtt_ms, timeout=self.answer_timeout
            )
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            self._start(attempt, request.candidates)
        except BaseException:
            attempt.close("punching again failed")
            raise
        for kind, link in attempt.links.items():
            # The dialler found the old direct path dead (or never had one): replace it.
            conn.attach(kind, link, replace=True)

    # -- dialling --------------------------------------------------------------------------

    async def connect(self, peer_id: str) -> PeerConnection:
        if peer_id == self.identity.peer_id:
            raise ConnectError("cannot connect to oneself")
        if self._closed:
            raise ConnectionClosed("the peer is closed")
        if peer_id in self._dials:
            raise ConnectError(f"already connecting to {peer_id}")
        loop = asyncio.get_running_loop()
        dial = _Dial(loop.create_future())
        self._dials[peer_id] = dial
        dial.task = loop.create_task(self._dial(peer_id))
        try:
            await asyncio.wait((dial.task, dial.crossed), return_when=asyncio.FIRST_COMPLETED)
            if dial.yielded or dial.crossed.done():
                return await dial.crossed
            return dial.task.result()
        finally:
            if self._dials.get(peer_id) is dial:
                del self._dials[peer_id]
            if not dial.task.done():
                dial.task.cancel()

    async def _dial(self, peer_id: str) -> PeerConnection:
        attempt, mine = await self._prepare(peer_id)
        session = secrets.token_hex(8)
        try:
            try:
                go = await self.rendezvous.punch(
                    peer_id, mine, timeout=self.answer_timeout, message_id=punch_id(session, 0)
                )
            except RendezvousError as exc:
                if exc.code == "timeout":
                    raise ConnectError(
                        f"{peer_id} did not accept within {self.answer_timeout:g} s"
                    ) from None
                raise ConnectError(f"{peer_id}: {exc.code}: {exc}") from None
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            return await self._establish(attempt, go.candidates, session, dialled=True)
        except BaseException:
            attempt.close("connect failed")
            raise

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
        session, number = parse_punch_id(request.id)
        if number:  # the dialler of one of our connections punches again
            conn = self._connection(request.sender, session)
            if conn is None:
                log.info("%s punches again for no connection of ours", request.sender)
                return
            try:
                await self._answer_repunch(request, conn)
            except (RendezvousError, ConnectError) as exc:
                log.info("punching %s again: %s", request.sender, exc)
            return
        dial = self._dials.get(request.sender)
        if dial is not None:  # a crossing dial: the higher peer id yields
            if self.identity.peer_id < request.sender:
                log.info("crossing dial with %s: ours goes on", request.sender)
                return
            log.info("crossing dial with %s: answering theirs", request.sender)
            dial.yielded = True
            if dial.task is not None and not dial.task.done():
                dial.task.cancel()
                await asyncio.wait((dial.task,))
        try:
            conn = await self._accept_punch(request)
        except (RendezvousError, ConnectError) as exc:
            log.info("punch request from %s: %s", request.sender, exc)
            if dial is not None and not dial.crossed.done():
                dial.crossed.set_exception(ConnectError(f"{request.sender}: {exc}"))
            return
        except BaseException as exc:
            if dial is not None and not dial.crossed.done():
                dial.crossed.set_exception(ConnectError(f"{request.sender}: {exc!r}"))
            raise
        if dial is not None:
            if not dial.crossed.done():
                dial.crossed.set_result(conn)
            else:
                await conn.close()
            return
        try:
            self._accepted.put_nowait(conn)
        except asyncio.QueueFull:
            log.warning("accept backlog full: closing the connection from %s", request.sender)
            await conn.close()

    async def _accept_punch(self, request: PunchRequest) -> PeerConnection:
        attempt, mine = await self._prepare(request.sender)
        try:
            go = await self.rendezvous.punch_accept(
                request.sender, request.id, mine, request.rtt_ms, timeout=self.answer_timeout
            )
            await asyncio.sleep(max(0.0, go.delay_ms) / 1000)
            session, _ = parse_punch_id(request.id)
            return await self._establish(attempt, request.candidates, session, dialled=False)
        except BaseException:
            attempt.close("accept failed")
            raise

    def _connection(self, peer_id: str, session: str) -> PeerConnection | None:
        for conn in self._connections:
            if conn.remote_peer_id == peer_id and conn.session == session and not conn.closed:
                return conn
        return None

    # -- the end ---------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [*self._handlers, *self._upgraders]
        tasks += [self._listener] if self._listener is not None else []
        tasks += [dial.task for dial in self._dials.values() if dial.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in list(self._connections):
            await conn.close()
        if self._socket is not None:
            self._socket.close()
        async with self._relay_lock:
            if self._relay is not None:
                self._relay.close()
        while not self._accepted.empty():
            waiting = self._accepted.get_nowait()
            if waiting is not None:
                await waiting.close()
        self._accepted.put_nowait(None)


def punch_id(session: str, number: int) -> str:
    """The id of punch ``number`` (0: the one that made the connection) of connection
    ``session`` (the dialler's random id for it): ``"<session>.<number>"``. The server
    passes ids through untouched; the accepter reads them with ``parse_punch_id``."""
    return f"{session}.{number}"


def parse_punch_id(message_id: str) -> tuple[str, int]:
    """(session, number) of a punch request's id; any id not of ``punch_id``'s form (from
    another client) is a first punch, its whole id the session."""
    session, dot, number = message_id.rpartition(".")
    if dot and session and number.isascii() and number.isdigit() and len(number) <= 6:
        return session, int(number)
    return message_id, 0
