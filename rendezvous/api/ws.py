"""``GET /v1/ws`` through aiohttp: a peer's signaling WebSocket (``rendezvous.signaling``).

``natkit rendezvous`` serves valid upgrades on its lean listener instead
(``rendezvous.front_door``), which holds an idle socket in a fraction of the memory; this
route serves the app when it is embedded in another aiohttp server, and answers the
upgrade requests the lean listener hands over because they are not valid ones.
"""

from __future__ import annotations

from aiohttp import WSMsgType, web

from rendezvous import keys
from rendezvous.signaling import protocol
from rendezvous.signaling.session import UNAUTHENTICATED, Refused
from rendezvous.store import StoreError

routes = web.RouteTableDef()

HEARTBEAT = 20.0  # ping interval; a peer that stops answering is closed


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
    signaling = request.app[keys.SIGNALING]
    challenge, asking = signaling.challenge()
    await ws.send_str(asking)
    try:
        first = await ws.receive(timeout=signaling.hello_timeout)
        if first.type == WSMsgType.CLOSE or first.type == WSMsgType.CLOSING:
            return ws
        text = first.data if first.type == WSMsgType.TEXT else None
        peer_id = signaling.hello(challenge, text)
    except (TimeoutError, Refused) as exc:
        late = f"no hello within {signaling.hello_timeout:g} s"
        problem = str(exc) if isinstance(exc, Refused) else late
        await ws.send_str(signaling.refusal(problem))
        await ws.close(code=UNAUTHENTICATED, message=b"unauthenticated")
        return ws
    hub = signaling.hub
    who = request[keys.ACCESS]
    connection = signaling.connection(ws, transport, peer_id, who)
    try:
        await hub.register(connection)
        connection.push(signaling.welcome(connection))
        connection.start_pings(signaling.ping_interval)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue  # binary frames carry nothing in this protocol
            delivery = signaling.plan(connection, who, message.data)
            if delivery is not None:
                reached = await hub.send(delivery.address, delivery.payload)
                signaling.outcome(connection, delivery, reached)
    except StoreError:
        connection.push(signaling.unavailable())
    finally:
        await hub.unregister(connection)
        await connection.stop()
    return ws
