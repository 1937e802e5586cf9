"""Where the rendezvous server keeps everything: ``Store`` (``base``) and its backends,
``MemoryStore`` (one process) and ``RedisStore`` (Redis or Redis Cluster)."""

from __future__ import annotations

from rendezvous.store.base import (
    Announced,
    Page,
    PeerRecord,
    Registration,
    RelayRecord,
    Store,
    StoreError,
    SwarmStats,
)
from rendezvous.store.memory import MemoryStore
from rendezvous.store.redis import RedisStore


def open_store(url: str, *, keep: float = 3600.0) -> Store:
    """``memory``, ``redis://host:port/db``, ``rediss://...`` or ``redis+cluster://host:port``
    (any node of the cluster)."""
    if url == "memory":
        return MemoryStore(keep=keep)
    if url.startswith("redis+cluster://"):
        return RedisStore(
            "redis://" + url.removeprefix("redis+cluster://"), cluster=True, keep=keep
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, keep=keep)
    raise ValueError(f"store URL {url!r}: expected memory, redis://, rediss:// or redis+cluster://")


__all__ = [
    "Announced",
    "MemoryStore",
    "Page",
    "PeerRecord",
    "RedisStore",
    "Registration",
    "RelayRecord",
    "Store",
    "StoreError",
    "SwarmStats",
    "open_store",
]
