"""What a signaling socket does with what it is sent, whichever server carries it.

Two front ends serve ``/v1/ws``: aiohttp's route (``rendezvous.api.ws``, for an app
embedded in another aiohttp server) and the lean listener on the API port
(``rendezvous.signaling.websocket``). Both run a socket through ``Signaling``:

1. ``challenge()``: the first message the server sends;
2. ``hello(challenge, text)``: the peer id the client proved it holds, or ``Refused``;
3. ``connection(...)``, registered with the hub, then ``welcome``;
4. per message, ``plan`` (checks it and answers what needs no delivery: errors, pongs),
   then the hub delivers, then ``outcome`` (counts it and answers the sender: a target
   connected nowhere gets it an ``unreachable`` error; a delivered signal with an ``id``
   a ``delivered`` acknowledgement, a delivered punch_accept its own ``punch_now``).

"Delivered" is exactly "not unreachable": the hub handed the message to the target's
connection on this instance (in-process bus), or its publish reached an instance
subscribed to the target (Redis: PUBLISH's receiver count). A socket's messages are
handled in order, so its acknowledgements and errors come in the order it sent them.

Nothing here waits: delivery is the front end's, with ``await hub.send`` or, on the
in-process bus, ``hub.send_now``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiohttp import WSCloseCode
from prometheus_client import Counter
from pydantic import ValidationError

from client_sdk.identity import WEBSOCKET_HELLO, IdentityError, b64decode, peer_id_of, verify
from rendezvous.api.errors import validation_message
from rendezvous.challenges import Challenges
from rendezvous.signaling import protocol, punch
from rendezvous.signaling.hub import Connection, Hub, Socket
from rendezvous.tenants import Access

HELLO_TIMEOUT = 10.0
UNAUTHENTICATED = 4401


class Refused(Exception):
    """A hello that proves no key; the message says why."""


class Delivery(NamedTuple):
    address: str  # the hub address of the target
    to: str  # its peer id, as the sender named it
    id: str | None
    payload: bytes
    reply: str | None  # for the sender once delivered (a punch_accept's punch_now)
    acknowledge: bool = False  # a signal with an id: the sender gets ``delivered``


class Signaling:
    """What every signaling socket of this instance shares."""

    __slots__ = (
        "challenges",
        "clock",
        "hello_timeout",
        "hub",
        "ping_interval",
        "queue_limit",
        "relayed",
        "tasks",
        "unreachable",
        "waiting",
    )

    def __init__(
        self,
        hub: Hub,
        challenges: Challenges,
        clock: Callable[[], float],
        signals: Counter,
        queue_limit: int,
        ping_interval: float,
    ) -> None:
        """``ping_interval``: seconds between application pings (the round trip punch
        timing needs; the lean listener's liveness check too)."""
        self.hub = hub
        self.ping_interval = ping_interval
        self.hello_timeout = HELLO_TIMEOUT  # seconds a socket has to say hello
        self.challenges = challenges
        self.clock = clock
        self.queue_limit = queue_limit
        self.relayed = signals.labels("relayed")
        self.unreachable = signals.labels("unreachable")
        # Lean sockets that have not said hello yet (the hub holds the others).
        self.waiting: set[Socket] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # short chores no socket waits for

    def spawn(self, chore: Coroutine[Any, Any, Any]) -> None:
        """Run ``chore`` (a hub unregistration, say) without a socket awaiting it."""
        task = asyncio.get_running_loop().create_task(chore)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close_all(self) -> None:
        """On shutdown: every socket closed with 1001 (going away), and waited for."""
        waiting = [
            s.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
            for s in self.waiting
        ]
        await asyncio.gather(self.hub.close_all(), *waiting, return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def challenge(self) -> tuple[str, str]:
        """(a fresh challenge, the message that sends it)."""
        challenge = self.challenges.issue(self.clock())
        return challenge, json.dumps({"type": "challenge", "challenge": challenge})

    def hello(self, challenge: str, text: str | None) -> str:
        """The peer id of the key that signed ``challenge`` in the hello ``text``
        (``None``: the first message was not text); ``Refused`` naming the problem."""
        if text is None:
            raise Refused("the first message must be a hello (a text message)")
        try:
            hello = protocol.ClientMessage.validate_json(text)
            if not isinstance(hello, protocol.Hello):
                raise Refused("the first message must be a hello")
            public_key = b64decode(hello.public_key, what="public_key", size=32)
            signature = b64decode(hello.signature, what="signature", size=64)
        except ValidationError as exc:
            raise Refused(validation_message(exc)) from None
        except IdentityError as exc:
            raise Refused(str(exc)) from None
        problem = self.challenges.check(challenge, self.clock())
        if problem is not None:
            raise Refused(problem)
        if not verify(public_key, signature, challenge.encode(), WEBSOCKET_HELLO):
            raise Refused("the signature does not match the challenge")
        return peer_id_of(public_key)

    @staticmethod
    def refusal(problem: str) -> str:
        return protocol.error("unauthenticated", problem)

    def connection(
        self, socket: Socket, transport: asyncio.Transport, peer_id: str, who: Access
    ) -> Connection:
        """The hub's entry for a proven peer; a tenant's peers reach only its peers."""
        return Connection(
            socket,
            transport,
            peer_id,
            self.queue_limit,
            address=who.address(peer_id),
        )

    @staticmethod
    def welcome(connection: Connection) -> str:
        return json.dumps({"type": "welcome", "peer_id": connection.peer_id})

    def plan(self, connection: Connection, who: Access, text: str) -> Delivery | None:
        """What to deliver for the message ``text``, or ``None`` (it was answered)."""
        fast = protocol.fast_signal(text, connection.peer_id)
        if fast is not None:
            to, message_id, payload = fast
            return Delivery(who.address(to), to, message_id, payload, None, message_id is not None)
        try:
            message = protocol.ClientMessage.validate_json(text)
        except ValidationError as exc:
            connection.push(protocol.error("invalid", validation_message(exc)))
            return None
        if isinstance(message, protocol.Pong):
            connection.pong(message.nonce)
            return None
        rtt = connection.rtt_ms if connection.rtt_ms is not None else punch.DEFAULT_RTT_MS
        reply, acknowledge = None, False
        if isinstance(message, protocol.Signal):
            payload = protocol.signal(connection.peer_id, message)
            acknowledge = message.id is not None
        elif isinstance(message, protocol.Punch):
            payload = punch.request(connection.peer_id, message, rtt)
        elif isinstance(message, protocol.PunchAccept):
            for_initiator, for_self = punch.go(connection.peer_id, message, rtt)
            payload, reply = for_initiator, json.dumps(for_self)
        else:
            connection.push(protocol.error("invalid", "already authenticated"))
            return None
        address = who.address(message.to)
        return Delivery(address, message.to, message.id, payload, reply, acknowledge)

    def outcome(self, connection: Connection, delivery: Delivery, reached: bool) -> None:
        """``delivery`` reached its target (``reached``) or is ``unreachable``: counted,
        and the sender told what it asked to know."""
        if reached:
            self.relayed.inc()
            if delivery.acknowledge and delivery.id is not None:
                connection.push(protocol.delivered(delivery.id, delivery.to))
            if delivery.reply is not None:
                connection.push(delivery.reply)
            return
        self.unreachable.inc()
        connection.push(
            protocol.error(
                "unreachable",
                f"{delivery.to} is not connected",
                to=delivery.to,
                id=delivery.id,
            )
        )

    @staticmethod
    def unavailable() -> str:
        return protocol.error("unavailable", "signaling is unavailable")
