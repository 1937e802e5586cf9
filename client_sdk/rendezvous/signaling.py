"""The signaling WebSocket (``GET /v1/ws``) of one rendezvous server.

The protocol (README, "Signaling"): the server sends ``{"type": "challenge",
"challenge"}``; the peer answers ``{"type": "hello", "public_key", "signature"}`` (Ed25519
over the challenge and ``WEBSOCKET_HELLO``) and gets ``{"type": "welcome", "peer_id"}``.
Then ``signal`` messages go to other peers by peer id, ``punch``/``punch_accept`` broker a
hole punch (the server answers both sides ``punch_now``), the server measures the round
trip with ``{"type": "ping", "nonce"}`` (answered ``pong``); a signal with an ``id``
that reached its target gets the sender ``{"type": "delivered", "id", "to"}``, and a
target connected nowhere gets it ``{"type": "error", "code": "unreachable", "to", "id"}``.

Two layers:

* sans-IO: ``parse`` turns one text message from the server into a typed message or a
  ``ProtocolError`` (never an exception), and ``SignalingState`` says what it means: the
  replies to send, the events for the app, the requests it settles. Anything malformed or
  unexpected is a ``ProtocolError`` event and changes no state.
* ``SignalingSocket``: one authenticated aiohttp WebSocket running that core, with a
  bounded outgoing queue.

**Delivery confirmation.** The server answers every signal that carries an ``id``:
``delivered`` once it was handed to the target (on another instance: published to the
instance that holds it), else ``unreachable``. ``await socket.signal(...)`` sends its
signal with an id and returns on ``delivered``, or raises ``RendezvousError
("unreachable")``; it waits for nothing else (``RendezvousClient.signal`` bounds the wait
with its ``timeout``). ``confirm=False`` sends without waiting; a signal without an id
gets no acknowledgement (an ``unreachable`` then arrives as a ``ServerError`` event, and
the answers to one sent with an explicit ``message_id`` arrive as ``Delivered`` or
``ServerError`` events).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias
from urllib.parse import quote, urlsplit

import aiohttp

from client_sdk.identity import WEBSOCKET_HELLO, Identity, b64encode
from client_sdk.rendezvous.http import (
    PEER_ID,
    Candidate,
    RendezvousError,
    api_base,
    candidates_from_json,
    check_peer_id,
)

__all__ = [
    "MAX_SIGNAL_BYTES",
    "Challenge",
    "Delivered",
    "IncomingSignal",
    "Ping",
    "ProtocolError",
    "PunchNow",
    "PunchRequest",
    "Reaction",
    "ServerError",
    "ServerMessage",
    "Settled",
    "SignalingEvent",
    "SignalingSocket",
    "SignalingState",
    "Welcome",
    "parse",
    "websocket_url",
]

log = logging.getLogger(__name__)

MAX_SIGNAL_BYTES: Final = 16 * 1024  # a signal's data, as compact JSON (the server's cap)
MAX_MESSAGE_BYTES: Final = 256 * 1024  # a message from the server larger than this: closed
MAX_ID: Final = 64
MAX_NONCE: Final = 32
MAX_TEXT_IN_EVENT: Final = 200  # how much of a malformed message a ProtocolError keeps
UNAUTHENTICATED: Final = 4401
REPLACED: Final = 4000  # another socket of the same peer took this one's place


# -- what the server sends --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge: str


@dataclass(frozen=True, slots=True)
class Welcome:
    peer_id: str


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: str


@dataclass(frozen=True, slots=True)
class IncomingSignal:
    """A signal another peer sent us: ``data`` is any JSON value."""

    sender: str
    id: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class Delivered:
    """The server handed our signal ``id`` to peer ``to``."""

    id: str
    to: str


@dataclass(frozen=True, slots=True)
class PunchRequest:
    """``sender`` asks to punch a hole with us; answer with ``punch_accept(sender, id,
    our candidates, peer_rtt_ms=rtt_ms)``."""

    sender: str
    id: str
    candidates: tuple[Candidate, ...]
    rtt_ms: float


@dataclass(frozen=True, slots=True)
class PunchNow:
    """Punch towards ``peer`` in ``delay_ms`` (both sides act at the same moment).
    ``candidates``: the peer's (empty for the accepter, which had them in the request)."""

    peer: str
    id: str
    candidates: tuple[Candidate, ...]
    delay_ms: float
    rtt_ms: float | None
    peer_rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` message: ``unreachable`` (``to``/``id`` name the request),
    ``invalid``, ``unavailable``, ``unauthenticated``."""

    code: str
    message: str
    id: str | None
    to: str | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The server sent something this client does not understand (or did not expect);
    it was ignored."""

    problem: str
    text: str  # the start of the offending message


ServerMessage: TypeAlias = (
    Challenge | Welcome | Ping | IncomingSignal | Delivered | PunchRequest | PunchNow | ServerError
)
SignalingEvent: TypeAlias = (
    IncomingSignal | Delivered | PunchRequest | PunchNow | ServerError | ProtocolError
)


class _Bad(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Bad(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _str(body: dict[str, Any], key: str, limit: int, *, optional: bool = False) -> Any:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Bad(f"{key}: expected a string of at most {limit} characters")
    return value


def _peer(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not PEER_ID.fullmatch(value):
        raise _Bad(f"{key}: expected a peer id")
    return value


def _number(body: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key}: expected a number")
    if not 0 <= value <= 3_600_000:
        raise _Bad(f"{key}: out of range")
    return float(value)


def _parse(body: dict[str, Any]) -> ServerMessage:
    kind = body.get("type")
    if kind == "signal":
        if "data" not in body:
            raise _Bad("signal without data")
        return IncomingSignal(
            _peer(body, "from"), _str(body, "id", MAX_ID, optional=True), body["data"]
        )
    if kind == "delivered":
        return Delivered(_str(body, "id", MAX_ID), _peer(body, "to"))
    if kind == "ping":
        return Ping(_str(body, "nonce", MAX_NONCE))
    if kind == "error":
        to = body.get("to")
        return ServerError(
            code=_str(body, "code", 64),
            message=_str(body, "message", 4096, optional=True) or "",
            id=_str(body, "id", MAX_ID, optional=True),
            to=_peer(body, "to") if to is not None else None,
        )
    if kind == "punch":
        rtt = _number(body, "rtt_ms")
        return PunchRequest(
            _peer(body, "from"),
            _str(body, "id", MAX_ID),
            candidates_from_json(body.get("candidates")),
            rtt if rtt is not None else 0.0,
        )
    if kind == "punch_now":
        delay = _number(body, "delay_ms")
        return PunchNow(
            peer=_peer(body, "peer"),
            id=_str(body, "id", MAX_ID),
            candidates=candidates_from_json(body.get("candidates")),
            delay_ms=delay if delay is not None else 0.0,
            rtt_ms=_number(body, "rtt_ms", optional=True),
            peer_rtt_ms=_number(body, "peer_rtt_ms", optional=True),
        )
    if kind == "challenge":
        return Challenge(_str(body, "challenge", 256))
    if kind == "welcome":
        return Welcome(_peer(body, "peer_id"))
    raise _Bad(f"unknown message type {str(kind)[:32]!r}")


def parse(text: str) -> ServerMessage | ProtocolError:
    """One text message from the server, typed; a ``ProtocolError`` for anything else.
    Never raises."""
    try:
        body = _DECODER.decode(text)
        if not isinstance(body, dict):
            raise _Bad("expected a JSON object")
        return _parse(body)
    except (ValueError, RecursionError, TypeError) as exc:
        return ProtocolError(str(exc)[:200] or type(exc).__name__, text[:MAX_TEXT_IN_EVENT])


# -- what the client sends --------------------------------------------------------------


def _encode(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def hello_message(identity: Identity, challenge: str) -> str:
    signature = identity.sign(challenge.encode(), WEBSOCKET_HELLO)
    return _encode(
        {
            "type": "hello",
            "public_key": b64encode(identity.public_key),
            "signature": b64encode(signature),
        }
    )


def pong_message(nonce: str) -> str:
    return _encode({"type": "pong", "nonce": nonce})


def signal_message(to: str, message_id: str | None, data: Any) -> str:
    """``ValueError`` for data that is not JSON or larger than ``MAX_SIGNAL_BYTES``."""
    try:
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"signal data must be JSON: {exc}") from None
    if size > MAX_SIGNAL_BYTES:
        raise ValueError(f"signal data is {size} bytes as JSON; at most {MAX_SIGNAL_BYTES}")
    return _encode({"type": "signal", "to": to, "id": message_id, "data": data})


def punch_message(to: str, message_id: str, candidates: Sequence[Candidate]) -> str:
    return _encode(
        {"type": "punch", "to": to, "id": message_id, "candidates": _candidates(candidates)}
    )


def punch_accept_message(
    to: str, message_id: str, candidates: Sequence[Candidate], peer_rtt_ms: float
) -> str:
    if not 0 <= peer_rtt_ms <= 60_000:
        raise ValueError("peer_rtt_ms: from 0 to 60000")
    return _encode(
        {
            "type": "punch_accept",
            "to": to,
            "id": message_id,
            "candidates": _candidates(candidates),
            "peer_rtt_ms": peer_rtt_ms,
        }
    )


def _candidates(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    if len(candidates) > 16:
        raise ValueError("at most 16 candidates")
    return [c.to_json() for c in candidates]


def _check_id(message_id: str) -> str:
    if not isinstance(message_id, str) or not 1 <= len(message_id) <= MAX_ID:
        raise ValueError(f"message id: 1 to {MAX_ID} characters")
    return message_id


# -- the sans-IO core -------------------------------------------------------------------


class Kind(enum.Enum):
    SIGNAL = "signal"
    PUNCH = "punch"
    ACCEPT = "punch_accept"


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome of a request the client waits for: ``error`` (it failed), else
    delivered (a signal) or ``punch_now`` (a punch or punch_accept)."""

    id: str
    error: ServerError | None = None
    punch_now: PunchNow | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    replies: tuple[str, ...] = ()
    events: tuple[SignalingEvent, ...] = ()
    settled: tuple[Settled, ...] = ()


class SignalingState:
    """What an authenticated socket is waiting for, and what each message means."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self._pending: dict[str, tuple[Kind, str]] = {}  # id -> (kind, target peer)
        self._prefix = "nk." + secrets.token_hex(6) + "."
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def snapshot(self) -> tuple[object, ...]:
        """Everything the state holds (tests compare it before and after a message)."""
        return (self.peer_id, tuple(sorted(self._pending.items())))

    def track(self, message_id: str, kind: Kind, to: str) -> None:
        if message_id in self._pending:
            raise ValueError(f"message id {message_id!r} is already waiting for an answer")
        self._pending[message_id] = (kind, to)

    def forget(self, message_id: str) -> None:
        self._pending.pop(message_id, None)

    def pending(self) -> list[str]:
        return list(self._pending)

    def receive(self, text: str) -> Reaction:
        message = parse(text)
        if isinstance(message, ProtocolError):
            return Reaction(events=(message,))
        if isinstance(message, Ping):
            return Reaction(replies=(pong_message(message.nonce),))
        if isinstance(message, Challenge | Welcome):
            kind = type(message).__name__.lower()
            return Reaction(events=(ProtocolError(f"unexpected {kind}", text[:200]),))
        if isinstance(message, Delivered):
            waiting = self._pending.get(message.id)
            if waiting == (Kind.SIGNAL, message.to):
                del self._pending[message.id]
                return Reaction(settled=(Settled(message.id),))
            return Reaction(events=(message,))
        if isinstance(message, PunchNow):
            waiting = self._pending.get(message.id)
            if waiting is not None and waiting[0] != Kind.SIGNAL and waiting[1] == message.peer:
                del self._pending[message.id]
                return Reaction(settled=(Settled(message.id, punch_now=message),))
            return Reaction(events=(message,))
        if isinstance(message, ServerError) and message.id is not None:
            waiting = self._pending.get(message.id)
            if waiting is not None and message.to in (None, waiting[1]):
                del self._pending[message.id]
                return Reaction(settled=(Settled(message.id, error=message),))
        return Reaction(events=(message,))


# -- the socket -------------------------------------------------------------------------


def websocket_url(url: str, token: str | None = None) -> str:
    """``ws(s)://host:port[/prefix]/v1/ws`` for a rendezvous base URL, ``?token=`` for a
    tenant's credential (browsers cannot set headers on a WebSocket; the server accepts
    both)."""
    base = api_base(url)
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = f"?token={quote(token, safe='')}" if token else ""
    return f"{scheme}://{parts.netloc}{parts.path}/v1/ws{query}"


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """Why a socket ended: the WebSocket close code (None: the connection broke)."""

    code: int | None
    reason: str


async def _next_text(ws: aiohttp.ClientWebSocketResponse) -> str:
    message = await ws.receive()
    if message.type == aiohttp.WSMsgType.TEXT and isinstance(message.data, str):
        return message.data
    if message.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
    ):
        raise RendezvousError(
            "unauthenticated" if ws.close_code == UNAUTHENTICATED else "disconnected",
            f"the server closed the socket during the handshake ({ws.close_code})",
        )
    raise RendezvousError("protocol", f"expected a text message, got {message.type.name}")


class SignalingSocket:
    """One authenticated signaling WebSocket; ``open`` makes one.

    ``on_event`` gets every ``SignalingEvent`` that no request of this socket waits for
    (called from the reader task; it must not block). ``queue_size`` bounds the messages
    waiting to be written: ``signal`` and the punch calls wait for room."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        peer_id: str,
        url: str,
        on_event: Callable[[SignalingEvent], None],
        queue_size: int = 256,
    ) -> None:
        self.url = url
        self.peer_id = peer_id
        self.state = SignalingState(peer_id)
        self._ws = ws
        self._on_event = on_event
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max(1, queue_size))
        self._waiters: dict[str, asyncio.Future[Settled]] = {}
        loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[CloseInfo] = loop.create_future()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        url: str,
        identity: Identity,
        *,
        token: str | None = None,
        on_event: Callable[[SignalingEvent], None],
        queue_size: int = 256,
        handshake_timeout: float = 10.0,
        heartbeat: float | None = 20.0,
    ) -> SignalingSocket:
        """Connect to ``url``'s ``/v1/ws`` and authenticate as ``identity``;
        ``RendezvousError`` when that fails."""
        target = websocket_url(url, token)
        try:
            async with asyncio.timeout(handshake_timeout):
                ws = await session.ws_connect(
                    target, heartbeat=heartbeat, max_msg_size=MAX_MESSAGE_BYTES, autoping=True
                )
        except aiohttp.WSServerHandshakeError as exc:
            code = {401: "unauthenticated", 403: "forbidden", 429: "rate_limited"}
            raise RendezvousError(
                code.get(exc.status, "handshake_failed"),
                str(exc.message),
                status=exc.status,
                url=url,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RendezvousError(
                "connection_failed", str(exc) or type(exc).__name__, url=url
            ) from None
        except TimeoutError:
            raise RendezvousError("timeout", "no WebSocket in time", url=url) from None
        try:
            async with asyncio.timeout(handshake_timeout):
                first = parse(await _next_text(ws))
                if not isinstance(first, Challenge):
                    raise RendezvousError("protocol", f"expected a challenge, got {first}", url=url)
                await ws.send_str(hello_message(identity, first.challenge))
                while True:
                    answer = parse(await _next_text(ws))
                    if isinstance(answer, Ping):
                        await ws.send_str(pong_message(answer.nonce))
                        continue
                    if isinstance(answer, ServerError):
                        raise RendezvousError(answer.code, answer.message, url=url)
                    if isinstance(answer, Welcome) and answer.peer_id == identity.peer_id:
                        break
                    raise RendezvousError("protocol", f"expected a welcome, got {answer}", url=url)
        except BaseException as exc:
            await ws.close()
            if isinstance(exc, TimeoutError):
                raise RendezvousError("timeout", "no welcome in time", url=url) from None
            if isinstance(exc, aiohttp.ClientError | ConnectionError):
                raise RendezvousError("connection_failed", str(exc), url=url) from None
            raise
        return cls(ws, identity.peer_id, url, on_event, queue_size)

    # -- state ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> CloseInfo:
        return await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Close the socket (pending requests fail with ``disconnected``)."""
        await self._ws.close()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._finish(CloseInfo(self._ws.close_code, "closed by the client"))

    # -- requests ------------------------------------------------------------------------

    async def signal(
        self, to: str, data: Any, *, message_id: str | None = None, confirm: bool = True
    ) -> None:
        """Send ``data`` (any JSON, at most 16 KiB encoded) to peer ``to``; with
        ``confirm``, return once the server acknowledges it ``delivered``,
        ``RendezvousError("unreachable")`` when the target is connected nowhere (no
        timeout here: ``RendezvousClient.signal`` has one). Without ``confirm`` it is
        sent with ``message_id`` as given (none: no acknowledgement comes)."""
        check_peer_id(to)
        message_id = _check_id(message_id) if message_id is not None else None
        if not confirm:
            await self._put(signal_message(to, message_id, data))
            if self.closed:  # it waited for room, and the socket closed meanwhile
                raise RendezvousError("disconnected", "the socket closed", url=self.url)
            return
        message_id = message_id or self.state.new_id()
        text = signal_message(to, message_id, data)
        settled = await self._request(message_id, Kind.SIGNAL, to, text)
        self._raise(settled, to)

    async def punch(
        self, to: str, candidates: Sequence[Candidate], *, message_id: str | None = None
    ) -> PunchNow:
        """Ask ``to`` to punch with us; its ``punch_now`` once it accepts (wrap in a
        timeout: a peer may never accept)."""
        check_peer_id(to)
        message_id = _check_id(message_id) if message_id is not None else self.state.new_id()
        text = punch_message(to, message_id, candidates)
        settled = await self._request(message_id, Kind.PUNCH, to, text)
        return self._go(settled, to)

    async def punch_accept(
        self, to: str, message_id: str, candidates: Sequence[Candidate], peer_rtt_ms: float
    ) -> PunchNow:
        """Accept ``to``'s ``PunchRequest`` ``message_id``; our ``punch_now``."""
        check_peer_id(to)
        text = punch_accept_message(to, _check_id(message_id), candidates, peer_rtt_ms)
        settled = await self._request(message_id, Kind.ACCEPT, to, text)
        return self._go(settled, to)

    def _raise(self, settled: Settled, to: str) -> None:
        if settled.error is not None:
            error = settled.error
            raise RendezvousError(error.code, error.message or f"{to}: {error.code}", url=self.url)

    def _go(self, settled: Settled, to: str) -> PunchNow:
        self._raise(settled, to)
        if settled.punch_now is None:  # pragma: no cover - a punch settles with punch_now
            raise RendezvousError("protocol", "a punch settled without punch_now", url=self.url)
        return settled.punch_now

    async def _request(self, message_id: str, kind: Kind, to: str, text: str) -> Settled:
        if self.closed:
            raise RendezvousError("disconnected", "the signaling socket is closed", url=self.url)
        self.state.track(message_id, kind, to)
        waiter: asyncio.Future[Settled] = asyncio.get_running_loop().create_future()
        self._waiters[message_id] = waiter
        try:
            await self._put(text)
            return await waiter
        finally:
            self._waiters.pop(message_id, None)
            self.state.forget(message_id)

    async def _put(self, text: str) -> None:
        if self.closed:
            raise RendezvousError("disconnected", "the signaling socket is closed", url=self.url)
        await self._queue.put(text)

    # -- tasks ---------------------------------------------------------------------------

    async def _write(self) -> None:
        try:
            while True:
                await self._ws.send_str(await self._queue.get())
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.info("signaling %s: write failed: %s", self.url, exc)
            await self._ws.close()

    async def _read(self) -> None:
        info = CloseInfo(None, "connection lost")
        try:
            while True:
                message = await self._ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT and isinstance(message.data, str):
                    self._react(self.state.receive(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self._emit(ProtocolError("a binary message", ""))
                elif message.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    code = self._ws.close_code
                    info = CloseInfo(code, "closed by the server" if code else "connection lost")
                    break
        finally:
            self._writer.cancel()
            self._finish(info)

    def _react(self, reaction: Reaction) -> None:
        for reply in reaction.replies:
            with contextlib.suppress(asyncio.QueueFull):  # a full queue: skip this pong
                self._queue.put_nowait(reply)
        for settled in reaction.settled:
            waiter = self._waiters.get(settled.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(settled)
        for event in reaction.events:
            self._emit(event)

    def _emit(self, event: SignalingEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # the app's bug must not kill the socket
            log.exception("signaling event handler failed")

    def _finish(self, info: CloseInfo) -> None:
        if self._closed.done():
            return
        self._closed.set_result(info)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(
                    RendezvousError(
                        "disconnected", f"the signaling socket closed ({info.reason})", url=self.url
                    )
                )
        while not self._queue.empty():
            self._queue.get_nowait()
