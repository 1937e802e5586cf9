"""``Store`` on Redis or Redis Cluster: every request is one Lua script (one round trip),
on keys that share one hash tag (one cluster slot). See ``redis_scripts`` for the layout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rendezvous.store import redis_scripts
from rendezvous.store.base import (
    Announced,
    Page,
    PeerRecord,
    Registration,
    RelayRecord,
    StoreError,
    SwarmStats,
)

PREFIX = "nk:"
_RELAYS_TAG = PREFIX + "{relays}"


def swarm_keys(swarm: str) -> list[str]:
    """The keys of ``swarm``: exp, data, seq, seed, meta, all in the slot of its tag."""
    if "{" in swarm or "}" in swarm:
        raise ValueError(f"swarm name {swarm!r} may not contain braces (cluster hash tags)")
    tag = f"{PREFIX}{{s:{swarm}}}"
    return [f"{tag}:exp", f"{tag}:data", f"{tag}:seq", f"{tag}:seed", f"{tag}:meta"]


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _records(flat: Sequence[Any]) -> tuple[PeerRecord, ...]:
    return tuple(
        PeerRecord(_str(flat[i]), bytes(flat[i + 2] or b""), float(flat[i + 1]))
        for i in range(0, len(flat) - 2, 3)
    )


class RedisStore:
    """``Store`` on ``redis://host:port/db`` or, with ``cluster``, a Redis Cluster."""

    def __init__(
        self, url: str, *, cluster: bool = False, keep: float = 3600.0, timeout: float = 5.0
    ) -> None:
        self._keep_ms = str(int(keep * 1000))
        self._client: aioredis.Redis | RedisCluster
        if cluster:
            self._client = RedisCluster.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        else:
            # A pooled connection to a restarted server fails once: retry on a fresh one.
            self._client = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        self._announce = self._client.register_script(redis_scripts.ANNOUNCE)
        self._page = self._client.register_script(redis_scripts.PAGE)
        self._take = self._client.register_script(redis_scripts.TAKE)
        self._relays = self._client.register_script(redis_scripts.RELAYS)
        self._admit = self._client.register_script(redis_scripts.ADMIT)

    async def _call(
        self, script: Callable[..., Awaitable[Any]], keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def announce(
        self,
        swarm: str,
        *,
        now: float,
        register: Registration | None = None,
        leave: str | None = None,
        completed: bool = False,
        want: int = 0,
        exclude: str | None = None,
        capacity: int = 0,
        records: bool = True,  # records always: the script returns them anyway
    ) -> Announced:
        args = [
            repr(now),
            register.peer_id if register else "",
            register.data if register else b"",
            repr(register.ttl) if register else "0",
            "1" if register and register.seeder else "0",
            leave or "",
            "1" if completed else "0",
            str(max(0, want)),
            exclude or "",
            str(max(0, capacity)),
            self._keep_ms,
        ]
        flat = await self._call(self._announce, swarm_keys(swarm), args)
        stats = SwarmStats(int(flat[2]), int(flat[3]), int(flat[4]))
        return Announced(_records(flat[5:]), stats, bool(flat[0]), bool(flat[1]))

    async def page(self, swarm: str, *, cookie: str, limit: int, now: float) -> Page:
        after = cookie if cookie.isdigit() else "0"
        keys = swarm_keys(swarm)[:3]
        flat = await self._call(self._page, keys, [repr(now), after, str(max(1, limit))])
        return Page(_records(flat[1:]), _str(flat[0]))

    async def stats(self, swarms: list[str], *, now: float) -> list[SwarmStats]:
        live = f"({now!r}"
        try:
            pipe = self._client.pipeline(transaction=False)
            for swarm in swarms:
                exp, _, _, seed, meta = swarm_keys(swarm)
                pipe.zcount(exp, live, "+inf")
                pipe.zcount(seed, live, "+inf")
                pipe.hget(meta, "downloaded")
            rows = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        return [
            SwarmStats(int(rows[i]), int(rows[i + 1]), int(rows[i + 2] or 0))
            for i in range(0, len(rows), 3)
        ]

    async def take(
        self, bucket: str, *, rate: float, burst: float, now: float, cost: float = 1.0
    ) -> bool:
        if "{" in bucket or "}" in bucket:
            raise ValueError(f"bucket name {bucket!r} may not contain braces")
        keep_ms = str(int(1000 * burst / rate) + 1000 if rate > 0 else 86_400_000)
        key = f"{PREFIX}{{b:{bucket}}}"
        args = [repr(rate), repr(burst), repr(now), repr(cost), keep_ms]
        return bool(await self._call(self._take, [key], args))

    async def admit(
        self,
        network: str,
        ip: str,
        member: str,
        *,
        per_ip: int,
        per_network: int,
        ttl: float,
        now: float,
    ) -> bool:
        tag = f"{PREFIX}{{n:{network}}}"
        args = [repr(now), ip, member, str(per_ip), str(per_network), repr(now + ttl)]
        args.append(str(int(ttl * 1000) + 1000))
        return bool(await self._call(self._admit, [f"{tag}:net", f"{tag}:ips"], args))

    async def heartbeat_relay(self, relay_id: str, data: bytes, *, ttl: float, now: float) -> None:
        keys = [f"{_RELAYS_TAG}:exp", f"{_RELAYS_TAG}:data"]
        await self._call(self._relays, keys, [repr(now), relay_id, data, repr(ttl)])

    async def relays(self, *, now: float) -> list[RelayRecord]:
        keys = [f"{_RELAYS_TAG}:exp", f"{_RELAYS_TAG}:data"]
        flat = await self._call(self._relays, keys, [repr(now), "", b"", "0"])
        return [
            RelayRecord(_str(flat[i]), bytes(flat[i + 2] or b""), float(flat[i + 1]))
            for i in range(0, len(flat) - 2, 3)
        ]

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
