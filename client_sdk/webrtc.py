"""WebRTC with natkit infrastructure: aiortc's ``RTCPeerConnection`` gets its ICE servers
(the relays' STUN and TURN, with TURN REST credentials) and its signaling (the SDP offer
and answer) from the rendezvous (issue #6).

aiortc and aioice do ICE, DTLS, SCTP and media; this module only feeds them. Each side
gathers every candidate before its description is final (aiortc has no trickle ICE), so
one offer and one answer -- each one ``Peer.signal`` -- set up a connection.

    async with Peer(url) as peer, WebRtcSignaling(peer) as signaling:    # dialler
        pc = await create_peer_connection(peer)     # relay_only=True: TURN only
        channel = pc.createDataChannel("chat")
        await signaling.dial(other_peer_id, pc)
        await wait_connected(pc)
        channel.send("hi")

    async with Peer(url) as peer, WebRtcSignaling(peer) as signaling:    # answerer
        pc = await create_peer_connection(peer)
        pc.on("datachannel", on_channel)
        caller = await signaling.accept(pc)         # or next_offer() + answer()/decline()

Open the ``WebRtcSignaling`` before offers can come: it queues them from then on (a
``Peer.signals()`` subscription), and one sent before is not seen.

**Messages.** Ordinary signals (``Peer.signal``), each a JSON object namespaced
``{"natkit": "webrtc", "v": 1, "kind": ..., "session": ...}``: ``kind`` ``offer`` or
``answer`` with ``sdp`` (RFC 8866 text, as aiortc writes it: RFC 8829 JSEP with its
candidates inline), or ``decline`` with a short ``reason``. ``session`` is the dialler's
random id, which the answer repeats; an answer counts only from the peer that was dialled.
Signals of other apps, and malformed or unexpected ones, are ignored (logged at debug).

**aiortc's limits** (1.16): it uses the first ``stun:`` URL and the first ``turn:``/
``turns:`` URL it is given and ignores the rest, it cannot parse an IPv6 literal in one
(a ``ValueError`` when the connection is built), it rejects ``?transport=`` on ``stun:``
(RFC 7064) and it only speaks STUN over UDP. ``ice_servers`` therefore hands it what it
can use, the preferred TURN transport first. Its ``iceTransportPolicy`` wants the enum
``RTCIceTransportPolicy.RELAY``, not the string ``"relay"``; ``rtc_configuration(...,
relay_only=True)`` sets it. Without ``iceServers`` aiortc uses Google's STUN server;
``rtc_configuration`` always passes a list (maybe empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp

from client_sdk.connect.relay import TurnServer, parse_turn_uri
from client_sdk.peer import Peer
from client_sdk.rendezvous.client import Subscription
from client_sdk.rendezvous.http import RendezvousError, TurnCredentials, check_peer_id
from client_sdk.rendezvous.signaling import MAX_SIGNAL_BYTES, IncomingSignal

__all__ = [
    "DEFAULT_TIMEOUT",
    "IncomingOffer",
    "WebRtcError",
    "WebRtcSignaling",
    "create_peer_connection",
    "ice_servers",
    "ice_servers_from",
    "parse_message",
    "rtc_configuration",
    "wait_connected",
]

log = logging.getLogger(__name__)

NAMESPACE: Final = "webrtc"  # the "natkit" member of each of our signals
VERSION: Final = 1
DEFAULT_TIMEOUT: Final = 30.0  # a dial: both sides gather (aioice: <= 5 s each), 2 signals
MAX_SDP: Final = MAX_SIGNAL_BYTES - 256  # room for the envelope within one signal
MAX_REASON: Final = 200
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# What aiortc's URL regex takes as a host (``[^?:]+``), narrowed to names and IPv4.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


class WebRtcError(Exception):
    """Signaling a WebRTC session failed. ``code``: ``unreachable`` (the other peer is
    connected nowhere), ``timeout``, ``declined`` (the other peer refused the offer, or
    its aiortc could not apply it), ``bad_description`` (ours, or the answer, was refused
    by aiortc or is too large for a signal), ``failed`` (ICE/DTLS failed or the
    connection closed), ``closed`` (this ``WebRtcSignaling`` closed), ``no_relay``,
    or a ``RendezvousError`` code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# -- ICE servers ------------------------------------------------------------------------


def _stun_url(uri: str) -> str | None:
    """``stun:host[:port]`` (RFC 7064 §3.1) as aiortc parses it; None for anything else
    (``stuns:``: aioice has no STUN over TLS)."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() != "stun":
        return None
    hostport = rest.partition("?")[0]  # RFC 7064 has no ?transport; aiortc refuses one
    host, _, port_text = hostport.partition(":")
    if not _HOST.fullmatch(host):
        return None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        return f"stun:{host}:{int(port_text)}"
    return f"stun:{host}:3478"


def ice_servers_from(
    credentials: TurnCredentials, *, prefer: Literal["udp", "tcp"] = "udp"
) -> list[RTCIceServer]:
    """The ``RTCIceServer``s for the URIs in ``credentials`` (from ``GET
    /v1/turn-credentials``): one with the STUN URLs -- the ``stun:`` URIs given, then
    each UDP TURN server's own address, as a natkit relay (like any TURN server, RFC 8656
    §3) answers STUN Binding there -- and one with the TURN URLs and the REST credentials,
    ``prefer``'s transport first (aiortc uses only the first of each). URIs aiortc
    cannot use (IPv6 literals, ``stuns:``, malformed) are left out; no URI: an empty
    list."""
    stun: list[str] = []
    derived: list[str] = []
    turn: list[TurnServer] = []
    for uri in credentials.uris:
        if not isinstance(uri, str):
            continue
        url = _stun_url(uri)
        if url is not None:
            stun.append(url)
            continue
        server = parse_turn_uri(uri)
        if server is None or not _HOST.fullmatch(server.host):
            log.debug("ice servers: %r left out (aiortc cannot use it)", uri[:100])
            continue
        turn.append(server)
        if server.transport == "udp" and not server.tls:
            derived.append(f"stun:{server.host}:{server.port}")
    turn.sort(key=lambda s: s.transport != prefer)  # stable: the rendezvous's order within
    servers: list[RTCIceServer] = []
    stun_urls = list(dict.fromkeys(stun + derived))
    if stun_urls:
        servers.append(RTCIceServer(urls=stun_urls))
    turn_urls = list(dict.fromkeys(str(s) for s in turn))
    if turn_urls:
        servers.append(
            RTCIceServer(
                urls=turn_urls,
                username=credentials.username,
                credential=credentials.password,
                credentialType="password",
            )
        )
    return servers


async def ice_servers(
    peer: Peer, region: str = "", *, prefer: Literal["udp", "tcp"] = "udp"
) -> list[RTCIceServer]:
    """The ICE servers of ``peer``'s deployment: TURN REST credentials from the rendezvous
    (its relays, ``region``'s first), as ``ice_servers_from`` maps them.
    ``RendezvousError`` when the rendezvous has none (``no_relays``,
    ``no_turn_secret``) or cannot be reached."""
    return ice_servers_from(await peer.turn_credentials(region), prefer=prefer)


def rtc_configuration(
    servers: Sequence[RTCIceServer], *, relay_only: bool = False
) -> RTCConfiguration:
    """An ``RTCConfiguration`` with ``servers``, every medium bundled on one transport
    (one TURN allocation, not one per medium: RFC 9143). ``relay_only``: only relayed
    candidates (``iceTransportPolicy`` ``relay``, RFC 9429 §4.1.1), so every path goes
    through the TURN server and no local address is revealed; ``WebRtcError``
    (``no_relay``) when ``servers`` has no TURN URL."""
    if relay_only and not any(_turn_urls(server) for server in servers):
        raise WebRtcError("no_relay", "relay_only needs a turn: or turns: URL")
    return RTCConfiguration(
        iceServers=list(servers),
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


def _turn_urls(server: RTCIceServer) -> list[str]:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return [url for url in urls if url.lower().startswith(("turn:", "turns:"))]


async def create_peer_connection(
    peer: Peer,
    *,
    region: str = "",
    relay_only: bool = False,
    prefer: Literal["udp", "tcp"] = "udp",
) -> RTCPeerConnection:
    """An ``RTCPeerConnection`` using ``peer``'s relays (``ice_servers``,
    ``rtc_configuration``)."""
    servers = await ice_servers(peer, region, prefer=prefer)
    return RTCPeerConnection(rtc_configuration(servers, relay_only=relay_only))


async def wait_connected(pc: RTCPeerConnection, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Until ``pc`` is ``connected`` (ICE and DTLS done); ``WebRtcError`` ``failed`` when
    it fails or closes first, ``timeout`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[str] = loop.create_future()

    def check() -> None:
        state = pc.connectionState
        if state in ("connected", "failed", "closed") and not outcome.done():
            outcome.set_result(state)

    pc.on("connectionstatechange", check)
    try:
        check()
        try:
            async with asyncio.timeout(timeout):
                state = await outcome
        except TimeoutError:
            raise WebRtcError(
                "timeout", f"not connected within {timeout:g} s ({pc.connectionState})"
            ) from None
    finally:
        pc.remove_listener("connectionstatechange", check)
    if state != "connected":
        raise WebRtcError("failed", f"the connection is {state}")


# -- signaling --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncomingOffer:
    """An offer another peer sent: answer it (``WebRtcSignaling.answer``) or decline."""

    sender: str
    session: str
    sdp: str

    @property
    def description(self) -> RTCSessionDescription:
        return RTCSessionDescription(sdp=self.sdp, type="offer")


@dataclass(frozen=True, slots=True)
class _Answer:
    sdp: str


@dataclass(frozen=True, slots=True)
class _Decline:
    reason: str


_Message = tuple[Literal["offer", "answer", "decline"], str, str]  # kind, session, text


def _usable_sdp(text: str) -> bool:
    """Whether aiortc parses ``text`` into a description with at least one media section
    (its parser raises anything on garbage, and takes some garbage as empty)."""
    try:
        return len(aiortc_sdp.SessionDescription.parse(text).media) > 0
    except Exception:
        return False


def parse_message(data: Any) -> _Message | None:
    """One of our signals as ``(kind, session, sdp or reason)``; None for anything else
    (another app's signal, or a malformed one: never an exception)."""
    if not isinstance(data, dict) or data.get("natkit") != NAMESPACE:
        return None
    kind, session = data.get("kind"), data.get("session")
    version = data.get("v")
    if type(version) is not int or version != VERSION or not isinstance(session, str):
        return None
    if not SESSION_ID.fullmatch(session):
        return None
    if kind == "decline":
        reason = data.get("reason")
        return ("decline", session, reason[:MAX_REASON] if isinstance(reason, str) else "")
    text = data.get("sdp")
    if kind not in ("offer", "answer") or not isinstance(text, str) or len(text) > MAX_SDP:
        return None
    if not _usable_sdp(text):
        return None
    return ("offer" if kind == "offer" else "answer", session, text)


def _message(kind: str, session: str, **fields: str) -> dict[str, Any]:
    return {"natkit": NAMESPACE, "v": VERSION, "kind": kind, "session": session, **fields}


class WebRtcSignaling:
    """SDP offers and answers between ``peer`` and other natkit peers, over the
    rendezvous. ``async with`` it (or ``close()`` it); from then on offers to ``peer``
    queue up (at most ``backlog``; more are dropped) for ``next_offer``/``accept``,
    while ``dial`` sends ours. ``timeout``: the default bound of each call. Any peer of
    the deployment can send an offer: ``accept`` answers whoever comes first, while
    ``next_offer`` shows the ``sender`` before ``answer`` or ``decline``. Construct it in
    a coroutine (it starts a reader task)."""

    def __init__(self, peer: Peer, *, timeout: float = DEFAULT_TIMEOUT, backlog: int = 16) -> None:
        self.peer = peer
        self.timeout = timeout
        self._offers: asyncio.Queue[IncomingOffer] = asyncio.Queue(maxsize=max(1, backlog))
        self._dials: dict[str, tuple[str, asyncio.Future[_Answer | _Decline]]] = {}
        self._closed = False
        self._subscription: Subscription = peer.signals()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def __aenter__(self) -> WebRtcSignaling:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop listening: pending ``dial``s and ``next_offer``s fail (``closed``)."""
        self._closed = True
        self._subscription.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        for _, waiter in self._dials.values():
            if not waiter.done():
                waiter.set_exception(WebRtcError("closed", "the signaling closed"))
        with contextlib.suppress(asyncio.QueueFull):  # wakes a next_offer() waiting
            self._offers.put_nowait(_CLOSED)

    # -- dialling ------------------------------------------------------------------------

    async def dial(
        self, remote_peer_id: str, pc: RTCPeerConnection, *, timeout: float | None = None
    ) -> None:
        """Offer ``pc`` (its data channels and tracks added already) to
        ``remote_peer_id`` and apply its answer; returns once both descriptions are set
        (ICE and DTLS then run in aiortc's background: ``wait_connected``). The whole
        exchange -- our gathering, delivery, the other side's gathering and answer -- is
        bounded by ``timeout`` (default: the signaling's). ``WebRtcError`` otherwise;
        ``ValueError`` for a malformed peer id."""
        check_peer_id(remote_peer_id)
        limit = self.timeout if timeout is None else timeout
        self._check_open()
        session = secrets.token_urlsafe(16)
        waiter: asyncio.Future[_Answer | _Decline] = asyncio.get_running_loop().create_future()
        self._dials[session] = (remote_peer_id, waiter)
        try:
            async with asyncio.timeout(limit):
                await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
                offer = pc.localDescription.sdp
                await self._send(remote_peer_id, _message("offer", session, sdp=offer), limit)
                reply = await waiter
        except TimeoutError:
            raise WebRtcError(
                "timeout", f"no answer from {remote_peer_id} within {limit:g} s"
            ) from None
        finally:
            self._dials.pop(session, None)
        if isinstance(reply, _Decline):
            raise WebRtcError("declined", f"{remote_peer_id} declined: {reply.reason}")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError, ...
            raise WebRtcError("bad_description", f"the answer was refused: {exc}") from exc

    # -- answering -----------------------------------------------------------------------

    async def next_offer(self, *, timeout: float | None = None) -> IncomingOffer:
        """The next offer to this peer (``timeout``: None waits as long as it takes);
        ``WebRtcError`` ``timeout``, or ``closed`` once the signaling closed."""
        self._check_open()
        try:
            async with asyncio.timeout(timeout):
                offer = await self._offers.get()
        except TimeoutError:
            raise WebRtcError("timeout", f"no offer within {timeout:g} s") from None
        if offer is _CLOSED:
            self._offers.put_nowait(_CLOSED)  # stays closed for the next caller
            raise WebRtcError("closed", "the signaling closed")
        return offer

    async def answer(
        self, offer: IncomingOffer, pc: RTCPeerConnection, *, timeout: float | None = None
    ) -> None:
        """Apply ``offer`` to ``pc`` (a fresh one: its ``datachannel`` and ``track``
        events fire for what the offer brings) and send our answer. When aiortc refuses
        the offer, the dialler is told (``decline``) and ``WebRtcError``
        ``bad_description`` raised."""
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                try:
                    await pc.setRemoteDescription(offer.description)
                except Exception as exc:
                    await self._decline(offer, "the offer was refused", limit)
                    raise WebRtcError(
                        "bad_description", f"the offer from {offer.sender} was refused: {exc}"
                    ) from exc
                await pc.setLocalDescription(await pc.createAnswer())  # gathers
                answer = pc.localDescription.sdp
                data = _message("answer", offer.session, sdp=answer)
                await self._send(offer.sender, data, limit)
        except TimeoutError:
            raise WebRtcError(
                "timeout", f"answering {offer.sender} took over {limit:g} s"
            ) from None

    async def accept(self, pc: RTCPeerConnection, *, timeout: float | None = None) -> str:
        """Wait for the next offer (``timeout``: None waits as long as it takes), answer
        it with ``pc``, and return the caller's peer id."""
        offer = await self.next_offer(timeout=timeout)
        await self.answer(offer, pc)
        return offer.sender

    async def decline(self, offer: IncomingOffer, reason: str = "declined") -> None:
        """Refuse ``offer``: its ``dial`` fails at once (``declined``) instead of timing
        out. Best effort: a peer gone meanwhile is not an error."""
        await self._decline(offer, reason, self.timeout)

    async def _decline(self, offer: IncomingOffer, reason: str, limit: float) -> None:
        data = _message("decline", offer.session, reason=reason[:MAX_REASON])
        with contextlib.suppress(WebRtcError):
            await self._send(offer.sender, data, limit)

    # -- plumbing ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise WebRtcError("closed", "the signaling closed")

    async def _send(self, to: str, data: dict[str, Any], timeout: float) -> None:
        sdp = data.get("sdp")
        if isinstance(sdp, str) and len(sdp) > MAX_SDP:
            raise WebRtcError(
                "bad_description",
                f"the {data['kind']} is {len(sdp)} characters; a signal carries {MAX_SDP}",
            )
        try:
            await self.peer.signal(to, data, timeout=timeout)
        except RendezvousError as exc:
            raise WebRtcError(exc.code, f"signaling {to}: {exc.message}") from exc
        except ValueError as exc:  # a bad peer id, or data over the size limit
            raise WebRtcError("bad_description", str(exc)) from exc

    async def _read(self) -> None:
        try:
            async for event in self._subscription:
                if isinstance(event, IncomingSignal):
                    self._receive(event)
        finally:
            self._finish()

    def _receive(self, event: IncomingSignal) -> None:
        message = parse_message(event.data)
        if message is None:
            if isinstance(event.data, dict) and event.data.get("natkit") == NAMESPACE:
                log.debug("webrtc: a malformed signal from %s ignored", event.sender)
            return
        kind, session, text = message
        if kind == "offer":
            try:
                self._offers.put_nowait(IncomingOffer(event.sender, session, text))
            except asyncio.QueueFull:
                log.info("webrtc: offer from %s dropped (backlog full)", event.sender)
            return
        dialled = self._dials.get(session)
        if dialled is None or dialled[0] != event.sender or dialled[1].done():
            log.debug("webrtc: an unexpected %s from %s ignored", kind, event.sender)
            return
        dialled[1].set_result(_Answer(text) if kind == "answer" else _Decline(text))


_CLOSED: Final = IncomingOffer("", "", "")  # the end of the offer queue
