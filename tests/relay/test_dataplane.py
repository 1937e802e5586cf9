"""The C data plane (``relay.server._dataplane``) on real loopback sockets: batched
listener I/O, ChannelData relayed on installed routes and only on them, everything else
handed back untouched; its address codec; and arbitrary datagrams against the Python
ChannelData parser as the oracle."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.server import batched
from relay.server.types import Address
from relay.stun import StunError
from relay.turn.framing import parse_channel_data

pytestmark = pytest.mark.skipif(not batched.available(), reason="data plane not built")

if batched.available():
    from relay.server._dataplane import BUFFER_SIZE, DataPlane, Route, address, sockaddr

NOW = 1000.0
CHANNEL = 0x4001


def udp(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    return sock


class Rig:
    """A listener, a client, a relayed socket and a peer, and the data plane between."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.family = family
        self.listener, self.client = udp(family), udp(family)
        self.relay, self.peer = udp(family), udp(family)
        for sock in (self.listener, self.relay):
            sock.setblocking(False)
        for sock in (self.client, self.peer):
            sock.settimeout(2)
        self.plane = DataPlane([(self.listener.fileno(), int(family))])
        self.plane.add_relay(self.relay.fileno())

    def name(self, sock: socket.socket) -> bytes:
        return sockaddr(int(self.family), sock.getsockname())

    def route_in(self, expiry: float = NOW + 10, channel: int = CHANNEL) -> Route:
        route = Route(self.relay.fileno(), self.name(self.peer), channel, expiry)
        self.plane.inbound[0][channel.to_bytes(2, "big") + self.name(self.client)] = route
        return route

    def route_out(self, expiry: float = NOW + 10, channel: int = CHANNEL) -> Route:
        route = Route(0, self.name(self.client), channel, expiry)
        key = self.relay.fileno().to_bytes(4, sys.byteorder) + self.name(self.peer)
        self.plane.outbound[key] = route
        return route

    def from_client(self, *datagrams: bytes) -> list[tuple[bytes, Address]]:
        # Loopback delivers within sendto: every datagram is queued when it returns.
        for data in datagrams:
            self.client.sendto(data, self.listener.getsockname())
        misses: list[tuple[bytes, Address]] = []
        while (got := self.plane.drain_listener(0, NOW)) is not None:
            misses.extend(got)
        return misses

    def from_peer(self, data: bytes) -> list[tuple[int, bytes, Address]] | None:
        self.peer.sendto(data, self.relay.getsockname())
        ready, _, _ = select.select([self.plane.epoll_fd], [], [], 2)
        assert ready, "epoll descriptor never became readable"
        return self.plane.drain_relays(NOW)

    def nothing_at(self, sock: socket.socket) -> bool:
        ready, _, _ = select.select([sock], [], [], 0.05)
        return not ready

    def peer_got_nothing(self) -> bool:
        """Whether nothing reached the peer: a marker relayed now arrives first (one
        socket pair on loopback keeps its order)."""
        key = CHANNEL.to_bytes(2, "big") + self.name(self.client)
        if key not in self.plane.inbound[0]:
            return self.nothing_at(self.peer)
        assert self.from_client(channel_data(b"marker")) == []
        return self.peer.recvfrom(65536)[0] == b"marker"

    def close(self) -> None:
        self.plane.close()
        for sock in (self.listener, self.client, self.relay, self.peer):
            sock.close()


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    value = Rig(request.param)
    try:
        yield value
    finally:
        value.close()


def channel_data(payload: bytes, channel: int = CHANNEL, padding: int = 0) -> bytes:
    return struct.pack("!HH", channel, len(payload)) + payload + bytes(padding)


def test_channel_data_on_a_route_goes_to_the_peer_from_the_relayed_socket(rig: Rig) -> None:
    route = rig.route_in()
    assert rig.from_client(channel_data(b"hello")) == []
    data, source = rig.peer.recvfrom(2048)
    assert (data, source[:2]) == (b"hello", rig.relay.getsockname()[:2])
    # RFC 8656 §12.5: padding to a multiple of 4 may follow over UDP and is not relayed.
    assert rig.from_client(channel_data(b"abcde", padding=3)) == []
    assert rig.peer.recvfrom(2048)[0] == b"abcde"
    assert (route.packets, route.bytes) == (2, 10)
    assert (rig.plane.to_peer_packets, rig.plane.to_peer_bytes) == (2, 10)


def test_everything_without_a_live_route_comes_back_untouched(rig: Rig) -> None:
    rig.route_in(expiry=NOW)  # expired exactly now: not relayed
    client = rig.client.getsockname()
    datagrams = [
        channel_data(b"expired"),
        channel_data(b"other channel", channel=0x4002),
        channel_data(b"short")[:-1],  # shorter than its length (§12.5)
        channel_data(b"abcd", padding=4),  # more than padding after it (§12.4)
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # a STUN Binding request
        b"\x40",  # too short for a header
    ]
    misses = rig.from_client(*datagrams)
    assert [data for data, _ in misses] == datagrams
    assert all(addr[:2] == client[:2] for _, addr in misses)
    assert rig.nothing_at(rig.peer)
    assert rig.plane.to_peer_packets == 0


def test_peer_data_on_a_route_becomes_channel_data_for_the_client(rig: Rig) -> None:
    route = rig.route_out()
    assert rig.from_peer(b"from peer") is None
    data, source = rig.client.recvfrom(2048)
    assert data == channel_data(b"from peer")  # no padding over UDP
    assert source[:2] == rig.listener.getsockname()[:2]
    assert (route.packets, route.bytes, rig.plane.to_client_packets) == (1, 9, 1)


def test_peer_data_without_a_route_comes_back_with_its_socket(rig: Rig) -> None:
    rig.route_out(expiry=NOW - 1)
    misses = rig.from_peer(b"no route")
    assert misses is not None
    [(fd, data, addr)] = misses
    assert (fd, data, addr[:2]) == (rig.relay.fileno(), b"no route", rig.peer.getsockname()[:2])
    assert rig.nothing_at(rig.client)


def test_queue_sends_in_one_batch_on_flush(rig: Rig) -> None:
    client = rig.client.getsockname()
    for i in range(BUFFER_SIZE // 16):  # more than one batch: flushes as it fills
        assert rig.plane.queue(0, b"reply %d" % i, client) is True
    rig.plane.flush()
    for i in range(BUFFER_SIZE // 16):
        assert rig.client.recvfrom(2048)[0] == b"reply %d" % i
    # Too large for a slot: the caller sends it itself.
    assert rig.plane.queue(0, bytes(BUFFER_SIZE + 1), client) is False


def test_oversized_datagrams_are_counted_and_dropped(rig: Rig) -> None:
    rig.route_in()
    assert rig.from_client(channel_data(bytes(BUFFER_SIZE))) == []
    assert rig.plane.truncated == 1
    assert rig.nothing_at(rig.peer)


def test_removed_relays_are_not_watched(rig: Rig) -> None:
    rig.plane.remove_relay(rig.relay.fileno())
    rig.plane.remove_relay(rig.relay.fileno())  # twice is fine
    rig.peer.sendto(b"x", rig.relay.getsockname())
    assert select.select([rig.plane.epoll_fd], [], [], 0.1)[0] == []


def test_closed_plane_refuses_work() -> None:
    rig = Rig()
    rig.close()
    rig.plane.close()  # twice is fine
    assert rig.plane.closed
    with pytest.raises(RuntimeError, match="closed"):
        rig.plane.drain_listener(0, NOW)
    with pytest.raises(RuntimeError, match="closed"):
        rig.plane.drain_relays(NOW)
    rig.plane.remove_relay(5)  # a no-op once closed


def test_bad_arguments_raise_clear_errors() -> None:
    rig = Rig()
    try:
        with pytest.raises(IndexError, match="no listener 1"):
            rig.plane.drain_listener(1, NOW)
        with pytest.raises(ValueError, match="not an IPv4 address"):
            rig.plane.queue(0, b"x", ("::1", 5))
        with pytest.raises(ValueError, match="channel"):
            Route(3, rig.name(rig.peer), 0x3FFF, NOW)
        with pytest.raises(ValueError, match="sockaddr of 4 bytes"):
            Route(3, b"\x02\x00\x00\x00", CHANNEL, NOW)
        with pytest.raises(ValueError, match="not IPv4 or IPv6"):
            DataPlane([(rig.listener.fileno(), int(socket.AF_UNIX))])
        with pytest.raises(ValueError, match="not a file descriptor"):
            rig.plane.add_relay(-1)
    finally:
        rig.close()


@pytest.mark.parametrize(
    ("family", "addr", "error"),
    [
        (socket.AF_INET, ("1.2.3", 80), "not an IPv4 address"),
        (socket.AF_INET, ("1.2.3.4", 65536), "outside 0-65535"),
        (socket.AF_INET, ("1.2.3.4", 80, 0, 0), "IPv4 address is a"),
        (socket.AF_INET6, ("fe80::1", 80, 1 << 20, 0), "out of range"),
        (socket.AF_INET6, ("1.2.3.4", 80), "not an IPv6 address"),
        (socket.AF_INET, ("1.2.3.4",), "tuple"),
    ],
)
def test_sockaddr_rejects_what_is_not_an_address(
    family: socket.AddressFamily, addr: tuple[object, ...], error: str
) -> None:
    with pytest.raises((ValueError, OverflowError), match=error):
        sockaddr(int(family), addr)  # type: ignore[arg-type]


@given(st.binary(max_size=40))
def test_address_of_arbitrary_bytes_is_a_tuple_or_a_value_error(raw: bytes) -> None:
    try:
        decoded = address(raw)
    except ValueError:
        return
    assert isinstance(decoded, tuple)
    assert sockaddr(int(socket.AF_INET6 if len(decoded) == 4 else socket.AF_INET), decoded)


@given(
    st.one_of(
        st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
        st.tuples(
            st.ip_addresses(v=6).map(str),
            st.integers(0, 65535),
            st.integers(0, 0xFFFFF),
            st.integers(0, 0xFFFFFFFF),
        ),
    )
)
def test_sockaddr_round_trip(addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    encoded = sockaddr(int(family), addr)
    assert len(encoded) == (28 if family == socket.AF_INET6 else 16)
    decoded = address(encoded)
    assert decoded[1:] == addr[1:]
    assert socket.inet_pton(family, decoded[0]) == socket.inet_pton(family, addr[0])


@pytest.fixture(scope="module")
def shared_rig() -> Iterator[Rig]:
    value = Rig()
    value.route_in(expiry=float("inf"))
    try:
        yield value
    finally:
        value.close()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda channel, payload, extra: (
                struct.pack("!HH", channel, len(payload)) + payload + extra
            ),
            st.sampled_from([CHANNEL, 0x4002, 0x0001, 0xFFFF]),
            st.binary(max_size=40),
            st.binary(max_size=5),
        ),
        st.builds(
            lambda length, body: struct.pack("!HH", CHANNEL, length) + body,
            st.integers(0, 0xFFFF),
            st.binary(max_size=40),
        ),
    )
)
def test_arbitrary_datagrams_relayed_exactly_when_the_parser_accepts_them(
    shared_rig: Rig, data: bytes
) -> None:
    """The data plane relays a datagram iff ``parse_channel_data`` reads it as ChannelData
    on the route's channel; then the peer gets exactly the parsed payload, and otherwise the
    datagram comes back unchanged."""
    try:
        number, payload = parse_channel_data(data, channel_max=0x7FFF)
        expected: bytes | None = payload if number == CHANNEL else None
    except StunError:
        expected = None
    misses = shared_rig.from_client(data)
    if expected is None:
        assert [d for d, _ in misses] == [data]
        assert shared_rig.peer_got_nothing()
    else:
        assert misses == []
        assert shared_rig.peer.recvfrom(65536)[0] == expected


def test_listening_socket_errors_leave_the_plane_usable() -> None:
    rig = Rig()
    try:
        # An ICMP port unreachable for an earlier send must not break the next drains.
        with contextlib.closing(udp()) as gone:
            address_gone = gone.getsockname()
        rig.plane.queue(0, b"into the void", address_gone)
        rig.plane.flush()
        rig.route_in()
        assert rig.from_client(channel_data(b"still works")) == []
        assert rig.peer.recvfrom(2048)[0] == b"still works"
    finally:
        rig.close()
