"""The TURN core's routes in the C data plane (``relay.turn.routes``): installed for each
live channel of a UDP client, with the expiry the core would apply (the earlier of the
channel's and the permission's), kept up to date by every refresh, removed with the
channel or the allocation, and the traffic they carried folded into the allocation."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from relay.server import batched
from relay.stun import AttributeType, Method
from relay.turn.allocation import Allocation
from relay.turn.routes import RouteTable
from relay.turn.server import TurnServer
from tests.relay.turn.test_turn_core import (
    CLIENT,
    PEER,
    Client,
    FakePorts,
    channel_data,
    make_server,
)

pytestmark = pytest.mark.skipif(not batched.available(), reason="data plane not built")

if batched.available():
    from relay.server._dataplane import DataPlane, Route

PEER6 = ("2001:db8::9", 7)


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        value = DataPlane([(listener.fileno(), int(socket.AF_INET))])
        try:
            yield value
        finally:
            value.close()


def with_routes(
    plane: DataPlane, ports: FakePorts | None = None, *attrs: tuple[int, object]
) -> tuple[TurnServer, Client]:
    server = make_server(ports=ports)
    server.allocations.routes = RouteTable(plane)
    client = Client(server)
    client.allocate(*attrs, now=0.0)
    return server, client


def bind(client: Client, number: int, peer: tuple[str, int], now: float) -> None:
    client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, number),
        (AttributeType.XOR_PEER_ADDRESS, peer),
        now=now,
    )


def allocation_of(server: TurnServer) -> Allocation:
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    return allocation


def routes(
    plane: DataPlane, allocation: Allocation, number: int, peer: tuple[str, int]
) -> tuple[Route | None, Route | None]:
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    relay = allocation.relays[family]
    inbound = plane.inbound[0].get(
        number.to_bytes(2, "big") + batched.sockaddr(socket.AF_INET, CLIENT)
    )
    outbound = plane.outbound.get(
        relay.fileno().to_bytes(4, sys.byteorder) + batched.sockaddr(family, peer)
    )
    return inbound, outbound


def test_channel_bind_installs_both_routes(plane: DataPlane) -> None:
    server, client = with_routes(plane)
    assert len(plane.inbound[0]) == len(plane.outbound) == 0  # an allocation alone: none
    bind(client, 0x4001, PEER, now=2.0)
    allocation = allocation_of(server)
    inbound, outbound = routes(plane, allocation, 0x4001, PEER)
    assert inbound is not None
    assert outbound is not None
    relay = allocation.relays[socket.AF_INET]
    assert (inbound.fd, inbound.destination) == (
        relay.fileno(),
        batched.sockaddr(socket.AF_INET, PEER),
    )
    assert (outbound.fd, outbound.destination) == (0, batched.sockaddr(socket.AF_INET, CLIENT))
    assert inbound.channel == outbound.channel == 0x4001
    # The permission (300 s) ends before the channel (600 s): the route ends with it.
    assert inbound.expiry == outbound.expiry == 2.0 + 300
    table = server.allocations.routes
    assert isinstance(table, RouteTable)
    assert len(table) == 1


def test_refreshes_move_the_expiry_as_the_core_sees_it(plane: DataPlane) -> None:
    server, client = with_routes(plane)
    bind(client, 0x4001, PEER, now=2.0)
    client.request(Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, PEER), now=100.0)
    allocation = allocation_of(server)
    assert routes(plane, allocation, 0x4001, PEER)[0].expiry == 100.0 + 300  # type: ignore[union-attr]
    bind(client, 0x4001, PEER, now=500.0)  # refreshes the channel and the permission
    inbound, outbound = routes(plane, allocation, 0x4001, PEER)
    assert inbound is not None
    assert outbound is not None
    assert inbound.expiry == outbound.expiry == 500.0 + 300
    # What the core decides at any time agrees with the routes: alive just before expiry.
    assert server.handle_client(channel_data(0x4001, b"x"), CLIENT, 0, 799.0) is not None
    assert server.handle_client(channel_data(0x4001, b"x"), CLIENT, 0, 800.0) is None


def test_expired_channels_lose_their_routes_on_the_sweep(plane: DataPlane) -> None:
    server, client = with_routes(plane)
    bind(client, 0x4001, PEER, now=2.0)
    bind(client, 0x4002, ("203.0.113.51", 9), now=400.0)
    client.request(Method.REFRESH, (AttributeType.LIFETIME, 3600), now=400.0)
    server.handle_timer(2.0 + 600 + 1)  # 0x4001 expired, 0x4002 lives on
    allocation = allocation_of(server)
    assert routes(plane, allocation, 0x4001, PEER) == (None, None)
    assert all(routes(plane, allocation, 0x4002, ("203.0.113.51", 9)))
    assert len(plane.inbound[0]) == len(plane.outbound) == 1


def test_deleting_the_allocation_removes_its_routes_and_keeps_their_counts(
    plane: DataPlane,
) -> None:
    server, client = with_routes(plane)
    bind(client, 0x4001, PEER, now=2.0)
    allocation = allocation_of(server)
    inbound, outbound = routes(plane, allocation, 0x4001, PEER)
    assert inbound is not None
    assert outbound is not None
    inbound.packets, inbound.bytes = 3, 300  # as if the data plane had relayed them
    outbound.packets, outbound.bytes = 2, 20
    client.request(Method.REFRESH, (AttributeType.LIFETIME, 0), now=3.0)
    assert len(plane.inbound[0]) == len(plane.outbound) == 0
    assert (allocation.packets_to_peer, allocation.bytes_to_peer) == (3, 300)
    assert (allocation.packets_to_client, allocation.bytes_to_client) == (2, 20)


def test_counts_are_folded_once(plane: DataPlane) -> None:
    server, client = with_routes(plane)
    bind(client, 0x4001, PEER, now=2.0)
    allocation = allocation_of(server)
    inbound, _ = routes(plane, allocation, 0x4001, PEER)
    assert inbound is not None
    inbound.packets = 5
    client.request(Method.REFRESH, (AttributeType.LIFETIME, 600), now=3.0)  # an event folds
    client.request(Method.REFRESH, (AttributeType.LIFETIME, 600), now=4.0)
    assert allocation.packets_to_peer == 5
    assert inbound.packets == 0


def test_deleting_one_family_removes_only_its_routes(plane: DataPlane) -> None:
    server, client = with_routes(
        plane, FakePorts(v6=True), (AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2)
    )
    bind(client, 0x4001, PEER, now=2.0)
    bind(client, 0x4002, PEER6, now=2.0)
    allocation = allocation_of(server)
    assert len(plane.outbound) == 2
    client.request(
        Method.REFRESH,
        (AttributeType.REQUESTED_ADDRESS_FAMILY, 2),
        (AttributeType.LIFETIME, 0),
        now=3.0,
    )
    assert all(routes(plane, allocation, 0x4001, PEER))
    assert len(plane.inbound[0]) == len(plane.outbound) == 1


def test_forgetting_leaves_a_newer_route_with_the_same_key_alone(plane: DataPlane) -> None:
    """A relayed fd is reused once its socket is closed: an old allocation's routes must
    not take a newer allocation's identical keys with them."""
    server, client = with_routes(plane)
    bind(client, 0x4001, PEER, now=2.0)
    allocation = allocation_of(server)
    table = server.allocations.routes
    assert isinstance(table, RouteTable)
    inbound, outbound = routes(plane, allocation, 0x4001, PEER)
    assert inbound is not None
    assert outbound is not None
    newer = Route(inbound.fd, inbound.destination, 0x4001, 9e9)
    key = next(iter(plane.inbound[0]))
    plane.inbound[0][key] = newer
    table.forget(allocation)
    assert plane.inbound[0] == {key: newer}
    assert plane.outbound == {}
