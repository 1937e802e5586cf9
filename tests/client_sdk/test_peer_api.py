"""``client_sdk.Peer`` and its ``RendezvousHttp`` against the real rendezvous app, served
on loopback: signed join/peers/leave, paging, stats, TURN credentials, a tenant's token,
the server's refusals as ``RendezvousError`` with its code and status, 429 honoured
with ``Retry-After``, and a challenge that expired on the server fetched anew. (Helpers
here are shared by the other ``test_peer_*`` modules.)"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client_sdk import Candidate, Peer, RendezvousError
from client_sdk.identity import Identity
from client_sdk.rendezvous import Backoff, RendezvousHttp
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.apputil import address, serving, store_url

FAST = Backoff(initial=0.05, maximum=0.2)
TENANT_KEY = "acme-key-1"


def url_of(client: TestClient[Any, Any]) -> str:
    host, port = address(client)
    return f"http://{host}:{port}"


@asynccontextmanager
async def rendezvous(
    store: str = "memory", now: list[float] | None = None, **extra: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    """The real app on ``store`` (``secret="s"``: instances on one store agree)."""
    settings = RendezvousSettings(store=store, secret="s", **{"rate_limit": 0, **extra})
    async with serving(settings, now) as client:
        yield client


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def tenants_file(tmp_path: Path) -> str:
    path = tmp_path / "tenants.json"
    digest = hashlib.sha256(TENANT_KEY.encode()).hexdigest()
    path.write_text(json.dumps({"tenants": {"acme": {"api_keys_sha256": [digest]}}}))
    return str(path)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    return store_url(request, request.param)


async def test_join_peers_leave_round_trip(store: str) -> None:
    async with rendezvous(store) as server:
        url = url_of(server)
        async with Peer(url, backoff=FAST) as alice, Peer(url + "/v1/", backoff=FAST) as bob:
            first = await alice.join(
                "room-1",
                candidates=[Candidate("203.0.113.5", 5000, type="srflx")],
                nat="endpoint-independent",
                metadata={"name": "alice", "v": 2},
                ttl=120,
            )
            assert (first.joined, first.ttl, first.peers) == (True, 120, 1)
            assert (await alice.join("room-1", ttl=120)).joined is False  # a refresh
            await alice.join(
                "room-1",
                candidates=[Candidate("203.0.113.5", 5000, type="srflx")],
                nat="endpoint-independent",
                metadata={"name": "alice", "v": 2},
                ttl=120,
            )
            await bob.join("room-1", seeder=True)
            seen = await bob.peers("room-1")
            assert seen.total == 2
            [entry] = seen.peers  # bob excludes himself
            assert entry.peer_id == alice.peer_id
            assert entry.candidates == (Candidate("203.0.113.5", 5000, "udp", "srflx"),)
            assert (entry.nat, dict(entry.metadata)) == (
                "endpoint-independent",
                {"name": "alice", "v": 2},
            )
            assert 0 < entry.expires_in <= 120
            stats = await alice.rendezvous.stats("room-1")
            assert (stats.swarm, stats.peers, stats.seeders, stats.leechers) == ("room-1", 2, 1, 1)
            page = await alice.rendezvous.poll("room-1", limit=1)
            assert len(page.peers) == 1
            rest = await alice.rendezvous.poll("room-1", page.cookie)
            assert {p.peer_id for p in page.peers + rest.peers} == {alice.peer_id, bob.peer_id}
            assert set(alice.rendezvous.joined) == {"room-1"}
            await alice.leave("room-1")
            assert alice.rendezvous.joined == {}
            assert (await bob.peers("room-1")).total == 1
            await alice.leave("room-1")  # idempotent
        # Leaving the ``async with`` left the swarms.
        async with RendezvousHttp(url, Identity.generate()) as http:
            assert (await http.stats("room-1")).peers == 0


async def test_refusals_are_rendezvous_errors_with_the_servers_code() -> None:
    async with rendezvous(min_ttl=30, max_ttl=600) as server:
        identity = Identity.generate()
        async with RendezvousHttp(url_of(server), identity) as http:
            with pytest.raises(RendezvousError) as bad_ttl:
                await http.join("room", ttl=5)
            assert (bad_ttl.value.status, bad_ttl.value.code) == (400, "invalid")
            assert "ttl" in bad_ttl.value.message
            with pytest.raises(RendezvousError) as bad_ip:
                await http.join("room", candidates=[Candidate("not-an-ip", 1)])
            assert (bad_ip.value.status, bad_ip.value.code) == (400, "invalid")
            with pytest.raises(RendezvousError) as no_turn:
                await http.turn_credentials()
            assert (no_turn.value.status, no_turn.value.code) == (503, "no_turn_secret")
            with pytest.raises(ValueError, match="swarm"):
                await http.join("../etc")
            assert (await http.stats("room")).peers == 0  # nothing was written
    # No server at all: status None, code connection_failed.
    async with RendezvousHttp(closed_port_url(), identity, timeout=2) as http:
        with pytest.raises(RendezvousError) as down:
            await http.stats("room")
        assert (down.value.status, down.value.code) == (None, "connection_failed")


async def test_turn_credentials() -> None:
    async with rendezvous(turn_secret="t" * 32, turn_uris=["turn:relay.example:3478"]) as server:
        identity = Identity.generate()
        async with RendezvousHttp(url_of(server), identity) as http:
            credentials = await http.turn_credentials(region="eu west/1")
        assert credentials.username.endswith(":" + identity.peer_id)
        assert credentials.uris == ("turn:relay.example:3478",)
        assert credentials.password
        assert credentials.ttl == 86400


async def test_rate_limit_is_waited_out_then_raised() -> None:
    async with rendezvous(rate_limit=1, rate_burst=2) as server:
        waits: list[float] = []

        async def no_wait(seconds: float) -> None:
            waits.append(seconds)

        http = RendezvousHttp(
            url_of(server), Identity.generate(), rate_limit_retries=2, sleep=no_wait
        )
        async with http:
            await http.stats("room")
            await http.stats("room")
            with pytest.raises(RendezvousError) as limited:
                await http.stats("room")
            assert (limited.value.status, limited.value.code) == (429, "rate_limited")
            assert limited.value.retry_after == 1.0
            assert waits == [1.0, 1.0]  # two retries, each after Retry-After
        # With a real wait, the retry succeeds once the bucket refilled.
        async with RendezvousHttp(url_of(server), Identity.generate(), rate_limit_retries=1) as ok:
            assert (await ok.stats("room")).peers == 0


async def test_expired_challenge_is_fetched_anew() -> None:
    now = [1_800_000_000.0]
    async with rendezvous(now=now, challenge_lifetime=60) as server:
        client_clock = [0.0]
        http = RendezvousHttp(url_of(server), Identity.generate(), clock=lambda: client_clock[0])
        async with http:
            await http.join("room")
            now[0] += 120  # the server's clock moved; the client's cached challenge expired
            assert (await http.join("room")).joined is False


async def test_tenant_token(tmp_path: Path) -> None:
    async with rendezvous(tenants_file=tenants_file(tmp_path), public=False) as server:
        url = url_of(server)
        with pytest.raises(RendezvousError) as refused:
            async with Peer(url, backoff=FAST, connect_timeout=0.5):
                pass
        assert refused.value.code == "timeout"  # the socket is refused: never connected
        async with RendezvousHttp(url, Identity.generate()) as anonymous:
            with pytest.raises(RendezvousError) as unauthenticated:
                await anonymous.stats("room")
            assert (unauthenticated.value.status, unauthenticated.value.code) == (
                401,
                "unauthenticated",
            )
        async with (
            Peer(url, token=TENANT_KEY, backoff=FAST) as alice,
            Peer(url, token=TENANT_KEY, backoff=FAST) as bob,
        ):
            await alice.join("room")
            assert [p.peer_id for p in (await bob.peers("room")).peers] == [alice.peer_id]
            messages = bob.signals()
            await alice.signal(bob.peer_id, {"hi": "tenant"})
            got = await messages.get()
            assert getattr(got, "data", None) == {"hi": "tenant"}
