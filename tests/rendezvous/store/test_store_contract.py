"""One contract for every store: the same tests on the memory store (its swarms in C, and
in Python as where the extension is not built), a real redis-server and a real 3-master
Redis Cluster (started by the fixtures on loopback ports)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rendezvous.store import (
    MemoryStore,
    RedisStore,
    Registration,
    Store,
    StoreError,
    SwarmStats,
    open_store,
    swarm,
)
from tests.redisutil import RedisServer

T0 = 1_800_000_000.0  # the tests' clock: every operation takes "now" explicitly


@pytest.fixture(params=["memory", "memory-python", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param.startswith("memory"):
        if request.param == "memory-python":
            request.getfixturevalue("monkeypatch").setattr(swarm, "PeerTable", None)
        value: Store = MemoryStore(keep=3600)
    elif request.param == "redis":
        value = open_store(request.getfixturevalue("redis_url"), keep=3600)
    else:
        url = request.getfixturevalue("redis_cluster_url")
        value = open_store(url.replace("redis://", "redis+cluster://"), keep=3600)
    try:
        yield value
    finally:
        await value.close()


def reg(peer: str, ttl: float = 60, seeder: bool = False) -> Registration:
    return Registration(peer, f"data of {peer}".encode(), ttl, seeder)


async def test_join_refresh_leave_and_stats(store: Store) -> None:
    first = await store.announce("s", now=T0, register=reg("a"))
    assert first.joined
    assert first.stats == SwarmStats(1, 0, 0)
    again = await store.announce("s", now=T0 + 1, register=reg("a", seeder=True))
    assert not again.joined  # a refresh
    assert again.stats == SwarmStats(1, 1, 0)
    await store.announce("s", now=T0 + 2, register=reg("b"), completed=True)
    left = await store.announce("s", now=T0 + 3, leave="a")
    assert left.stats == SwarmStats(1, 0, 1)
    assert left.stats.leechers == 1
    assert await store.stats(["s", "nothing"], now=T0 + 3) == [SwarmStats(1, 0, 1), SwarmStats()]


async def test_sample_is_random_live_and_excludes_the_asker(store: Store) -> None:
    for i in range(30):
        await store.announce("s", now=T0, register=reg(f"p{i:02d}"))
    answer = await store.announce("s", now=T0 + 1, want=10, exclude="p00")
    ids = [p.peer_id for p in answer.peers]
    assert len(ids) == len(set(ids)) == 10
    assert "p00" not in ids
    assert all(p.data == f"data of {p.peer_id}".encode() for p in answer.peers)
    assert all(p.expires == T0 + 60 for p in answer.peers)
    # Random: repeated samples do not all return the same ten.
    seen = set(ids)
    for _ in range(10):
        seen.update(p.peer_id for p in (await store.announce("s", now=T0 + 1, want=10)).peers)
    assert len(seen) > 15
    # More wanted than there are: everyone else, once.
    everyone = await store.announce("s", now=T0 + 1, want=100, exclude="p05")
    assert sorted(p.peer_id for p in everyone.peers) == [f"p{i:02d}" for i in range(30) if i != 5]


async def test_expired_peers_never_appear(store: Store) -> None:
    await store.announce("s", now=T0, register=reg("short", ttl=10))
    await store.announce("s", now=T0, register=reg("long", ttl=100, seeder=True))
    await store.announce("s", now=T0, register=reg("gone", ttl=10, seeder=True))
    at_expiry = await store.announce("s", now=T0 + 10, want=10)  # expiry is exclusive
    assert [p.peer_id for p in at_expiry.peers] == ["long"]
    assert at_expiry.stats == SwarmStats(1, 1, 0)
    assert (await store.page("s", cookie="", limit=10, now=T0 + 10)).peers[0].peer_id == "long"
    assert len((await store.page("s", cookie="", limit=10, now=T0 + 10)).peers) == 1
    # Refreshing before expiry keeps a peer; re-joining after it counts as new.
    rejoined = await store.announce("s", now=T0 + 20, register=reg("short", ttl=10))
    assert rejoined.joined


async def test_many_expired_peers_are_all_invisible(store: Store) -> None:
    """More expired peers than one pruning pass removes: none may show."""
    for i in range(300):
        await store.announce("s", now=T0, register=reg(f"old{i}", ttl=5))
    await store.announce("s", now=T0, register=reg("new", ttl=50))
    answer = await store.announce("s", now=T0 + 6, want=50)
    assert [p.peer_id for p in answer.peers] == ["new"]
    assert answer.stats.peers == 1


async def test_capacity_refuses_new_peers_not_refreshes(store: Store) -> None:
    for peer in ("a", "b"):
        await store.announce("s", now=T0, register=reg(peer), capacity=2)
    full = await store.announce("s", now=T0, register=reg("c"), capacity=2, want=5)
    assert full.full
    assert not full.joined
    assert full.stats.peers == 2
    assert {p.peer_id for p in full.peers} == {"a", "b"}
    refresh = await store.announce("s", now=T0 + 1, register=reg("a"), capacity=2)
    assert not refresh.full
    # Capacity counts live peers only.
    await store.announce("s", now=T0 + 61, register=reg("c"), capacity=2)
    assert (await store.stats(["s"], now=T0 + 61))[0].peers == 1


async def test_cookie_paging_returns_only_what_is_new(store: Store) -> None:
    for peer in ("a", "b", "c"):
        await store.announce("s", now=T0, register=reg(peer))
    first = await store.page("s", cookie="", limit=2, now=T0)
    assert [p.peer_id for p in first.peers] == ["a", "b"]
    rest = await store.page("s", cookie=first.cookie, limit=10, now=T0)
    assert [p.peer_id for p in rest.peers] == ["c"]
    assert (await store.page("s", cookie=rest.cookie, limit=10, now=T0)).peers == ()
    # A re-registration is new again; a departure is simply absent.
    await store.announce("s", now=T0 + 1, register=reg("a"))
    await store.announce("s", now=T0 + 1, register=reg("d"))
    await store.announce("s", now=T0 + 1, leave="d")
    later = await store.page("s", cookie=rest.cookie, limit=10, now=T0 + 1)
    assert [p.peer_id for p in later.peers] == ["a"]
    assert (await store.page("empty", cookie="", limit=10, now=T0)).peers == ()


async def test_swarms_are_independent(store: Store) -> None:
    await store.announce("one", now=T0, register=reg("a"))
    await store.announce("two", now=T0, register=reg("b"))
    assert [p.peer_id for p in (await store.announce("one", now=T0, want=5)).peers] == ["a"]
    assert [p.peer_id for p in (await store.announce("two", now=T0, want=5)).peers] == ["b"]


async def test_token_bucket(store: Store) -> None:
    results = [await store.take("ip:1", rate=1, burst=3, now=T0) for _ in range(4)]
    assert results == [True, True, True, False]
    assert await store.take("ip:2", rate=1, burst=3, now=T0)  # buckets are separate
    assert not await store.take("ip:1", rate=1, burst=3, now=T0 + 0.5)
    assert await store.take("ip:1", rate=1, burst=3, now=T0 + 1.5)
    assert not await store.take("ip:1", rate=1, burst=3, now=T0 + 1.5, cost=2)
    # Refill stops at the burst.
    assert [await store.take("ip:3", rate=10, burst=2, now=T0 + 100) for _ in range(3)] == [
        True,
        True,
        False,
    ]


async def test_relay_directory(store: Store) -> None:
    await store.heartbeat_relay("r1", b'{"region":"eu"}', ttl=30, now=T0)
    await store.heartbeat_relay("r2", b'{"region":"us"}', ttl=10, now=T0)
    relays = sorted(await store.relays(now=T0 + 5), key=lambda r: r.relay_id)
    assert [(r.relay_id, r.data, r.expires) for r in relays] == [
        ("r1", b'{"region":"eu"}', T0 + 30),
        ("r2", b'{"region":"us"}', T0 + 10),
    ]
    assert [r.relay_id for r in await store.relays(now=T0 + 10)] == ["r1"]
    await store.heartbeat_relay("r2", b"{}", ttl=10, now=T0 + 11)
    assert len(await store.relays(now=T0 + 12)) == 2


async def test_binary_data_survives(store: Store) -> None:
    blob = bytes(range(256))
    await store.announce("s", now=T0, register=Registration("p", blob, 60))
    assert (await store.announce("s", now=T0, want=1)).peers[0].data == blob


async def test_ping(store: Store) -> None:
    await store.ping()


def test_swarm_names_with_braces_are_refused() -> None:
    from rendezvous.store.redis import swarm_keys

    with pytest.raises(ValueError, match="braces"):
        swarm_keys("a{b}")
    keys = swarm_keys("abc")
    assert all("{s:abc}" in key for key in keys)


async def test_unreachable_redis_is_a_store_error(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout=1)
    try:
        await store.ping()
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.ping()
        with pytest.raises(StoreError):
            await store.announce("s", now=T0, want=1)
        redis_server.restart()  # the same port: the client reconnects
        await store.ping()
        assert (await store.announce("s", now=T0, register=reg("a"))).joined
    finally:
        await store.close()
        if not redis_server.running:
            redis_server.restart()


def test_open_store_rejects_unknown_urls() -> None:
    with pytest.raises(ValueError, match="expected memory"):
        open_store("mysql://x")


async def test_registration_caps_per_ip_and_network(store: Store) -> None:
    net = "203.0.113.0/24"

    async def admit(ip: str, member: str, now: float = T0) -> bool:
        return await store.admit(net, ip, member, per_ip=2, per_network=3, ttl=60, now=now)

    assert await admit("203.0.113.1", "a")
    assert await admit("203.0.113.1", "b")
    assert not await admit("203.0.113.1", "c")  # a third from one IP
    assert await admit("203.0.113.1", "a")  # a refresh always passes
    assert await admit("203.0.113.2", "c")
    assert not await admit("203.0.113.3", "d")  # a fourth in the /24
    assert await store.admit(
        "198.51.100.0/24", "198.51.100.1", "d", per_ip=2, per_network=3, ttl=60, now=T0
    )
    # Refused attempts wrote nothing; expiry frees the places.
    assert not await admit("203.0.113.3", "d", T0 + 59)
    assert await admit("203.0.113.3", "d", T0 + 60)
    assert await admit("203.0.113.1", "e", T0 + 60)
