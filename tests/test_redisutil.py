"""The Redis test infrastructure works for real: standalone server (PING, restart on the
same port, clean stop) and a 3-master cluster (keys spread over the nodes, Lua on one hash
tag, CROSSSLOT without one).

The fixtures (redis_server, redis_url, redis_cluster, redis_cluster_url) come from
tests/redis_fixtures.py, which tests/conftest.py registers as a plugin."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from tests.redisutil import (
    CLUSTER_SLOTS,
    HOST,
    RedisCluster,
    RedisNotInstalledError,
    RedisServer,
    cluster_info,
)


def _process_exists(pid: int) -> bool:
    """Whether a process (zombie included) with ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tagged_keys_on_every_node(client: AsyncRedisCluster, nodes: int) -> dict[int, str]:
    """One key per node port, each with its own hash tag: ``{tag0}:key`` ..."""
    keys: dict[int, str] = {}
    for i in itertools.count():
        key = f"{{tag{i}}}:key"
        node = client.get_node_from_key(key)
        if node is None:
            raise RuntimeError(f"no node for {key}: client not initialized")
        keys.setdefault(int(node.port), key)
        if len(keys) == nodes:
            return keys
    raise RuntimeError("unreachable")


# -- standalone ---------------------------------------------------------------------------


async def test_standalone_answers_ping_async_and_sync(redis_url: str) -> None:
    assert redis_url.startswith(f"redis://{HOST}:")
    assert redis_url.endswith("/0")
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
    with redis.Redis.from_url(redis_url) as sync_client:
        assert sync_client.ping() is True


def test_redis_url_starts_empty_and_flushall_empties(
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("k", "v")
        assert client.dbsize() == 1
        redis_server.flushall()
        assert client.dbsize() == 0


async def test_restart_keeps_port_and_clients_reconnect(
    redis_server: RedisServer,
    redis_url: str,
) -> None:
    port, pid = redis_server.port, redis_server.pid
    # redis.asyncio does not retry a command on a connection the server closed unless told
    # to: without retry_on_error the first command after the restart raises ConnectionError.
    client = aioredis.Redis.from_url(
        redis_url, decode_responses=True, retry_on_error=[redis.ConnectionError]
    )
    try:
        await client.set("before", "1")
        redis_server.restart()
        assert redis_server.port == port
        assert redis_server.url == redis_url
        assert redis_server.pid is not None
        assert redis_server.pid != pid
        # The same client reconnects (its pooled connection died with the old process).
        assert await client.get("before") is None  # no persistence: data is gone
    finally:
        await client.aclose()
    fresh = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await fresh.set("after", "2")
        assert await fresh.get("after") == "2"
    finally:
        await fresh.aclose()


def test_stop_leaves_no_process_and_frees_the_port(tmp_path: Path) -> None:
    server = RedisServer(base_dir=tmp_path)
    with server:
        pid, port = server.pid, server.port
        assert pid is not None
        assert _process_exists(pid)
        assert server.ping()
    assert not server.running
    assert server.pid is None
    assert not _process_exists(pid)
    server.stop()  # idempotent
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen()
    assert "Ready to accept connections" in server.log_path.read_text()


def test_stopped_server_restarts_on_its_port(tmp_path: Path) -> None:
    server = RedisServer(base_dir=tmp_path)
    server.start()
    try:
        port = server.port
        server.stop()
        server.restart()
        assert server.port == port
        assert server.ping()
    finally:
        server.stop()


def test_missing_redis_server_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisNotInstalledError, match=r"scripts/install-system-deps\.sh"):
        RedisServer(base_dir=tmp_path).start()
    with pytest.raises(RedisNotInstalledError, match="redis-"):
        RedisCluster(base_dir=tmp_path).start()


# -- cluster ------------------------------------------------------------------------------


def test_cluster_is_ok_on_every_node(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert len({port for _, port in redis_cluster.nodes}) == 3
    assert all(host == HOST for host, _ in redis_cluster.nodes)
    assert redis_cluster.url == f"redis://{HOST}:{redis_cluster.nodes[0][1]}"
    for _, port in redis_cluster.nodes:
        info = cluster_info(port)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == str(CLUSTER_SLOTS)
        assert info["cluster_known_nodes"] == "3"
        assert info["cluster_size"] == "3"


async def test_cluster_keys_spread_over_the_nodes(
    redis_cluster: RedisCluster,
    redis_cluster_url: str,
) -> None:
    client = AsyncRedisCluster.from_url(redis_cluster_url, decode_responses=True)
    try:
        await client.initialize()
        keys = _tagged_keys_on_every_node(client, nodes=3)
        for port, key in keys.items():
            assert await client.set(key, f"on {port}")
        for port, key in keys.items():
            assert await client.get(key) == f"on {port}"
            assert await client.cluster_keyslot(key) == client.keyslot(key)
    finally:
        await client.aclose()
    # Each key really lives on the node the client chose, and only there.
    assert set(keys) == {port for _, port in redis_cluster.nodes}
    for port, key in keys.items():
        with redis.Redis(host=HOST, port=port, decode_responses=True) as node:
            assert node.get(key) == f"on {port}"
            assert node.dbsize() == 1
    redis_cluster.flushall()
    for _, port in redis_cluster.nodes:
        with redis.Redis(host=HOST, port=port) as node:
            assert node.dbsize() == 0


async def test_cluster_lua_on_one_hash_tag(redis_cluster_url: str) -> None:
    script = """
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('SET', KEYS[2], ARGV[2])
    return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
    """
    client = AsyncRedisCluster.from_url(redis_cluster_url, decode_responses=True)
    try:
        keys = ["{session:42}:offer", "{session:42}:answer"]
        assert client.keyslot(keys[0]) == client.keyslot(keys[1])
        assert await client.eval(script, 2, *keys, "o", "a") == ["o", "a"]
        assert await client.mget(keys) == ["o", "a"]  # a multi-key command, one slot
    finally:
        await client.aclose()


async def test_cluster_cross_slot_multi_key_command_fails(
    redis_cluster: RedisCluster,
    redis_cluster_url: str,
) -> None:
    keys = ["session:42:offer", "session:42:answer"]  # no hash tag: different slots
    client = AsyncRedisCluster.from_url(redis_cluster_url, decode_responses=True)
    try:
        assert client.keyslot(keys[0]) != client.keyslot(keys[1])
        # An initialized redis-py cluster client refuses before sending (a fresh one sends
        # its first command unchecked and gets the server's CROSSSLOT, as below) ...
        await client.initialize()
        with pytest.raises(redis.RedisClusterException, match="same key slot"):
            await client.mset({keys[0]: "o", keys[1]: "a"})
        with pytest.raises(redis.RedisClusterException, match="same key slot"):
            await client.eval("return 1", 2, *keys)
    finally:
        await client.aclose()
    # ... and the server answers CROSSSLOT to a client that sends it anyway.
    _, port = redis_cluster.nodes[0]
    node = aioredis.Redis(host=HOST, port=port)
    try:
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            await node.execute_command("MSET", keys[0], "o", keys[1], "a")
    finally:
        await node.aclose()
