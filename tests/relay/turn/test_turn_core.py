"""The sans-IO TURN core without sockets: every request type, every error path of RFC 8656
the server implements, expiry by the clock the test controls."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.server.binding import BindingService
from relay.server.listeners import plan_listeners
from relay.server.types import Address
from relay.settings import RelaySettings
from relay.stun import (
    AttributeType,
    Message,
    MessageClass,
    Method,
    long_term_key,
    parse,
    verify_integrity,
)
from relay.turn.allocation import Allocation, AllocationManager
from relay.turn.auth import LongTermAuthenticator
from relay.turn.policy import PeerPolicy
from relay.turn.server import TurnConfig, TurnServer

CLIENT: Address = ("198.51.100.7", 40000)
OTHER_CLIENT: Address = ("198.51.100.8", 40000)
PEER = ("203.0.113.50", 5000)  # documentation range: allowed below via allow_peer
REALM, USER, PASSWORD = "test.realm", "alice", "secret"
KEY = long_term_key(USER, REALM, PASSWORD)


@dataclass(eq=False)
class FakeRelay:
    """Stands in for a relayed UDP socket at the I/O boundary the core does not own."""

    family: socket.AddressFamily
    address: tuple[str, int]
    allocation: Allocation | None = None
    closed: bool = False

    def send(self, data: bytes, addr: Address) -> None:  # the core never sends itself
        raise AssertionError("the sans-IO core must return replies, not send")

    def fileno(self) -> int:  # stands in for a descriptor in the data plane's route keys
        return self.address[1]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakePorts:
    v6: bool = False
    next_port: int = 50000
    taken: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    bound: list[FakeRelay] = field(default_factory=list)

    def families(self) -> frozenset[socket.AddressFamily]:
        return frozenset({socket.AF_INET, socket.AF_INET6} if self.v6 else {socket.AF_INET})

    def hold(self, family: socket.AddressFamily, port: int) -> FakeRelay | None:
        if port in self.taken:
            return None
        self.taken.add(port)
        self.held.add(port)
        return FakeRelay(family, ("hold", port))

    def claim(self, family: socket.AddressFamily, port: int) -> FakeRelay | None:
        if port not in self.held:
            return None
        self.held.discard(port)  # good once, as the kernel makes it
        ip = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
        relay = FakeRelay(family, (ip, port))
        self.bound.append(relay)
        return relay

    def bind(self, family: socket.AddressFamily, port: int | None) -> FakeRelay | None:
        if family not in self.families():
            return None
        if port is None:
            port = self.next_port
            self.next_port += 1
        if port in self.taken:
            return None
        self.taken.add(port)
        ip = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
        relay = FakeRelay(family, (ip, port))
        self.bound.append(relay)
        return relay


def make_server(
    *,
    ports: FakePorts | None = None,
    user_quota: int = 0,
    total: int = 100,
    legacy: bool = True,
) -> TurnServer:
    listeners = plan_listeners(RelaySettings.model_validate({"listen": ["192.0.2.1:3478"]}))
    return TurnServer(
        BindingService(listeners),
        authenticator=LongTermAuthenticator(
            realm=REALM, users={USER: PASSWORD, "bob": "pw"}, nonce_secret=b"n" * 32
        ),
        policy=PeerPolicy(allow=["203.0.113.0/24", "2001:db8::/32"]),
        ports=ports if ports is not None else FakePorts(),
        allocations=AllocationManager(max_allocations=total, user_quota=user_quota),
        config=TurnConfig(legacy_channels=legacy),
    )


class Client:
    """Builds authenticated requests the way a TURN client does (401, then MI)."""

    def __init__(
        self, server: TurnServer, addr: Address = CLIENT, user: str = USER, password: str = PASSWORD
    ) -> None:
        self.server, self.addr, self.user = server, addr, user
        self.key = long_term_key(user, REALM, password)
        self.nonce: str | None = None

    def raw(self, data: bytes, now: float = 0.0) -> Message | None:
        reply = self.server.handle_client(data, self.addr, 0, now)
        if reply is None:
            return None
        payload, sink, destination = reply
        assert sink == 0
        assert destination == self.addr
        return parse(payload)

    def request(
        self, method: Method, *attrs: tuple[int, object], now: float = 0.0, tid: bytes | None = None
    ) -> Message:
        if self.nonce is None:
            challenge = self.raw(
                Message(method, MessageClass.REQUEST, os.urandom(12), tuple(attrs)).encode(), now
            )
            assert challenge is not None
            assert code(challenge) == 401
            assert challenge.get(AttributeType.REALM) == REALM
            self.nonce = challenge.get(AttributeType.NONCE)
        message = Message(
            method,
            MessageClass.REQUEST,
            tid or os.urandom(12),
            (
                *attrs,
                (AttributeType.USERNAME, self.user),
                (AttributeType.REALM, REALM),
                (AttributeType.NONCE, self.nonce),
            ),
        )
        response = self.raw(message.encode(integrity_key=self.key, fingerprint=True), now)
        assert response is not None
        assert response.transaction_id == message.transaction_id
        if response.message_class == MessageClass.SUCCESS or code(response) not in (401, 438):
            assert verify_integrity(response, self.key), "response not protected with the key"
        return response

    def allocate(self, *attrs: tuple[int, object], now: float = 0.0) -> Message:
        return self.request(
            Method.ALLOCATE, (AttributeType.REQUESTED_TRANSPORT, 17), *attrs, now=now
        )


def unauthenticated_allocate() -> bytes:
    """An Allocate without credentials: what every client sends first."""
    return Message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        os.urandom(12),
        ((AttributeType.REQUESTED_TRANSPORT, 17),),
    ).encode()


def code(message: Message) -> int | None:
    error = message.get(AttributeType.ERROR_CODE)
    return None if error is None else error.code


def test_unauthenticated_allocate_is_challenged() -> None:
    server = make_server()
    client = Client(server)
    reply = client.raw(unauthenticated_allocate())
    assert reply is not None
    assert code(reply) == 401
    assert reply.get(AttributeType.REALM) == REALM
    assert reply.get(AttributeType.NONCE)
    assert not reply.has_integrity
    assert len(server.allocations) == 0


def test_allocate_success() -> None:
    server = make_server()
    response = Client(server).allocate()
    assert response.message_class == MessageClass.SUCCESS
    assert response.get(AttributeType.XOR_RELAYED_ADDRESS) == ("192.0.2.1", 50000)
    assert response.get(AttributeType.LIFETIME) == 600
    assert response.get(AttributeType.XOR_MAPPED_ADDRESS) == CLIENT
    assert len(server.allocations) == 1


@pytest.mark.parametrize(("requested", "granted"), [(5000, 3600), (100, 600), (1200, 1200)])
def test_allocate_lifetime(requested: int, granted: int) -> None:
    response = Client(make_server()).allocate((AttributeType.LIFETIME, requested))
    assert response.get(AttributeType.LIFETIME) == granted


def test_retransmitted_allocate_gets_the_same_success_other_gets_437() -> None:
    server = make_server()
    client = Client(server)
    client.request(Method.REFRESH)  # just to get a nonce: 437, no allocation yet
    tid = os.urandom(12)
    first = client.request(Method.ALLOCATE, (AttributeType.REQUESTED_TRANSPORT, 17), tid=tid)
    again = client.request(Method.ALLOCATE, (AttributeType.REQUESTED_TRANSPORT, 17), tid=tid)
    assert again.message_class == MessageClass.SUCCESS
    assert again.get(AttributeType.XOR_RELAYED_ADDRESS) == first.get(
        AttributeType.XOR_RELAYED_ADDRESS
    )
    assert code(client.allocate()) == 437
    assert len(server.allocations) == 1


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ((), 400),  # no REQUESTED-TRANSPORT
        (((AttributeType.REQUESTED_TRANSPORT, 6),), 442),  # TCP
        (
            ((AttributeType.REQUESTED_TRANSPORT, 17), (AttributeType.REQUESTED_ADDRESS_FAMILY, 2)),
            440,
        ),
        (
            ((AttributeType.REQUESTED_TRANSPORT, 17), (AttributeType.REQUESTED_ADDRESS_FAMILY, 3)),
            440,
        ),
        (
            ((AttributeType.REQUESTED_TRANSPORT, 17), (AttributeType.ADDITIONAL_ADDRESS_FAMILY, 1)),
            400,
        ),
        (
            (
                (AttributeType.REQUESTED_TRANSPORT, 17),
                (AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2),
                (AttributeType.REQUESTED_ADDRESS_FAMILY, 1),
            ),
            400,
        ),
        (
            (
                (AttributeType.REQUESTED_TRANSPORT, 17),
                (AttributeType.RESERVATION_TOKEN, b"12345678"),
                (AttributeType.EVEN_PORT, False),
            ),
            400,
        ),
        (
            (
                (AttributeType.REQUESTED_TRANSPORT, 17),
                (AttributeType.RESERVATION_TOKEN, b"12345678"),
            ),
            508,
        ),
    ],
)
def test_allocate_errors(attrs: tuple[tuple[int, object], ...], expected: int) -> None:
    server = make_server()
    response = Client(server).request(Method.ALLOCATE, *attrs)
    assert code(response) == expected
    assert len(server.allocations) == 0


def test_ipv6_and_dual_allocations() -> None:
    server = make_server(ports=FakePorts(v6=True))
    v6 = Client(server).allocate((AttributeType.REQUESTED_ADDRESS_FAMILY, 2))
    assert v6.get(AttributeType.XOR_RELAYED_ADDRESS)[0] == "2001:db8::1"  # type: ignore[index]
    dual = Client(server, OTHER_CLIENT).allocate((AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2))
    relayed = dual.get_all(AttributeType.XOR_RELAYED_ADDRESS)
    assert {ip for ip, _ in relayed} == {"192.0.2.1", "2001:db8::1"}


def test_dual_allocation_without_ipv6_reports_address_error() -> None:
    response = Client(make_server()).allocate((AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2))
    assert response.message_class == MessageClass.SUCCESS
    assert len(response.get_all(AttributeType.XOR_RELAYED_ADDRESS)) == 1
    error = response.get(AttributeType.ADDRESS_ERROR_CODE)
    assert error is not None
    assert (error.family, error.code) == (2, 440)


def test_even_port_and_reservation() -> None:
    ports = FakePorts(next_port=50001)
    server = make_server(ports=ports)
    first = Client(server).allocate((AttributeType.EVEN_PORT, True))
    port = first.get(AttributeType.XOR_RELAYED_ADDRESS)[1]  # type: ignore[index]
    assert port % 2 == 0
    token = first.get(AttributeType.RESERVATION_TOKEN)
    assert token is not None
    assert len(token) == 8
    second = Client(server, OTHER_CLIENT).allocate((AttributeType.RESERVATION_TOKEN, token))
    assert second.get(AttributeType.XOR_RELAYED_ADDRESS)[1] == port + 1  # type: ignore[index]
    # A token is good once.
    third = Client(server, ("198.51.100.9", 1)).allocate((AttributeType.RESERVATION_TOKEN, token))
    assert code(third) == 508
    # A forged or tampered token gets 508 too.
    forged = bytes([token[0], token[1] ^ 1]) + token[2:]
    fourth = Client(server, ("198.51.100.9", 2)).allocate((AttributeType.RESERVATION_TOKEN, forged))
    assert code(fourth) == 508


def test_quotas() -> None:
    server = make_server(user_quota=1, total=2)
    assert Client(server).allocate().message_class == MessageClass.SUCCESS
    assert code(Client(server, OTHER_CLIENT).allocate()) == 486  # alice's quota
    bob = Client(server, OTHER_CLIENT, user="bob", password="pw")
    assert bob.allocate().message_class == MessageClass.SUCCESS
    carol = Client(server, ("198.51.100.9", 1), user="bob", password="pw")
    assert code(carol.allocate()) == 486  # total quota
    assert server.counters.quota_rejections == 2


def test_refresh_and_delete() -> None:
    ports = FakePorts()
    server = make_server(ports=ports)
    client = Client(server)
    assert code(client.request(Method.REFRESH)) == 437
    client.allocate()
    refreshed = client.request(Method.REFRESH, (AttributeType.LIFETIME, 1800), now=100.0)
    assert refreshed.get(AttributeType.LIFETIME) == 1800
    server.handle_timer(100.0 + 1799)
    assert len(server.allocations) == 1  # the refresh moved the expiry
    deleted = client.request(Method.REFRESH, (AttributeType.LIFETIME, 0), now=200.0)
    assert deleted.get(AttributeType.LIFETIME) == 0
    assert len(server.allocations) == 0
    assert ports.bound[0].closed


def test_other_credentials_on_an_allocation_get_441() -> None:
    server = make_server()
    Client(server).allocate()
    bob = Client(server, CLIENT, user="bob", password="pw")
    assert code(bob.request(Method.REFRESH)) == 441


def test_expiry_closes_relays() -> None:
    ports = FakePorts()
    server = make_server(ports=ports)
    Client(server).allocate(now=0.0)
    server.handle_timer(599.0)
    assert len(server.allocations) == 1
    server.handle_timer(600.5)
    assert len(server.allocations) == 0
    assert ports.bound[0].closed


def test_create_permission_rules() -> None:
    server = make_server()
    client = Client(server)
    client.allocate()
    assert code(client.request(Method.CREATE_PERMISSION)) == 400
    denied = client.request(
        Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, ("10.0.0.1", 1))
    )
    assert code(denied) == 403
    mismatch = client.request(
        Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, ("2001:db8::5", 1))
    )
    assert code(mismatch) == 443
    # All or nothing: one bad peer refuses the whole request.
    mixed = client.request(
        Method.CREATE_PERMISSION,
        (AttributeType.XOR_PEER_ADDRESS, PEER),
        (AttributeType.XOR_PEER_ADDRESS, ("127.0.0.1", 1)),
    )
    assert code(mixed) == 403
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    assert not allocation.permissions
    ok = client.request(Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, PEER))
    assert ok.message_class == MessageClass.SUCCESS
    assert allocation.has_permission(PEER[0], 1.0)


@pytest.mark.parametrize(
    "peer",
    [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "::1",
        "169.254.169.254",
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "fe80::1",
        "fc00::1",
    ],
)
def test_every_denied_form_gets_403(peer: str) -> None:
    server = make_server(ports=FakePorts(v6=True))
    client = Client(server)
    client.allocate((AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2))
    response = client.request(Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, (peer, 9)))
    assert code(response) == 403
    response = client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4000),
        (AttributeType.XOR_PEER_ADDRESS, (peer, 9)),
    )
    assert code(response) == 403


@pytest.mark.parametrize("legacy", [True, False])
def test_channel_number_ranges(legacy: bool) -> None:
    """RFC 8656 §12: 0x4000-0x4FFF; RFC 5766's 0x5000-0x7FFF only with legacy channels."""
    server = make_server(legacy=legacy)
    client = Client(server)
    client.allocate()
    for number, ok in (
        (0x3FFF, False),
        (0x4000, True),
        (0x4FFF, True),
        (0x5000, legacy),
        (0x7FFF, legacy),
        (0x8000, False),
        (0xFFFF, False),
    ):
        peer = (f"203.0.113.{number % 200 + 1}", 5000)
        response = client.request(
            Method.CHANNEL_BIND,
            (AttributeType.CHANNEL_NUMBER, number),
            (AttributeType.XOR_PEER_ADDRESS, peer),
        )
        assert (response.message_class == MessageClass.SUCCESS) is ok, hex(number)
        if ok:
            data = channel_data(number, b"payload")
            assert server.handle_client(data, CLIENT, 0, 1.0) is not None


def test_channel_bind_rules() -> None:
    server = make_server(legacy=False)
    client = Client(server)
    client.allocate()
    assert code(client.request(Method.CHANNEL_BIND, (AttributeType.CHANNEL_NUMBER, 0x4000))) == 400
    for number in (0x3FFF, 0x5000, 0x7FFF):
        response = client.request(
            Method.CHANNEL_BIND,
            (AttributeType.CHANNEL_NUMBER, number),
            (AttributeType.XOR_PEER_ADDRESS, PEER),
        )
        assert code(response) == 400
    bind = (AttributeType.CHANNEL_NUMBER, 0x4000), (AttributeType.XOR_PEER_ADDRESS, PEER)
    assert client.request(Method.CHANNEL_BIND, *bind).message_class == MessageClass.SUCCESS
    # Refreshing the same binding is fine; rebinding the number or the peer is not.
    assert client.request(Method.CHANNEL_BIND, *bind).message_class == MessageClass.SUCCESS
    other_peer = client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4000),
        (AttributeType.XOR_PEER_ADDRESS, ("203.0.113.51", 5000)),
    )
    assert code(other_peer) == 400
    other_number = client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4001),
        (AttributeType.XOR_PEER_ADDRESS, PEER),
    )
    assert code(other_number) == 400
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    assert allocation.has_permission(PEER[0], 1.0)  # ChannelBind installs a permission


def channel_data(number: int, payload: bytes) -> bytes:
    return struct.pack("!HH", number, len(payload)) + payload


def test_data_paths_and_their_drops() -> None:
    server = make_server()
    client = Client(server)
    client.allocate()
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    relay = allocation.relays[socket.AF_INET]
    send = Message(
        Method.SEND,
        MessageClass.INDICATION,
        os.urandom(12),
        ((AttributeType.XOR_PEER_ADDRESS, PEER), (AttributeType.DATA, b"hello")),
    ).encode()
    # No permission yet: Send, ChannelData and peer data are all dropped.
    assert server.handle_client(send, CLIENT, 0, 1.0) is None
    assert server.handle_peer(relay, b"from peer", PEER, 1.0) is None
    client.request(Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, PEER), now=1.0)
    assert server.handle_client(send, CLIENT, 0, 2.0) == (b"hello", relay, PEER)
    # Peer data without a channel arrives as a Data indication.
    reply = server.handle_peer(relay, b"from peer", PEER, 2.0)
    assert reply is not None
    indication = parse(reply[0])
    assert (indication.method, indication.message_class) == (Method.DATA, MessageClass.INDICATION)
    assert indication.get(AttributeType.XOR_PEER_ADDRESS) == PEER
    assert indication.get(AttributeType.DATA) == b"from peer"
    assert reply[1:] == (0, CLIENT)
    # ChannelData on an unbound channel is dropped; once bound it flows both ways.
    assert server.handle_client(channel_data(0x4001, b"x"), CLIENT, 0, 2.0) is None
    client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4001),
        (AttributeType.XOR_PEER_ADDRESS, PEER),
        now=2.0,
    )
    assert server.handle_client(channel_data(0x4001, b"abc"), CLIENT, 0, 3.0) == (
        b"abc",
        relay,
        PEER,
    )
    assert server.handle_client(channel_data(0x4001, b"abc")[:-1], CLIENT, 0, 3.0) is None  # short
    assert server.handle_client(channel_data(0x4001, b"abc") + b"\0", CLIENT, 0, 3.0) == (
        b"abc",
        relay,
        PEER,
    )  # UDP padding is allowed
    reply = server.handle_peer(relay, b"xyz", PEER, 3.0)
    assert reply == (channel_data(0x4001, b"xyz"), 0, CLIENT)
    # From another client address the channel does not exist.
    assert server.handle_client(channel_data(0x4001, b"abc"), OTHER_CLIENT, 0, 3.0) is None
    # The permission lapses after 300 s unless refreshed (the channel alone does not keep it).
    assert server.handle_peer(relay, b"late", PEER, 2.0 + 301) is None
    assert server.handle_client(channel_data(0x4001, b"late"), CLIENT, 0, 2.0 + 301) is None


def test_stale_nonce_gets_438() -> None:
    server = make_server()
    client = Client(server)
    client.allocate(now=0.0)
    response = client.request(Method.REFRESH, now=10 * 3600.0)
    assert code(response) == 438
    assert response.get(AttributeType.NONCE) not in (None, client.nonce)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([0x0003, 0x0004, 0x0008, 0x0009, 0x0016, 0x4000]))
def test_arbitrary_input_never_raises(body: bytes, kind: int) -> None:
    server = make_server()
    if kind == 0x4000:
        data = struct.pack("!HH", 0x4000 | (len(body) & 0xFFF), len(body)) + body
    else:
        body = body[: len(body) - len(body) % 4]
        data = struct.pack("!HHI", kind, len(body), 0x2112A442) + os.urandom(12) + body
    server.handle_client(data, CLIENT, 0, 0.0)
    assert len(server.allocations) == 0


def test_unknown_required_attribute_gets_protected_420() -> None:
    server = make_server()
    client = Client(server)
    response = client.request(
        Method.ALLOCATE, (AttributeType.REQUESTED_TRANSPORT, 17), (0x0030, b"\x00\x00\x00\x01")
    )
    assert code(response) == 420
    assert response.get(AttributeType.UNKNOWN_ATTRIBUTES) == (0x0030,)
    assert len(server.allocations) == 0


def test_bandwidth_cap_drops_beyond_the_budget() -> None:
    listeners = plan_listeners(RelaySettings.model_validate({"listen": ["192.0.2.1:3478"]}))
    server = TurnServer(
        BindingService(listeners),
        authenticator=LongTermAuthenticator(
            realm=REALM, users={USER: PASSWORD}, nonce_secret=b"n" * 32
        ),
        policy=PeerPolicy(allow=["203.0.113.0/24"]),
        ports=FakePorts(),
        allocations=AllocationManager(max_allocations=10, user_quota=0),
        config=TurnConfig(max_bps=1000),
    )
    client = Client(server)
    client.allocate()
    client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4000),
        (AttributeType.XOR_PEER_ADDRESS, PEER),
    )
    packet = channel_data(0x4000, bytes(600))
    assert server.handle_client(packet, CLIENT, 0, 1.0) is not None  # 600 of 1000
    assert server.handle_client(packet, CLIENT, 0, 1.0) is None  # over the budget
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    relay = allocation.relays[socket.AF_INET]
    assert server.handle_peer(relay, bytes(300), PEER, 1.0) is not None  # 900: both ways count
    assert server.handle_peer(relay, bytes(300), PEER, 1.0) is None
    assert server.handle_client(packet, CLIENT, 0, 2.0) is not None  # refilled a second later
    assert server.counters.bandwidth_dropped == 2


def test_sha256_password_algorithm() -> None:
    """RFC 8489 §9.2: a client choosing SHA-256 gets responses protected with
    MESSAGE-INTEGRITY-SHA256 under the SHA-256 long-term key."""
    from relay.stun import PasswordAlgorithm, verify_integrity_sha256

    server = make_server()
    first = Client(server).raw(unauthenticated_allocate())
    assert first is not None
    offered = first.get(AttributeType.PASSWORD_ALGORITHMS)
    assert offered is not None
    assert (PasswordAlgorithm.SHA256, b"") in offered
    key = long_term_key(USER, REALM, PASSWORD, PasswordAlgorithm.SHA256)
    request = Message(
        Method.ALLOCATE,
        MessageClass.REQUEST,
        os.urandom(12),
        (
            (AttributeType.REQUESTED_TRANSPORT, 17),
            (AttributeType.USERNAME, USER),
            (AttributeType.REALM, REALM),
            (AttributeType.NONCE, first.get(AttributeType.NONCE)),
            (AttributeType.PASSWORD_ALGORITHMS, offered),
            (AttributeType.PASSWORD_ALGORITHM, (PasswordAlgorithm.SHA256, b"")),
        ),
    )
    reply = server.handle_client(request.encode(integrity_sha256_key=key), CLIENT, 0, 0.0)
    assert reply is not None
    response = parse(reply[0])
    assert response.message_class == MessageClass.SUCCESS
    assert response.has_integrity_sha256
    assert verify_integrity_sha256(response, key)


_SEND_ATTRIBUTES = st.sampled_from(
    [
        (AttributeType.XOR_PEER_ADDRESS, PEER),
        (AttributeType.XOR_PEER_ADDRESS, ("2001:db8::9", 7)),
        (AttributeType.DATA, b"payload"),
        (AttributeType.DATA, b""),
        (AttributeType.DONT_FRAGMENT, True),
        (AttributeType.SOFTWARE, "x"),
        (0x8050, b"zz"),
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEND_ATTRIBUTES, max_size=5), st.booleans(), st.binary(max_size=40))
def test_send_fast_path_agrees_with_the_parser(
    attributes: list[tuple[int, object]], fingerprint: bool, junk: bytes
) -> None:
    """The Send-indication scanner either declines (None) or finds exactly what the full
    codec finds; on garbage it never accepts what the codec rejects."""
    server = make_server()
    wire = Message(Method.SEND, MessageClass.INDICATION, os.urandom(12), tuple(attributes))
    for data in (
        wire.encode(fingerprint=fingerprint),
        wire.encode()[:20] + junk[: len(junk) - len(junk) % 4],
    ):
        data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
        scanned = server._scan_send(data)
        if scanned is None:
            continue
        message = parse(data)  # must not raise: the scanner accepted it
        peer = message.get(AttributeType.XOR_PEER_ADDRESS)
        assert peer is not None
        assert scanned == ((peer[0], peer[1]), message.get(AttributeType.DATA))


def test_deleting_one_family_of_a_dual_allocation() -> None:
    """RFC 8656 §8: Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME 0 deletes that
    family's relayed address (with its permissions and channels); the rest lives on."""
    ports = FakePorts(v6=True)
    server = make_server(ports=ports)
    client = Client(server)
    client.allocate((AttributeType.ADDITIONAL_ADDRESS_FAMILY, 2))
    peer6 = ("2001:db8::9", 7)
    client.request(
        Method.CREATE_PERMISSION,
        (AttributeType.XOR_PEER_ADDRESS, PEER),
        (AttributeType.XOR_PEER_ADDRESS, peer6),
    )
    client.request(
        Method.CHANNEL_BIND,
        (AttributeType.CHANNEL_NUMBER, 0x4002),
        (AttributeType.XOR_PEER_ADDRESS, peer6),
    )
    assert server.handle_client(channel_data(0x4002, b"v6"), CLIENT, 0, 1.0) is not None
    gone = client.request(
        Method.REFRESH,
        (AttributeType.REQUESTED_ADDRESS_FAMILY, 2),
        (AttributeType.LIFETIME, 0),
    )
    assert gone.get(AttributeType.LIFETIME) == 0
    allocation = server.allocations.get((0, CLIENT))
    assert allocation is not None
    assert set(allocation.relays) == {socket.AF_INET}
    assert [r.closed for r in ports.bound] == [False, True]
    assert server.handle_client(channel_data(0x4002, b"v6"), CLIENT, 0, 1.0) is None
    assert not allocation.has_permission(peer6[0], 1.0)
    assert allocation.has_permission(PEER[0], 1.0)
    # The IPv6 family is gone: refreshing it again is a family mismatch (443).
    again = client.request(Method.REFRESH, (AttributeType.REQUESTED_ADDRESS_FAMILY, 2))
    assert code(again) == 443


def test_a_bug_in_a_handler_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_server()

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(server, "_refresh", broken)
    client = Client(server)
    client.allocate()
    message = Message(
        Method.REFRESH,
        MessageClass.REQUEST,
        os.urandom(12),
        (
            (AttributeType.USERNAME, USER),
            (AttributeType.REALM, REALM),
            (AttributeType.NONCE, client.nonce),
        ),
    )
    assert server.handle_client(message.encode(integrity_key=client.key), CLIENT, 0, 1.0) is None
    assert server.counters.internal_errors == 1
    assert len(server.allocations) == 1


def test_send_scanner_usual_layout() -> None:
    server = make_server()
    message = Message(
        Method.SEND,
        MessageClass.INDICATION,
        os.urandom(12),
        ((AttributeType.XOR_PEER_ADDRESS, PEER), (AttributeType.DATA, b"abcde")),
    )
    assert server._scan_send(message.encode()) == (PEER, b"abcde")
    signed = message.encode(fingerprint=True)
    assert server._scan_send(signed) == (PEER, b"abcde")
    broken = signed[:-1] + bytes([signed[-1] ^ 1])
    assert server._scan_send(broken) is None  # bad FINGERPRINT: left to the parser
    assert server._scan_send(signed + b"\x00" * 4) is None  # trailing junk


def test_send_with_a_wrong_length_field_is_dropped() -> None:
    server = make_server()
    client = Client(server)
    client.allocate()
    client.request(Method.CREATE_PERMISSION, (AttributeType.XOR_PEER_ADDRESS, PEER))
    good = Message(
        Method.SEND,
        MessageClass.INDICATION,
        os.urandom(12),
        ((AttributeType.XOR_PEER_ADDRESS, PEER), (AttributeType.DATA, b"abcd")),
    ).encode()
    assert server.handle_client(good, CLIENT, 0, 1.0) is not None
    assert server.handle_client(good + b"\x00" * 4, CLIENT, 0, 1.0) is None  # length says less


def test_next_timer_says_when_an_allocation_expires() -> None:
    """Following next_timer() alone (as the runtime does), the allocation goes exactly at
    its expiry: 600 s after the Allocate at t=10."""
    server = make_server()
    assert server.next_timer() is None  # nothing to do
    Client(server).allocate(now=10.0)
    times: list[float] = []
    for _ in range(100):
        if not len(server.allocations):
            break
        due = server.next_timer()
        assert due is not None
        times.append(due)
        server.handle_timer(due)
    assert len(server.allocations) == 0
    assert times[-1] == 610.0
    assert times == sorted(times)
