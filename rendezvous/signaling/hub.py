"""This instance's signaling sockets, and the bus between instances.

Each socket has a bounded outbound queue drained by its own task: a peer that reads too
slowly fills it and is closed (1013, try again later) instead of growing memory. A second
socket of the same peer replaces the first (closed with 4000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time

from aiohttp import WSCloseCode, web

from rendezvous.signaling.bus import Bus

log = logging.getLogger(__name__)

REPLACED = 4000


class Connection:
    def __init__(self, ws: web.WebSocketResponse, peer_id: str, limit: int) -> None:
        self.ws = ws
        self.peer_id = peer_id
        self._queue: asyncio.Queue[str] = asyncio.Queue(limit)
        self._sender = asyncio.create_task(self._send_all())
        self._closing: asyncio.Task[bool] | None = None
        # Round trip to the peer over this socket, measured with ping/pong (punching).
        self.rtt_ms: float | None = None
        self._ping: tuple[str, float] | None = None  # (nonce, monotonic time sent)

    def ping(self) -> None:
        nonce = secrets.token_hex(8)
        self._ping = (nonce, time.monotonic())
        self.push(json.dumps({"type": "ping", "nonce": nonce}))

    def pong(self, nonce: str) -> None:
        """A pong: the round trip, smoothed (an unknown or late nonce is ignored)."""
        if self._ping is None or nonce != self._ping[0]:
            return
        sample = (time.monotonic() - self._ping[1]) * 1000
        self._ping = None
        self.rtt_ms = sample if self.rtt_ms is None else 0.5 * self.rtt_ms + 0.5 * sample

    def push(self, text: str) -> None:
        """Queue ``text`` for the peer; a full queue closes a consumer too slow to keep up."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.info("signaling: %s reads too slowly, closing", self.peer_id)
            self.close(WSCloseCode.TRY_AGAIN_LATER, b"too slow")

    def close(self, code: int, message: bytes) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self.ws.close(code=code, message=message))

    async def _send_all(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the socket is closing

    async def stop(self) -> None:
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        if self._closing is not None:
            with contextlib.suppress(Exception):
                await self._closing


class Hub:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.local: dict[str, Connection] = {}

    async def start(self) -> None:
        await self.bus.start(self._deliver)

    def _deliver(self, peer_id: str, payload: bytes) -> None:
        connection = self.local.get(peer_id)
        if connection is not None:
            connection.push(payload.decode())

    async def register(self, connection: Connection) -> None:
        previous = self.local.get(connection.peer_id)
        if previous is not None:
            previous.close(REPLACED, b"replaced by a newer connection")
        self.local[connection.peer_id] = connection
        await self.bus.attach(connection.peer_id)

    async def unregister(self, connection: Connection) -> None:
        if self.local.get(connection.peer_id) is connection:
            del self.local[connection.peer_id]
            await self.bus.detach(connection.peer_id)

    async def send(self, peer_id: str, payload: bytes) -> bool:
        """Deliver to ``peer_id`` on whichever instance holds it; False: nowhere."""
        return await self.bus.publish(peer_id, payload) > 0

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close every socket (on shutdown: 1001, going away) and wait for it."""
        closing = [
            c.ws.close(code=code, message=b"server shutting down") for c in self.local.values()
        ]
        await asyncio.gather(*closing, return_exceptions=True)
