"""``RendezvousClient``: one peer's resilient link to one or more rendezvous servers.

* **Failover.** ``urls`` are tried in order; a URL that fails (connection refused, a
  broken or closed WebSocket, an HTTP call that gets no answer or ``store_unavailable``)
  moves the client to the next one, round robin. HTTP calls and the WebSocket share that
  position, so registrations go to the instance the socket is on.
* **Reconnection.** The signaling WebSocket is reopened whenever it closes, after
  ``Backoff.delay(consecutive failures)``: exponential from ``initial`` up to ``maximum``,
  with jitter (``delay * (1 - jitter * random())``) so that the clients of a server that
  went away do not all come back in the same instant. A socket replaced by another of the
  same identity (close code 4000) is not reopened: two clients would take turns forever.
* **Re-registration.** Every swarm joined through the client is re-joined, with the
  parameters of the last ``join``, right after each reconnection, and refreshed every
  ``refresh_fraction`` (1/2) of the TTL the server granted, so a registration never
  lapses while the client runs; a failed refresh is retried after the backoff delay.
* **Events.** ``subscribe()`` gives an async iterator of ``ClientEvent``: the signaling
  events (``IncomingSignal``, ``PunchRequest``, ...) and the client's own (``Connected``,
  ``Disconnected``, ``Registered``, ``RegistrationFailed``). Each subscription has a
  bounded queue; when it is full the oldest event is dropped (and counted).

``clock`` (monotonic seconds), ``random`` ([0, 1)) and ``sleep`` are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random as random_module
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import aiohttp

from client_sdk.identity import Identity
from client_sdk.rendezvous.http import (
    Candidate,
    JoinResult,
    PeerPage,
    PeerSample,
    RendezvousError,
    RendezvousHttp,
    Scalar,
    SwarmStats,
    TurnCredentials,
    api_base,
    check_swarm,
)
from client_sdk.rendezvous.signaling import (
    REPLACED,
    PunchNow,
    SignalingEvent,
    SignalingSocket,
)

__all__ = [
    "Backoff",
    "ClientEvent",
    "Connected",
    "ConnectionState",
    "Disconnected",
    "JoinSpec",
    "Registered",
    "RegistrationFailed",
    "RendezvousClient",
    "Subscription",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: the ``n``-th consecutive failure waits
    ``min(maximum, initial * multiplier**n) * (1 - jitter * random())`` seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff: need 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff: multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff: jitter is a fraction from 0 to 1")

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        exponent = min(max(0, failures), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        return base * (1 - self.jitter * min(1.0, max(0.0, random())))


class ConnectionState(enum.Enum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"  # waiting before the next attempt
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    url: str
    peer_id: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The socket to ``url`` closed (or could not be opened); ``code`` is the WebSocket
    close code when there was one. ``reconnecting`` is False after a replacement (4000)
    or ``close()``."""

    url: str
    code: int | None
    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Registered:
    """A join or refresh of ``swarm`` succeeded (also each automatic refresh)."""

    swarm: str
    url: str
    result: JoinResult


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    """An automatic re-join or refresh of ``swarm`` failed; it is retried."""

    swarm: str
    error: RendezvousError


ClientEvent: TypeAlias = SignalingEvent | Connected | Disconnected | Registered | RegistrationFailed


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """The parameters of a join, repeated on every refresh."""

    swarm: str
    candidates: tuple[Candidate, ...] = ()
    nat: str | None = None
    metadata: Mapping[str, Scalar] = field(default_factory=dict, hash=False)
    ttl: int | None = None
    seeder: bool = False


@dataclass(slots=True)
class _Registration:
    spec: JoinSpec
    due: float  # clock time of the next refresh
    failures: int = 0


class _End:
    """Marks the end of a subscription's stream."""


_END = _End()


class Subscription:
    """Events of a ``RendezvousClient`` (``kinds``: only these types), in order; an
    async iterator that ends when the client closes or ``close()`` is called."""

    def __init__(
        self, owner: RendezvousClient, kinds: tuple[type, ...] | None, maxsize: int
    ) -> None:
        self._owner = owner
        self._kinds = kinds
        self._queue: asyncio.Queue[ClientEvent | _End] = asyncio.Queue(maxsize=max(1, maxsize))
        self.dropped = 0  # events dropped because the queue was full

    def _offer(self, event: ClientEvent | _End) -> None:
        kinds = self._kinds
        if not isinstance(event, _End) and kinds is not None and not isinstance(event, kinds):
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> ClientEvent:
        """The next event; ``RendezvousError("closed")`` once the stream ended."""
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # stays ended for the next caller
            raise RendezvousError("closed", "the subscription ended")
        return item

    def close(self) -> None:
        self._owner._unsubscribe(self)
        self._offer(_END)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ClientEvent:
        try:
            return await self.get()
        except RendezvousError:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RendezvousClient:
    """One identity's registrations and signaling over ``urls`` (one URL or several
    instances of one deployment). ``async with`` starts and closes it; ``start`` returns
    at once (``wait_connected`` waits for the socket)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        identity: Identity,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        refresh_fraction: float = 0.5,
        http_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        heartbeat: float | None = 20.0,
        queue_size: int = 256,
        rate_limit_retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random_module.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("give at least one rendezvous URL")
        self.urls: tuple[str, ...] = tuple(api_base(url) for url in listed)
        if not 0 < refresh_fraction < 1:
            raise ValueError("refresh_fraction: between 0 and 1")
        self.identity = identity
        self.token = token
        self.backoff = backoff or Backoff()
        self._refresh_fraction = refresh_fraction
        self._http_timeout = http_timeout
        self._handshake_timeout = handshake_timeout
        self._heartbeat = heartbeat
        self._queue_size = queue_size
        self._rate_limit_retries = rate_limit_retries
        self._clock = clock
        self._random = random
        self._sleep = sleep
        self._index = 0
        self._session: aiohttp.ClientSession | None = None
        self._https: list[RendezvousHttp] = []
        self._socket: SignalingSocket | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._registrations: dict[str, _Registration] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._state = ConnectionState.IDLE
        self._closing = False
        self._stopped = asyncio.Event()  # set with state CLOSED: no socket will come

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    @property
    def url(self) -> str:
        """The URL in use (the socket's, or the next one tried)."""
        return self.urls[self._index]

    @property
    def joined(self) -> Mapping[str, JoinSpec]:
        """The swarms this client keeps registered, with their join parameters."""
        return {swarm: r.spec for swarm, r in self._registrations.items()}

    async def start(self) -> None:
        if self._tasks:
            return
        if self._closing:
            raise RendezvousError("closed", "the client is closed")
        self._session = aiohttp.ClientSession()
        self._https = [
            RendezvousHttp(
                url,
                self.identity,
                token=self.token,
                session=self._session,
                timeout=self._http_timeout,
                rate_limit_retries=self._rate_limit_retries,
                sleep=self._sleep,
                clock=self._clock,
            )
            for url in self.urls
        ]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._refresh())]

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until the signaling socket is up; ``RendezvousError("timeout")`` after
        ``timeout`` seconds."""
        if self._state == ConnectionState.CLOSED:
            raise RendezvousError("closed", "the client is closed")
        try:
            async with asyncio.timeout(timeout):
                await self._up()
        except TimeoutError:
            raise RendezvousError(
                "timeout", f"no rendezvous reachable in {timeout} s ({', '.join(self.urls)})"
            ) from None

    async def close(self, *, leave: bool = True, leave_timeout: float = 2.0) -> None:
        """Stop; with ``leave``, remove this peer from its swarms first (best effort,
        within ``leave_timeout`` s)."""
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if leave and self._registrations and self._https:
            swarms = list(self._registrations)
            self._registrations.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(leave_timeout):
                    await asyncio.gather(
                        *(self._leave_quietly(swarm) for swarm in swarms),
                        return_exceptions=True,
                    )
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close()
            self._emit(Disconnected(socket.url, None, "closed by the client", False))
        self._connected.clear()
        self._state = ConnectionState.CLOSED
        self._stopped.set()
        if self._session is not None:
            await self._session.close()
        for subscription in list(self._subscriptions):
            subscription.close()

    async def _leave_quietly(self, swarm: str) -> None:
        with contextlib.suppress(RendezvousError):
            await self._http_call(lambda h: h.leave(swarm))

    async def __aenter__(self) -> RendezvousClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- events -------------------------------------------------------------------------

    def subscribe(
        self, kinds: tuple[type, ...] | None = None, *, maxsize: int = 1024
    ) -> Subscription:
        """A stream of the client's events (only ``kinds``, when given)."""
        subscription = Subscription(self, kinds, maxsize)
        if self._state == ConnectionState.CLOSED:
            subscription._offer(_END)
        else:
            self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def _emit(self, event: ClientEvent) -> None:
        for subscription in self._subscriptions:
            subscription._offer(event)

    # -- the HTTP API, with failover ----------------------------------------------------

    def _advance(self, index: int) -> None:
        """Move on from URL ``index`` (unless someone already did)."""
        if self._index == index:
            self._index = (index + 1) % len(self.urls)

    async def _http_call(self, call: Callable[[RendezvousHttp], Awaitable[T]]) -> T:
        if not self._https:
            raise RendezvousError("closed", "the client is not started")
        failure: RendezvousError | None = None
        for _ in self.urls:
            index = self._index
            try:
                return await call(self._https[index])
            except RendezvousError as exc:
                if not exc.retriable_elsewhere:
                    raise
                failure = exc
                self._advance(index)
        if failure is None:  # pragma: no cover - the loop runs at least once
            raise RendezvousError("connection_failed", "no rendezvous URL")
        raise failure

    def _lock(self, swarm: str) -> asyncio.Lock:
        return self._locks.setdefault(swarm, asyncio.Lock())

    async def _register(self, spec: JoinSpec) -> JoinResult:
        result = await self._http_call(
            lambda h: h.join(
                spec.swarm, spec.candidates, spec.nat, spec.metadata, spec.ttl, spec.seeder
            )
        )
        self._registrations[spec.swarm] = _Registration(
            spec, self._clock() + result.ttl * self._refresh_fraction
        )
        self._emit(Registered(spec.swarm, self.url, result))
        self._wake.set()
        return result

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
        """Register in ``swarm`` and keep the registration alive (refreshed, and
        re-joined after reconnecting) until ``leave`` or ``close``."""
        spec = JoinSpec(
            check_swarm(swarm), tuple(candidates), nat, dict(metadata or {}), ttl, seeder
        )
        async with self._lock(swarm):
            return await self._register(spec)

    async def leave(self, swarm: str) -> None:
        """Remove this peer from ``swarm`` and stop refreshing it."""
        check_swarm(swarm)
        async with self._lock(swarm):
            self._registrations.pop(swarm, None)
            await self._http_call(lambda h: h.leave(swarm))

    async def peers(
        self, swarm: str, *, numwant: int | None = None, exclude: str | None = None
    ) -> PeerSample:
        return await self._http_call(lambda h: h.peers(swarm, numwant, exclude))

    async def poll(self, swarm: str, cookie: str = "", limit: int | None = None) -> PeerPage:
        return await self._http_call(lambda h: h.poll(swarm, cookie, limit))

    async def stats(self, swarm: str) -> SwarmStats:
        return await self._http_call(lambda h: h.stats(swarm))

    async def turn_credentials(self, region: str = "") -> TurnCredentials:
        return await self._http_call(lambda h: h.turn_credentials(region))

    # -- signaling ----------------------------------------------------------------------

    async def _up(self) -> None:
        """Until connected; ``RendezvousError("closed")`` if the client stops first."""
        connected = asyncio.ensure_future(self._connected.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((connected, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            stopped.cancel()
        if not self._connected.is_set():
            raise RendezvousError("closed", "the client is closed")

    async def _live(self) -> SignalingSocket:
        while True:
            if self._state == ConnectionState.CLOSED:
                raise RendezvousError("closed", "the client is closed")
            await self._up()
            socket = self._socket
            if socket is not None and not socket.closed:
                return socket
            await asyncio.sleep(0)

    async def _on_socket(
        self, timeout: float | None, call: Callable[[SignalingSocket], Awaitable[T]]
    ) -> T:
        try:
            async with asyncio.timeout(timeout):
                return await call(await self._live())
        except TimeoutError:
            raise RendezvousError("timeout", f"no outcome within {timeout} s") from None

    async def signal(
        self, to: str, data: Any, *, confirm: bool = True, timeout: float | None = 10.0
    ) -> None:
        """Send ``data`` (JSON) to peer ``to``: returns once the server acknowledges it
        ``delivered`` (``confirm``; else once it is queued), ``RendezvousError`` code
        ``unreachable`` when ``to`` is connected nowhere, ``disconnected`` when the socket
        closed before the outcome was known, ``timeout`` when neither came within
        ``timeout`` seconds (connecting included)."""
        await self._on_socket(timeout, lambda s: s.signal(to, data, confirm=confirm))

    async def punch(
        self,
        to: str,
        candidates: Sequence[Candidate],
        *,
        timeout: float | None = 10.0,
        message_id: str | None = None,
    ) -> PunchNow:
        """Ask ``to`` to punch a hole with us (see ``SignalingSocket.punch``)."""
        return await self._on_socket(
            timeout, lambda s: s.punch(to, candidates, message_id=message_id)
        )

    async def punch_accept(
        self,
        to: str,
        message_id: str,
        candidates: Sequence[Candidate],
        peer_rtt_ms: float,
        *,
        timeout: float | None = 10.0,
    ) -> PunchNow:
        return await self._on_socket(
            timeout, lambda s: s.punch_accept(to, message_id, candidates, peer_rtt_ms)
        )

    # -- background tasks ---------------------------------------------------------------

    async def _run(self) -> None:
        """Keep a signaling socket open, failing over and backing off."""
        failures = 0
        first = True
        while True:
            if not first:
                self._state = ConnectionState.BACKING_OFF
                # The first retry (after a failure or a lost session) waits ``initial``.
                await self._sleep(self.backoff.delay(max(0, failures - 1), self._random))
            first = False
            index = self._index
            url = self.urls[index]
            self._state = ConnectionState.CONNECTING
            if self._session is None:  # pragma: no cover - start() made it
                return
            try:
                socket = await SignalingSocket.open(
                    self._session,
                    url,
                    self.identity,
                    token=self.token,
                    on_event=self._emit,
                    queue_size=self._queue_size,
                    handshake_timeout=self._handshake_timeout,
                    heartbeat=self._heartbeat,
                )
            except Exception as exc:  # whatever it was, the loop must go on
                if not isinstance(exc, RendezvousError):
                    log.exception("rendezvous %s: unexpected failure", url)
                    exc = RendezvousError("connection_failed", repr(exc), url=url)
                log.info("rendezvous %s: %s", url, exc)
                failures += 1
                self._advance(index)
                self._emit(Disconnected(url, None, str(exc), True))
                continue
            failures = 0
            self._socket = socket
            self._state = ConnectionState.CONNECTED
            self._connected.set()
            self._emit(Connected(url, self.peer_id))
            for registration in self._registrations.values():  # re-register now
                registration.due = 0.0
            self._wake.set()
            info = await socket.wait_closed()
            self._connected.clear()
            self._socket = None
            replaced = info.code == REPLACED
            self._emit(Disconnected(url, info.code, info.reason, not replaced))
            if replaced:
                log.warning("rendezvous %s: another client of this identity took over", url)
                self._state = ConnectionState.CLOSED
                self._stopped.set()
                return
            self._advance(index)

    async def _refresh(self) -> None:
        """Re-join every registration when it is due."""
        while True:
            now = self._clock()
            due = [r for r in self._registrations.values() if r.due <= now]
            for registration in due:
                await self._refresh_one(registration)
            upcoming = [r.due for r in self._registrations.values()]
            wait = max(0.0, min(upcoming) - self._clock()) if upcoming else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _refresh_one(self, registration: _Registration) -> None:
        swarm = registration.spec.swarm
        async with self._lock(swarm):
            if self._registrations.get(swarm) is not registration:
                return  # left, or joined anew meanwhile
            try:
                await self._register(registration.spec)
            except Exception as exc:  # the refresher must survive anything
                if not isinstance(exc, RendezvousError):
                    log.exception("rendezvous: refreshing %s failed", swarm)
                    exc = RendezvousError("refresh_failed", repr(exc))
                registration.failures += 1
                registration.due = self._clock() + self.backoff.delay(
                    registration.failures - 1, self._random
                )
                self._emit(RegistrationFailed(swarm, exc))
