"""``PeerConnection`` over its paths, without sockets: links are small stand-ins with the
``PathLink`` surface (a found future, an inbox, a close callback), so the choice between
paths, the upgrade from the relay to a direct path, the fallback, the end and the
inbox are exercised exactly, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from client_sdk.connect.candidates import Address
from client_sdk.connect.connection import ConnectionClosed, PathChanged, PeerConnection
from client_sdk.connect.punch import PathFound
from client_sdk.secure.session import MAX_PAYLOAD

PEER = "p" * 32


class StubLink:
    """A path: ``establish()`` is its punch succeeding, ``die()`` its idle timeout."""

    def __init__(self, address: Address, rtt: float = 0.01) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.found: asyncio.Future[PathFound] = asyncio.get_running_loop().create_future()
        self.on_closed: Callable[[str], None] | None = None
        self.remote_peer_id = PEER
        self.rtt: float | None = rtt
        self.remote_address: Address | None = address
        self.max_payload = MAX_PAYLOAD
        self.failure: str | None = None
        self.sent: list[bytes] = []

    @property
    def established(self) -> bool:
        found = self.found
        return self.failure is None and found.done() and found.exception() is None

    def establish(self) -> None:
        assert self.remote_address is not None
        self.found.set_result(PathFound(self.remote_address, self.rtt or 0.0))

    def deliver(self, data: bytes) -> None:
        self.inbox.put_nowait(data)

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def die(self, reason: str) -> None:
        self.close(reason)

    def close(self, reason: str = "closed") -> None:
        if self.failure is not None:
            return
        self.failure = reason
        if not self.found.done():
            self.found.set_exception(ConnectionError(reason))
            self.found.exception()
        self.inbox.put_nowait(None)
        if self.on_closed is not None:
            self.on_closed(reason)


DIRECT = ("198.51.100.7", 40000)
RELAYED = ("203.0.113.1", 50000)


def path_of(conn: PeerConnection) -> str | None:
    """The path now (a call, so that a type checker does not keep an earlier answer)."""
    return conn.path


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_starts_on_the_relay_and_upgrades_when_the_direct_punch_succeeds() -> None:
    relay, direct = StubLink(RELAYED), StubLink(DIRECT)
    relay.establish()
    conn = PeerConnection(PEER)
    conn.attach("relay", relay)
    conn.attach("direct", direct)  # still punching
    changes = conn.path_changes()
    assert path_of(conn) == "relay"
    assert conn.remote_address == RELAYED
    await conn.send(b"one")
    assert relay.sent == [b"one"]

    direct.establish()
    change = await asyncio.wait_for(anext(changes), 1)
    assert change == PathChanged("relay", "direct", DIRECT)
    assert path_of(conn) == "direct"
    await conn.send(b"two")
    assert direct.sent == [b"two"]
    assert relay.sent == [b"one"]
    assert relay.failure is None  # kept as the fallback


async def test_a_direct_punch_that_fails_leaves_the_relay_connection_alone() -> None:
    relay, direct = StubLink(RELAYED), StubLink(DIRECT)
    relay.establish()
    conn = PeerConnection(PEER)
    conn.attach("relay", relay)
    conn.attach("direct", direct)
    direct.die("no direct path")
    await settle()
    assert path_of(conn) == "relay"
    assert not conn.closed
    relay.deliver(b"still here")
    assert await asyncio.wait_for(conn.recv(), 1) == b"still here"


async def test_falls_back_to_the_relay_when_the_direct_path_dies_then_ends() -> None:
    relay, direct = StubLink(RELAYED), StubLink(DIRECT)
    direct.establish()
    relay.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", direct)
    conn.attach("relay", relay)
    assert path_of(conn) == "direct"
    changes = conn.path_changes()
    direct.deliver(b"before")
    direct.die("idle timeout")
    assert await asyncio.wait_for(anext(changes), 1) == PathChanged("direct", "relay", RELAYED)
    assert path_of(conn) == "relay"
    # What came before the death is still read; the dead path's wake-up is not an end.
    assert await asyncio.wait_for(conn.recv(), 1) == b"before"
    relay.deliver(b"after")
    assert await asyncio.wait_for(conn.recv(), 1) == b"after"

    relay.die("relay gone")
    end = await asyncio.wait_for(anext(changes), 1)
    assert end == PathChanged("relay", None, None, "relay gone")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(changes), 1)
    assert conn.closed
    with pytest.raises(ConnectionClosed, match="relay gone"):
        await conn.recv()
    with pytest.raises(ConnectionClosed):
        await conn.send(b"x")


async def test_data_that_arrived_before_attach_is_kept_and_both_paths_feed_recv() -> None:
    relay, direct = StubLink(RELAYED), StubLink(DIRECT)
    direct.establish()
    relay.establish()
    direct.deliver(b"early")
    conn = PeerConnection(PEER)
    conn.attach("direct", direct)
    conn.attach("relay", relay)
    relay.deliver(b"late relayed")
    direct.deliver(b"direct")
    got = [await asyncio.wait_for(conn.recv(), 1) for _ in range(3)]
    assert got == [b"early", b"late relayed", b"direct"]


async def test_close_closes_every_path_and_attach_after_close_refuses() -> None:
    relay, direct = StubLink(RELAYED), StubLink(DIRECT)
    relay.establish()
    conn = PeerConnection(PEER)
    ended: list[PeerConnection] = []
    conn.on_closed = ended.append
    conn.attach("relay", relay)
    conn.attach("direct", direct)
    await conn.close()
    assert relay.failure == direct.failure == "closed"
    assert ended == [conn]
    late = StubLink(DIRECT)
    late.establish()
    conn.attach("direct", late)
    assert late.failure == "closed"
    assert [change async for change in conn.path_changes()] == []


async def test_a_second_link_of_one_kind_is_refused() -> None:
    first, second = StubLink(DIRECT), StubLink(("198.51.100.8", 1))
    first.establish()
    second.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", first)
    conn.attach("direct", second)
    assert second.failure is not None
    assert conn.remote_address == DIRECT


async def test_the_size_limit_is_the_paths() -> None:
    direct = StubLink(DIRECT)
    direct.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", direct)
    with pytest.raises(ValueError, match="1 to"):
        await conn.send(b"")
    with pytest.raises(ValueError, match="1 to"):
        await conn.send(b"x" * (MAX_PAYLOAD + 1))
    await conn.send(b"x" * MAX_PAYLOAD)


async def test_a_replacing_punch_takes_over_after_the_relay_bridges_the_gap() -> None:
    old, relay, new = StubLink(DIRECT), StubLink(RELAYED), StubLink(("198.51.100.7", 40001))
    old.establish()
    relay.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", old)
    conn.attach("relay", relay)
    changes = conn.path_changes()
    conn.attach("direct", new, replace=True)  # the peer punched again
    assert old.failure == "replaced by a new punch"
    assert await asyncio.wait_for(anext(changes), 1) == PathChanged("direct", "relay", RELAYED)
    new.establish()
    change = await asyncio.wait_for(anext(changes), 1)
    assert change == PathChanged("relay", "direct", ("198.51.100.7", 40001))


async def test_without_an_established_path_a_connection_waits_for_its_punch() -> None:
    old, new = StubLink(DIRECT), StubLink(("198.51.100.7", 40001))
    old.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", old)
    conn.attach("direct", new, replace=True)
    assert not conn.closed  # the new punch is still looking
    await conn.send(b"lost between paths")
    assert conn.dropped == 1
    new.establish()
    await settle()
    await conn.send(b"on the new path")
    assert new.sent == [b"on the new path"]
    assert old.sent == []


async def test_a_connection_whose_last_punch_fails_ends() -> None:
    old, new = StubLink(DIRECT), StubLink(("198.51.100.7", 40001))
    old.establish()
    conn = PeerConnection(PEER)
    conn.attach("direct", old)
    conn.attach("direct", new, replace=True)
    new.die("no direct path")
    await settle()
    assert conn.closed
    with pytest.raises(ConnectionClosed, match="no direct path"):
        await conn.recv()
