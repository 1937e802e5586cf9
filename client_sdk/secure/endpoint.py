"""asyncio shim: ``SecureSession``s over one datagram socket (or any datagram path).

``SecureEndpoint`` is an ``asyncio.DatagramProtocol``. ``await SecureEndpoint.bind(...)``
opens its own UDP socket; otherwise give it ``send(datagram, addr)`` and feed it
``datagram_received(data, addr)`` yourself, which is how a hole-punched socket owned by
other code or a TURN channel carries sessions. Datagrams are demultiplexed by the
receiver index in the header; a message 1 (which has none yet) goes to the session
handshaking with the peer it claims to come from, or else, when the endpoint accepts
incoming channels, to a new responder session.

    endpoint = await SecureEndpoint.bind(identity, ("0.0.0.0", 0))
    channel = endpoint.connect(peer_id, addr)   # or: channel = await endpoint.accept()
    await channel.wait_established()
    channel.send(b"hello")
    data = await channel.recv()

Handshake answers go to the address the message came from. The channel takes the peer's
address from the message that completes the handshake and then follows it whenever an
authenticated, non-replayed transport datagram comes from a new one (a NAT rebinding), as
WireGuard does (so, as there, an on-path attacker who races a captured datagram can
steer the channel's traffic until the peer's next datagram; it still can't read it).

Limits: an endpoint keeps at most ``max_incoming_handshakes`` incoming handshakes at a
time and each session at most ``max_pending_responders`` answers, so a flood of forged
messages 1 can delay new incoming channels until those time out (WireGuard's cookie
reply would be the next step); established channels are not affected.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from client_sdk.identity import Identity
from client_sdk.secure.session import (
    DEFAULT_PURPOSE,
    ChannelError,
    DatagramReceived,
    HandshakeComplete,
    MessageType,
    Role,
    SecureSession,
    SessionConfig,
    SessionFailed,
    initiation_peer_id,
    new_session_index,
    parse_header,
)

Address = tuple[Any, ...]
SendFunction = Callable[[bytes, Address], None]
DEFAULT_INBOX = 1024


class SecureChannel:
    """One session on an endpoint, with awaitable receive."""

    def __init__(
        self,
        endpoint: SecureEndpoint,
        session: SecureSession,
        addr: Address,
        *,
        incoming: bool,
        max_inbox: int = DEFAULT_INBOX,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self.addr = addr
        self.incoming = incoming
        self.inbox_dropped = 0
        self._max_inbox = max_inbox
        self._inbox: deque[bytes] = deque()
        self._settled = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._failure: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @property
    def remote_peer_id(self) -> str | None:
        return self.session.remote_peer_id

    @property
    def is_established(self) -> bool:
        return self.session.is_established

    async def wait_established(self) -> str:
        """The remote peer id once the handshake completes; ChannelError if it fails."""
        await self._settled.wait()
        if self._failure is not None:
            raise ChannelError(self._failure)
        peer_id = self.session.remote_peer_id
        if peer_id is None:  # pragma: no cover - set when established
            raise ChannelError("established without a peer id")
        return peer_id

    async def recv(self) -> bytes:
        """The next datagram's payload; ChannelError once the session has failed or closed
        and everything received before has been read."""
        while not self._inbox:
            if self._failure is not None:
                raise ChannelError(self._failure)
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._inbox.popleft()

    def send(self, data: bytes) -> None:
        """Seal and send one datagram (at most ``session.max_payload`` bytes)."""
        self.session.send(data, self.endpoint.now())
        self.endpoint._service(self)

    def close(self) -> None:
        if self._failure is None:
            self.session.close()
            self._on_failed("closed")
            self.endpoint._forget(self)

    # called by the endpoint
    def _deliver(self, data: bytes) -> None:
        if len(self._inbox) >= self._max_inbox:
            self.inbox_dropped += 1
            return
        self._inbox.append(data)
        self._wake()

    def _on_failed(self, reason: str) -> None:
        self._failure = reason
        self._settled.set()
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None


class SecureEndpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        identity: Identity,
        *,
        purpose: bytes = DEFAULT_PURPOSE,
        config: SessionConfig | None = None,
        send: SendFunction | None = None,
        accept_incoming: bool = True,
        max_incoming_handshakes: int = 64,
    ) -> None:
        self.identity = identity
        self.purpose = purpose
        self.config = config if config is not None else SessionConfig()
        self.accept_incoming = accept_incoming
        self.max_incoming_handshakes = max_incoming_handshakes
        self.dropped = 0
        self._send = send
        self._transport: asyncio.DatagramTransport | None = None
        self._by_index: dict[int, SecureChannel] = {}
        self._handshaking: dict[str, SecureChannel] = {}
        self._accepted: deque[SecureChannel] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._closed = False

    @classmethod
    async def bind(
        cls, identity: Identity, local_addr: Address = ("127.0.0.1", 0), **kwargs: Any
    ) -> SecureEndpoint:
        """An endpoint on its own new UDP socket."""
        loop = asyncio.get_running_loop()
        endpoint = cls(identity, **kwargs)
        await loop.create_datagram_endpoint(lambda: endpoint, local_addr=local_addr)
        return endpoint

    @property
    def local_address(self) -> Address:
        if self._transport is None:
            raise ChannelError("the endpoint has no socket")
        return cast(Address, self._transport.get_extra_info("sockname"))

    @property
    def channels(self) -> list[SecureChannel]:
        return list(self._by_index.values())

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def connect(self, peer_id: str, addr: Address) -> SecureChannel:
        """Start a handshake with ``peer_id`` at ``addr``; await ``wait_established()``."""
        if self._closed:
            raise ChannelError("the endpoint is closed")
        session = self._new_session(peer_id)
        channel = SecureChannel(self, session, addr, incoming=False)
        self._by_index[session.local_index] = channel
        self._handshaking[peer_id] = channel
        session.connect(self.now())
        self._service(channel)
        return channel

    async def accept(self) -> SecureChannel:
        """The next incoming channel whose handshake has completed."""
        while not self._accepted:
            if self._closed:
                raise ChannelError("the endpoint is closed")
            if self._accept_waiter is None or self._accept_waiter.done():
                self._accept_waiter = asyncio.get_running_loop().create_future()
            await self._accept_waiter
        return self._accepted.popleft()

    def close(self) -> None:
        self._closed = True
        for channel in list(self._by_index.values()):
            channel.close()
        if self._accept_waiter is not None and not self._accept_waiter.done():
            self._accept_waiter.set_result(None)
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------ DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for channel in list(self._by_index.values()):
            channel.session.close()
            channel._on_failed("the socket closed")
            self._forget(channel)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        header = parse_header(data)
        if header is None:
            self.dropped += 1
            return
        kind, receiver = header
        if kind is MessageType.INITIATION:
            self._on_initiation(data, addr)
            return
        channel = self._by_index.get(receiver)
        if channel is None:
            self.dropped += 1
            return
        session = channel.session
        was_established = session.is_established
        if session.receive(data, self.now()) and (
            kind is MessageType.TRANSPORT or (session.is_established and not was_established)
        ):
            channel.addr = addr  # authenticated and new: the peer is there (now)
        self._service(channel, reply_to=None if kind is MessageType.TRANSPORT else addr)

    def _on_initiation(self, data: bytes, addr: Address) -> None:
        peer_id = initiation_peer_id(data)
        if peer_id is None:
            self.dropped += 1
            return
        channel = self._handshaking.get(peer_id)
        if channel is not None:
            # The answer goes where this message 1 came from: a forged message 1 from
            # elsewhere must not steer the answers to the real one.
            channel.session.receive(data, self.now())
            self._service(channel, reply_to=addr)
            return
        incoming = sum(1 for c in self._handshaking.values() if c.incoming)
        if not self.accept_incoming or incoming >= self.max_incoming_handshakes:
            self.dropped += 1
            return
        session = self._new_session(None)
        if not session.receive(data, self.now()):
            self.dropped += 1
            return
        channel = SecureChannel(self, session, addr, incoming=True)
        self._by_index[session.local_index] = channel
        self._handshaking[peer_id] = channel
        self._service(channel)

    # ------------------------------------------------------------ driving sessions

    def _new_session(self, peer_id: str | None) -> SecureSession:
        index = new_session_index()
        while index in self._by_index:
            index = new_session_index()
        return SecureSession(
            self.identity,
            remote_peer_id=peer_id,
            purpose=self.purpose,
            config=self.config,
            local_index=index,
        )

    def _send_datagram(self, datagram: bytes, addr: Address) -> None:
        if self._send is not None:
            self._send(datagram, addr)
        elif self._transport is not None:
            self._transport.sendto(datagram, addr)
        else:
            raise ChannelError("the endpoint has neither a socket nor a send function")

    def _service(self, channel: SecureChannel, reply_to: Address | None = None) -> None:
        """Send what the session queued (to ``reply_to`` when it answers a handshake
        message, else to the channel's address), act on its events, and set its timer."""
        session = channel.session
        destination = reply_to if reply_to is not None else channel.addr
        for datagram in session.datagrams_to_send():
            self._send_datagram(datagram, destination)
        while (event := session.next_event()) is not None:
            if isinstance(event, DatagramReceived):
                channel._deliver(event.data)
            elif isinstance(event, HandshakeComplete):
                self._settle_handshake(channel)
                channel._settled.set()
                if channel.incoming and session.role is Role.RESPONDER:
                    self._accepted.append(channel)
                    if self._accept_waiter is not None and not self._accept_waiter.done():
                        self._accept_waiter.set_result(None)
            elif isinstance(event, SessionFailed):
                channel._on_failed(event.reason)
                self._forget(channel)
                return
        deadline = session.get_timer()
        if deadline != channel._timer_at:
            channel._cancel_timer()
            if deadline is not None:
                loop = asyncio.get_running_loop()
                channel._timer = loop.call_at(deadline, self._on_timer, channel, deadline)
                channel._timer_at = deadline

    def _on_timer(self, channel: SecureChannel, deadline: float) -> None:
        channel._timer = None
        channel._timer_at = None
        # asyncio may run a timer a clock tick early; the session must see its deadline.
        channel.session.handle_timer(max(self.now(), deadline))
        self._service(channel)

    def _settle_handshake(self, channel: SecureChannel) -> None:
        for peer_id, other in list(self._handshaking.items()):
            if other is channel:
                del self._handshaking[peer_id]

    def _forget(self, channel: SecureChannel) -> None:
        self._settle_handshake(channel)
        if self._by_index.get(channel.session.local_index) is channel:
            del self._by_index[channel.session.local_index]
