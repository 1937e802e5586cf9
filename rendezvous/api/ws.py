"""``GET /v1/ws``: a peer's signaling WebSocket (``rendezvous.signaling.protocol``)."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web
from prometheus_client import Counter
from pydantic import ValidationError

from client_sdk.identity import WEBSOCKET_HELLO, IdentityError, b64decode, peer_id_of, verify
from rendezvous import keys
from rendezvous.api.errors import validation_message
from rendezvous.signaling import protocol
from rendezvous.signaling.hub import Connection, Hub
from rendezvous.store import StoreError

routes = web.RouteTableDef()

HELLO_TIMEOUT = 10.0
HEARTBEAT = 20.0  # ping interval; a peer that stops answering is closed
UNAUTHENTICATED = 4401


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
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=protocol.MAX_FRAME_BYTES)
    await ws.prepare(request)
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
    connection = Connection(ws, peer_id, request.app[keys.SETTINGS].signal_queue)
    try:
        await hub.register(connection)
        connection.push(json.dumps({"type": "welcome", "peer_id": peer_id}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue  # binary frames carry nothing in this protocol
            await _relay(hub, signals, connection, message.data)
    except StoreError:
        connection.push(protocol.error("unavailable", "signaling is unavailable"))
    finally:
        await hub.unregister(connection)
        await connection.stop()
    return ws


async def _relay(hub: Hub, signals: Counter, connection: Connection, text: str) -> None:
    try:
        message = protocol.ClientMessage.validate_json(text)
    except ValidationError as exc:
        connection.push(protocol.error("invalid", validation_message(exc)))
        return
    if not isinstance(message, protocol.Signal):
        connection.push(protocol.error("invalid", "already authenticated"))
        return
    delivered = await hub.send(message.to, protocol.signal(connection.peer_id, message))
    signals.labels("relayed" if delivered else "unreachable").inc()
    if not delivered:
        connection.push(
            protocol.error(
                "unreachable", f"{message.to} is not connected", to=message.to, id=message.id
            )
        )
