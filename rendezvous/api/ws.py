"""``GET /v1/ws``: a peer's signaling WebSocket (``rendezvous.signaling.protocol``)."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web
from prometheus_client import Counter
from pydantic import ValidationError

from client_sdk.identity import WEBSOCKET_HELLO, IdentityError, b64decode, peer_id_of, verify
from rendezvous import keys
from rendezvous.api.errors import validation_message
from rendezvous.signaling import protocol, punch
from rendezvous.signaling.hub import Connection, Hub
from rendezvous.store import StoreError
from rendezvous.tenants import Access

routes = web.RouteTableDef()

HELLO_TIMEOUT = 10.0
HEARTBEAT = 20.0  # ping interval; a peer that stops answering is closed
UNAUTHENTICATED = 4401
PING_INTERVAL = 10.0  # application-level ping: the round trip punching needs


async def _hello(ws: web.WebSocketResponse, request: web.Request) -> tuple[str, str] | None:
    """(peer_id, problem): the peer that proved its key, or why not."""
    app = request.app
    challenge = app[keys.CHALLENGES].issue(app[keys.CLOCK]())
    await ws.send_json({"type": "challenge", "challenge": challenge})
    first = await ws.receive(timeout=HELLO_TIMEOUT)
    if first.type != WSMsgType.TEXT:
        return None
    try:
        hello = protocol.ClientMessage.validate_json(first.data)
        if not isinstance(hello, protocol.Hello):
            return "", "the first message must be a hello"
        public_key = b64decode(hello.public_key, what="public_key", size=32)
        signature = b64decode(hello.signature, what="signature", size=64)
    except ValidationError as exc:
        return "", validation_message(exc)
    except IdentityError as exc:
        return "", str(exc)
    problem = app[keys.CHALLENGES].check(challenge, app[keys.CLOCK]())
    if problem is not None:
        return "", problem
    if not verify(public_key, signature, challenge.encode(), WEBSOCKET_HELLO):
        return "", "the signature does not match the challenge"
    return peer_id_of(public_key), ""


@routes.get("/v1/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    # No permessage-deflate: signals are small, and a zlib stream per socket costs far more
    # memory than a whole idle socket otherwise does (the Connection writes plain frames).
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT, max_msg_size=protocol.MAX_FRAME_BYTES, compress=False
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the peer left during the upgrade
        return ws
    try:
        hello = await _hello(ws, request)
    except TimeoutError:
        hello = "", "no hello within 10 s"
    if hello is None:
        await ws.close()
        return ws
    peer_id, problem = hello
    if problem:
        await ws.send_str(protocol.error("unauthenticated", problem))
        await ws.close(code=UNAUTHENTICATED, message=b"unauthenticated")
        return ws
    hub = request.app[keys.HUB]
    signals = request.app[keys.METRICS].signals
    relayed, unreachable = signals.labels("relayed"), signals.labels("unreachable")
    who = request[keys.ACCESS]  # a tenant's peers reach only that tenant's peers
    limit = request.app[keys.SETTINGS].signal_queue
    connection = Connection(ws, transport, peer_id, limit, address=who.address(peer_id))
    try:
        await hub.register(connection)
        connection.push(json.dumps({"type": "welcome", "peer_id": peer_id}))
        connection.start_pings(PING_INTERVAL)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue  # binary frames carry nothing in this protocol
            fast = protocol.fast_signal(message.data, peer_id)
            if fast is None:
                await _relay(hub, signals, connection, who, message.data)
                continue
            to, message_id, payload = fast
            if await hub.send(who.address(to), payload):
                relayed.inc()
            else:
                unreachable.inc()
                connection.push(
                    protocol.error("unreachable", f"{to} is not connected", to=to, id=message_id)
                )
    except StoreError:
        connection.push(protocol.error("unavailable", "signaling is unavailable"))
    finally:
        await hub.unregister(connection)
        await connection.stop()
    return ws


async def _relay(
    hub: Hub, signals: Counter, connection: Connection, who: Access, text: str
) -> None:
    try:
        message = protocol.ClientMessage.validate_json(text)
    except ValidationError as exc:
        connection.push(protocol.error("invalid", validation_message(exc)))
        return
    rtt = connection.rtt_ms if connection.rtt_ms is not None else punch.DEFAULT_RTT_MS
    if isinstance(message, protocol.Pong):
        connection.pong(message.nonce)
        return
    if isinstance(message, protocol.Signal):
        to, message_id, payload = (
            message.to,
            message.id,
            protocol.signal(connection.peer_id, message),
        )
    elif isinstance(message, protocol.Punch):
        to, message_id, payload = (
            message.to,
            message.id,
            punch.request(connection.peer_id, message, rtt),
        )
    elif isinstance(message, protocol.PunchAccept):
        for_initiator, for_self = punch.go(connection.peer_id, message, rtt)
        to, message_id, payload = message.to, message.id, for_initiator
    else:
        connection.push(protocol.error("invalid", "already authenticated"))
        return
    delivered = await hub.send(who.address(to), payload)
    signals.labels("relayed" if delivered else "unreachable").inc()
    if not delivered:
        connection.push(
            protocol.error("unreachable", f"{to} is not connected", to=to, id=message_id)
        )
    elif isinstance(message, protocol.PunchAccept):
        connection.push(json.dumps(for_self))
