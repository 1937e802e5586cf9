"""Pytest fixtures for real Redis servers (see tests/redisutil.py).

Session-scoped servers are started once and shared; the function-scoped URL fixtures flush
them before each test. Without ``redis-server`` installed the fixtures skip (and the suite
turns a skip into a failure in CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redisutil import RedisCluster, RedisNotInstalledError, RedisServer, require_binary


def _require_redis(*tools: str) -> None:
    """Skip the requesting test when a Redis tool is missing."""
    for tool in tools:
        try:
            require_binary(tool)
        except RedisNotInstalledError as exc:
            pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A standalone ``redis-server`` on a free loopback port, for the whole session."""
    _require_redis("redis-server")
    server = RedisServer(base_dir=tmp_path_factory.mktemp("redis-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on free loopback ports, for the whole session."""
    _require_redis("redis-server", "redis-cli")
    cluster = RedisCluster(base_dir=tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's standalone server, emptied for this test (and restarted on
    its port if an earlier test stopped it)."""
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """URL of a startup node of the session's cluster, every master emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster.url
