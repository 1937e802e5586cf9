"""Abuse limits: the per-IP token bucket (429 with Retry-After, health exempt, refilled by
time) and the registration caps per IP (429, nothing written), on memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from client_sdk.identity import Identity
from rendezvous.api.limits import network_of
from rendezvous.settings import RendezvousSettings
from tests.rendezvous.api.test_swarms_api import join_body, signed
from tests.rendezvous.apputil import serving, store_url


@pytest.fixture(params=["memory", "redis"])
async def limited(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[TestClient[Any, Any], list[float]]]:
    store = store_url(request, request.param)
    settings = RendezvousSettings(
        store=store, secret="s", rate_limit=1, rate_burst=4, peers_per_ip=2
    )
    now = [1_800_000_000.0]
    async with serving(settings, now) as client:
        yield client, now


async def test_rate_limit_per_ip(limited: tuple[TestClient[Any, Any], list[float]]) -> None:
    client, now = limited
    statuses = [(await client.get("/v1/swarms/s")).status for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    refused = await client.get("/v1/swarms/s")
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["error"]["code"] == "rate_limited"
    assert (await client.get("/livez")).status == 200  # health is never limited
    assert (await client.get("/metrics")).status == 200
    now[0] += 1  # one token back
    assert (await client.get("/v1/swarms/s")).status == 200
    assert (await client.get("/v1/swarms/s")).status == 429


async def test_peers_per_ip(limited: tuple[TestClient[Any, Any], list[float]]) -> None:
    client, now = limited
    peers = [Identity.generate() for _ in range(3)]
    responses = []
    for peer in peers:
        now[0] += 10  # keep clear of the rate limit: this test is about the caps
        response = await signed(
            client, peer, "PUT", f"/v1/swarms/s/peers/{peer.peer_id}", join_body()
        )
        responses.append(response.status)
    assert responses == [201, 201, 429]
    now[0] += 10
    again = await signed(
        client, peers[0], "PUT", f"/v1/swarms/s/peers/{peers[0].peer_id}", join_body()
    )
    assert again.status == 200  # a refresh is not a new identity
    now[0] += 10
    assert (await (await client.get("/v1/swarms/s")).json())["peers"] == 2


def test_networks() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        network_of("not an ip")
