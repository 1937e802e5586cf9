"""How a signal reaches the instance that holds its target's WebSocket.

Each instance subscribes to ``nk:peer:<address>`` for every peer connected to it (the
address is the peer id, or ``t:<tenant>/<peer_id>`` in a tenant's namespace, so signals
never cross tenants); a signal is published there, and the publish tells how many
instances received it (0: the target is connected nowhere, and the sender gets an
explicit error).

``MemoryBus`` serves one process (the memory store); ``RedisBus`` uses Redis pub/sub. On
a Redis Cluster every instance uses the same node for pub/sub (the one in the store
URL): PUBLISH in a cluster is broadcast to every node, but its receiver count is that of
the node it ran on, so subscribers and publishers share a node for the count to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rendezvous.store import StoreError

log = logging.getLogger(__name__)

Deliver = Callable[[str, bytes], None]  # (peer_id, payload) for a local socket
CHANNEL_PREFIX = "nk:peer:"


class Bus(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def attach(self, peer_id: str) -> None:
        """This instance now holds ``peer_id``'s socket."""

    async def detach(self, peer_id: str) -> None: ...

    async def publish(self, peer_id: str, payload: bytes) -> int:
        """Send to ``peer_id`` wherever it is connected; how many instances took it."""
        ...

    async def close(self) -> None: ...


class MemoryBus:
    """One process's bus. Its ``*_now`` methods are the synchronous truth of the
    coroutines (nothing here waits), for callers that must not suspend."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._attached: set[str] = set()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def attach_now(self, peer_id: str) -> None:
        self._attached.add(peer_id)

    def detach_now(self, peer_id: str) -> None:
        self._attached.discard(peer_id)

    def publish_now(self, peer_id: str, payload: bytes) -> int:
        if peer_id not in self._attached or self._deliver is None:
            return 0
        self._deliver(peer_id, payload)
        return 1

    async def attach(self, peer_id: str) -> None:
        self.attach_now(peer_id)

    async def detach(self, peer_id: str) -> None:
        self.detach_now(peer_id)

    async def publish(self, peer_id: str, payload: bytes) -> int:
        return self.publish_now(peer_id, payload)

    async def close(self) -> None:
        self._attached.clear()


class RedisBus:
    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=5)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._reader: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        # redis-py's PubSub opens its connection on the first (un)subscribe; two at once
        # would each open one, and the channels of the first would sit on a connection
        # nobody reads (PUBLISH still counts them: "delivered", never seen).
        self._subscribing = asyncio.Lock()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            if not self._pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except RedisError as exc:
                log.warning("signaling bus: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            if self._deliver is not None and channel.startswith(CHANNEL_PREFIX):
                self._deliver(channel[len(CHANNEL_PREFIX) :], bytes(message["data"]))

    async def attach(self, peer_id: str) -> None:
        try:
            async with self._subscribing:
                await self._pubsub.subscribe(CHANNEL_PREFIX + peer_id)
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def detach(self, peer_id: str) -> None:
        with contextlib.suppress(RedisError):
            async with self._subscribing:
                await self._pubsub.unsubscribe(CHANNEL_PREFIX + peer_id)

    async def publish(self, peer_id: str, payload: bytes) -> int:
        try:
            return int(await self._client.publish(CHANNEL_PREFIX + peer_id, payload))
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError):
            await self._pubsub.aclose()
        await self._client.aclose()


def open_bus(store_url: str) -> Bus:
    """The bus that goes with a store URL."""
    if store_url == "memory":
        return MemoryBus()
    if store_url.startswith("redis+cluster://"):
        return RedisBus("redis://" + store_url.removeprefix("redis+cluster://"))
    return RedisBus(store_url)
