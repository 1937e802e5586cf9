"""The resilient client on real servers: a first URL that refuses connections is failed
over; a server stopped mid-session (shutdown closes its sockets with 1001) sends the
client to the other instance, where it re-joins its swarms and keeps receiving signals;
registrations are refreshed at half their TTL; the backoff grows, is bounded and
jittered; a socket replaced by another client of the same identity is not reopened."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from client_sdk import Peer
from client_sdk.identity import Identity
from client_sdk.rendezvous import (
    Backoff,
    Connected,
    ConnectionState,
    Disconnected,
    IncomingSignal,
    Registered,
    RendezvousClient,
)
from tests.client_sdk.test_peer_api import FAST, closed_port_url, rendezvous, url_of
from tests.client_sdk.test_peer_signaling import next_of


async def test_a_refused_first_url_is_failed_over() -> None:
    dead = closed_port_url()
    async with rendezvous() as server:
        live = url_of(server)
        client = RendezvousClient([dead, live], Identity.generate(), backoff=FAST)
        events = client.subscribe()
        async with client:
            await client.wait_connected(5)
            assert client.url == live
            refused = await next_of(events, Disconnected)
            assert (refused.url, refused.code, refused.reconnecting) == (dead, None, True)
            assert "connection_failed" in refused.reason
            assert (await next_of(events, Connected)).url == live
            # HTTP calls go to the instance that answers, too.
            assert (await client.join("room")).peers == 1


async def test_all_urls_down_then_one_comes_up() -> None:
    async with Peer(closed_port_url(), backoff=FAST, connect_timeout=None) as peer:
        await asyncio.sleep(0.3)
        assert not peer.rendezvous.connected
        assert peer.rendezvous.state in (ConnectionState.CONNECTING, ConnectionState.BACKING_OFF)


async def test_server_stopped_mid_session_on_redis(redis_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(rendezvous(redis_url))
        second = await stack.enter_async_context(rendezvous(redis_url))
        first_url, second_url = url_of(first), url_of(second)
        alice = await stack.enter_async_context(Peer([first_url, second_url], backoff=FAST))
        bob = await stack.enter_async_context(Peer(url_of(second), backoff=FAST))
        events, inbox = alice.events(), alice.signals()
        await alice.join("room", ttl=60, metadata={"k": "v"})
        assert alice.rendezvous.url == first_url
        await bob.signal(alice.peer_id, "before")
        assert (await next_of(inbox, IncomingSignal)).data == "before"

        await first.close()  # shutdown: every socket closed with 1001 (going away)
        gone = await next_of(events, Disconnected)
        assert (gone.url, gone.code, gone.reconnecting) == (first_url, 1001, True)
        assert (await next_of(events, Connected)).url == second_url
        rejoined = await next_of(events, Registered)
        assert (rejoined.swarm, rejoined.url) == ("room", second_url)
        await bob.signal(alice.peer_id, "after")  # reaches alice on the other instance
        assert (await next_of(inbox, IncomingSignal)).data == "after"
        await alice.signal(bob.peer_id, "and back")


async def test_rejoined_on_another_store_after_failover() -> None:
    """Two instances that share nothing (memory stores): the only way alice is listed
    on the second is that she re-joined there, with the parameters of her join."""
    async with (
        rendezvous() as first,
        rendezvous() as second,
        Peer([url_of(first), url_of(second)], backoff=FAST) as alice,
        Peer(url_of(second), backoff=FAST) as bob,
    ):
        events = alice.events()
        await alice.join("room", ttl=60, nat="endpoint-independent", seeder=True)
        assert (await bob.peers("room")).total == 0
        await first.close()
        assert (await next_of(events, Connected)).url == url_of(second)
        assert (await next_of(events, Registered)).url == url_of(second)
        [entry] = (await bob.peers("room")).peers
        assert (entry.peer_id, entry.nat) == (alice.peer_id, "endpoint-independent")
        assert (await bob.rendezvous.stats("room")).seeders == 1


async def test_registrations_are_refreshed_at_half_their_ttl() -> None:
    async with rendezvous(min_ttl=1) as server:
        url = url_of(server)
        async with Peer(url, backoff=FAST) as alice, Peer(url, backoff=FAST) as bob:
            events = alice.events()
            await alice.join("room", ttl=2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await next_of(events, Registered)  # the join itself
            await next_of(events, Registered, timeout=3)  # refreshed at ~1 s
            await next_of(events, Registered, timeout=3)  # and again
            assert 1.5 < loop.time() - started < 3.5
            assert [p.peer_id for p in (await bob.peers("room")).peers] == [alice.peer_id]


async def test_backoff_in_the_reconnect_loop() -> None:
    """Every URL refuses: the client alternates between them, waiting initial, 2x, 4x,
    ... up to the maximum (no jitter here: random() = 0)."""
    waits: list[float] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 7:
            enough.set()
        await asyncio.sleep(0)

    urls = [closed_port_url(), closed_port_url()]
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
    client = RendezvousClient(
        urls, Identity.generate(), backoff=backoff, sleep=sleep, random=lambda: 0.0
    )
    events = client.subscribe()
    async with client:
        await asyncio.wait_for(enough.wait(), 10)
    assert waits[:7] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    tried: list[str] = []
    async for event in events:
        if isinstance(event, Disconnected) and event.reconnecting:
            tried.append(event.url)
    assert tried[:4] == [urls[0], urls[1], urls[0], urls[1]]


@given(
    failures=st.integers(min_value=-5, max_value=10_000),
    draw=st.floats(min_value=0.0, max_value=1.0),
    initial=st.floats(min_value=0.001, max_value=10.0),  # multiplier**64 stays finite
    extra=st.floats(min_value=0.0, max_value=100.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_backoff_bounds(
    failures: int, draw: float, initial: float, extra: float, multiplier: float, jitter: float
) -> None:
    backoff = Backoff(initial, initial + extra, multiplier, jitter)
    delay = backoff.delay(failures, lambda: draw)
    base = min(backoff.maximum, initial * multiplier ** min(64, max(0, failures)))
    assert base * (1 - jitter) - 1e-9 <= delay <= base + 1e-9
    assert 0 <= delay <= backoff.maximum + 1e-9
    # More failures never shorten the undisturbed wait.
    assert backoff.delay(failures + 1, lambda: 0.0) >= backoff.delay(failures, lambda: 0.0)


async def test_a_replaced_socket_is_not_reopened() -> None:
    async with rendezvous() as server:
        identity = Identity.generate()
        first = RendezvousClient(url_of(server), identity, backoff=FAST)
        events = first.subscribe()
        async with first:
            await first.wait_connected(5)
            async with RendezvousClient(url_of(server), identity, backoff=FAST) as second:
                await second.wait_connected(5)
                replaced: Any = await next_of(events, Disconnected)
                assert (replaced.code, replaced.reconnecting) == (4000, False)
                await asyncio.sleep(0.2)
                assert first.state == ConnectionState.CLOSED
                assert second.connected
