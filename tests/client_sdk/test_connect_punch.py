"""The direct path's sans-IO parts, without sockets: the probe schedule, candidates and
targets, and ``Punch`` pairs run through a simulated network -- open, behind filtering
NATs whose first crossing probes are dropped, against an impostor, with nothing
reachable -- on a simulated clock."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import pytest

from client_sdk.connect.candidates import MAX_TARGETS, local_candidates, punch_targets
from client_sdk.connect.punch import (
    MAX_PEER_REFLEXIVE,
    PathFound,
    Punch,
    PunchConfig,
    PunchEvent,
    PunchFailed,
    PunchState,
    Received,
    keepalive_for,
    probe_times,
)
from client_sdk.identity import Identity
from client_sdk.netcheck.report import LifetimeMethod, MappingLifetime, NatReport
from client_sdk.rendezvous.http import Candidate
from client_sdk.secure.handshake import ChannelError
from client_sdk.secure.session import MessageType

Address = tuple[str, int]


# -- schedule and candidates ------------------------------------------------------------


def test_probe_schedule_is_fast_then_slow_and_bounded() -> None:
    times = probe_times(PunchConfig())
    assert times[0] == 0.0
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert set(gaps[:20]) == {0.05}  # every 50 ms for the first second
    assert set(gaps[20:]) == {0.1}  # then every 100 ms
    assert times[-1] < 5.0
    assert len(times) == 20 + 40
    short = probe_times(PunchConfig(timeout=0.12, fast_interval=0.05, slow_interval=0.05))
    assert short == (0.0, 0.05, 0.1)


def test_punch_config_is_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PunchConfig(timeout=0)
    with pytest.raises(ValueError, match="fast_interval"):
        PunchConfig(fast_interval=0.2, slow_interval=0.1)
    with pytest.raises(ValueError, match="idle_timeout"):
        PunchConfig(keepalive=25, idle_timeout=20)
    config = PunchConfig(keepalive=10)
    assert config.idle == 30
    assert config.session_config().keepalive_interval == 10
    assert config.session_config().handshake_timeout > config.timeout


def test_local_candidates_reflexive_first_without_duplicates() -> None:
    offered = local_candidates(50000, ["10.0.0.5", "10.0.0.5", "192.168.1.2"], [
        ("203.0.113.9", 61000),
        ("203.0.113.9", 61000),
    ])  # fmt: skip
    assert offered == [
        Candidate("203.0.113.9", 61000, "udp", "srflx"),
        Candidate("10.0.0.5", 50000, "udp", "host"),
        Candidate("192.168.1.2", 50000, "udp", "host"),
    ]
    # No NAT: the reflexive address is the host one, offered once.
    assert local_candidates(4000, ["198.51.100.7"], [("198.51.100.7", 4000)]) == [
        Candidate("198.51.100.7", 4000, "udp", "host")
    ]
    assert len(local_candidates(4000, [f"10.0.{i}.1" for i in range(40)])) == 8


def test_punch_targets_keep_only_usable_udp_ipv4() -> None:
    candidates = [
        Candidate("203.0.113.9", 61000, "udp", "srflx"),
        Candidate("203.0.113.9", 61000, "udp", "host"),  # the same address again
        Candidate("10.0.0.5", 50000),
        Candidate("10.0.0.6", 50000, "tcp", "host"),
        Candidate("10.0.0.7", 50000, "udp", "relay"),  # relays come with the fallback
        Candidate("2001:db8::1", 50000),  # IPv4 socket
        Candidate("0.0.0.0", 50000),
        Candidate("224.0.0.1", 50000),
        Candidate("255.255.255.255", 50000),
        Candidate("not-an-ip", 50000),
        Candidate("10.0.0.8", 0),
        "203.0.113.1:5000",  # not a Candidate at all
    ]
    assert punch_targets(candidates) == (("203.0.113.9", 61000), ("10.0.0.5", 50000))
    many = [Candidate(f"10.1.{i}.1", 4000) for i in range(40)]
    assert len(punch_targets(many)) == MAX_TARGETS


# -- a simulated network ------------------------------------------------------------------


@dataclass
class Node:
    punch: Punch
    filtering: bool = False  # a port-restricted NAT in front: only what it sent to gets in
    contacted: set[Address] = field(default_factory=set)
    events: list[PunchEvent] = field(default_factory=list)
    dropped_by_nat: int = 0


class Network:
    """Nodes at fixed public addresses, one-way ``latency``; each datagram is delivered
    or dropped (a node's NAT); timers fire in order on one simulated clock."""

    def __init__(self, latency: float = 0.01) -> None:
        self.latency = latency
        self.now = 0.0
        self.nodes: dict[Address, Node] = {}
        self._flight: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = itertools.count()
        self.delivered = 0

    def add(self, addr: Address, punch: Punch, *, filtering: bool = False) -> Node:
        node = Node(punch, filtering)
        self.nodes[addr] = node
        return node

    def start(self, addr: Address, targets: list[Address], at: float = 0.0) -> None:
        self.run(until=at)
        self.nodes[addr].punch.start(self.now, targets)
        self._flush(addr)

    def inject(self, source: Address, destination: Address, data: bytes) -> None:
        heapq.heappush(
            self._flight, (self.now + self.latency, next(self._seq), source, destination, data)
        )

    def _flush(self, addr: Address) -> None:
        node = self.nodes[addr]
        for data, destination in node.punch.datagrams_to_send():
            node.contacted.add(destination)
            self.inject(addr, destination, data)
        while (event := node.punch.next_event()) is not None:
            node.events.append(event)

    def run(self, until: float) -> None:
        while True:
            timers = [
                (t, a) for a, n in self.nodes.items() if (t := n.punch.get_timer()) is not None
            ]
            next_timer = min(timers) if timers else None
            next_arrival = self._flight[0][0] if self._flight else None
            candidates = [t for t in (next_arrival, next_timer and next_timer[0]) if t is not None]
            if not candidates or min(candidates) > until:
                self.now = max(self.now, until)
                return
            if next_arrival is not None and (next_timer is None or next_arrival <= next_timer[0]):
                at, _, source, destination, data = heapq.heappop(self._flight)
                self.now = max(self.now, at)
                node = self.nodes.get(destination)
                if node is None:
                    continue
                if node.filtering and source not in node.contacted:
                    node.dropped_by_nat += 1
                    continue
                self.delivered += 1
                node.punch.receive(data, source, self.now)
                self._flush(destination)
            elif next_timer is not None:
                at, addr = next_timer
                self.now = max(self.now, at)
                self.nodes[addr].punch.handle_timer(self.now)
                self._flush(addr)


A: Address = ("198.51.100.1", 4000)
B: Address = ("203.0.113.7", 5000)
NOWHERE: Address = ("192.0.2.99", 9)
SYMMETRIC_CANDIDATE: Address = ("203.0.113.7", 5999)


def pair(config: PunchConfig | None = None) -> tuple[Identity, Identity, Punch, Punch]:
    alice, bob = Identity.generate(), Identity.generate()
    return alice, bob, Punch(alice, bob.peer_id, config), Punch(bob, alice.peer_id, config)


def found(node: Node) -> PathFound:
    paths = [e for e in node.events if isinstance(e, PathFound)]
    assert len(paths) == 1, node.events
    return paths[0]


def test_open_network_both_find_the_path_and_exchange_data() -> None:
    net = Network(latency=0.02)
    _, _, pa, pb = pair()
    a, b = net.add(A, pa), net.add(B, pb)
    net.start(A, [NOWHERE, B])
    net.start(B, [A, NOWHERE])
    net.run(until=1.0)
    assert found(a).addr == B
    assert found(b).addr == A
    assert pa.state is pb.state is PunchState.CONNECTED
    # Both round trips measured from the handshake: 2 x 20 ms.
    assert pa.rtt == pytest.approx(0.04, abs=1e-6)
    assert pb.rtt == pytest.approx(0.04, abs=1e-6)
    pa.send(b"to bob", net.now)
    net._flush(A)
    pb.send(b"to alice", net.now)
    net._flush(B)
    net.run(until=1.5)
    assert Received(b"to bob") in b.events
    assert Received(b"to alice") in a.events
    with pytest.raises(ChannelError):
        pa.send(b"x" * (pa.max_payload + 1), net.now)
    # Probing stopped with the path: nothing more was sent to the dead candidate.
    before = pa.probes_sent
    net.run(until=3.0)
    assert pa.probes_sent == before


@pytest.mark.parametrize("late", [0.0, 0.03, 0.2])
def test_filtering_nats_open_once_both_have_sent(late: float) -> None:
    """Both behind port-restricted NATs, Bob starting ``late``: probes that arrive before
    the other side has sent are dropped by its NAT, the retries get through."""
    net = Network(latency=0.015)
    _, _, pa, pb = pair()
    a, b = net.add(A, pa, filtering=True), net.add(B, pb, filtering=True)
    net.start(A, [B])
    net.start(B, [A], at=late)
    net.run(until=2.0)
    assert found(a).addr == B
    assert found(b).addr == A
    # At the same moment the first probes cross; later, Alice's first ones hit a closed NAT.
    assert (b.dropped_by_nat > 0) is (late > 0)
    assert max(pa.rtt or 0, pb.rtt or 0) < 0.2


def test_only_one_side_probing_through_a_filter_finds_nothing() -> None:
    config = PunchConfig(timeout=1.0)
    net = Network()
    _, _, pa, pb = pair(config)
    a, b = net.add(A, pa), net.add(B, pb, filtering=True)
    net.start(A, [B])
    net.start(B, [NOWHERE])  # B never sends toward A: its NAT stays closed to A
    net.run(until=3.0)
    for node in (a, b):
        [failure] = [e for e in node.events if isinstance(e, PunchFailed)]
        assert "no direct path" in failure.reason
    assert pa.state is PunchState.FAILED
    assert len(probe_times(config)) == pa.probes_sent
    assert pa.get_timer() is None


def test_an_impostor_does_not_get_the_path() -> None:
    """Mallory, reachable and punching toward Alice, claims nothing she cannot prove:
    Alice's punch is for Bob, so Mallory's message 1 and answers are dropped."""
    net = Network()
    alice, _, pa, _ = pair(PunchConfig(timeout=1.0))
    mallory = Identity.generate()
    pm = Punch(mallory, alice.peer_id, PunchConfig(timeout=1.0))
    a, m = net.add(A, pa), net.add(B, pm)
    net.start(A, [B])
    net.start(B, [A])
    net.run(until=2.0)
    assert not any(isinstance(e, PathFound) for e in a.events + m.events)
    assert pa.session.stats.dropped > 0 or pm.session.stats.dropped > 0


def test_a_replayed_handshake_from_elsewhere_does_not_move_the_path() -> None:
    """Every datagram Alice gets is also replayed to her from a third address later:
    the path stays where the authenticated handshake happened."""
    net = Network()
    _, _, pa, pb = pair()
    a, _b = net.add(A, pa), net.add(B, pb)
    net.start(A, [B])
    net.start(B, [A])
    net.run(until=0.5)
    assert found(a).addr == B
    # A replay of an old handshake message from elsewhere is a duplicate: it changes
    # nothing (the path is only taken from an authenticated, new transport datagram).
    attacker: Address = ("192.0.2.66", 6666)
    net.nodes[attacker] = Node(Punch(Identity.generate(), "a" * 32))
    pb.send(b"real", net.now)
    sealed = pb.datagrams_to_send()
    for data, destination in sealed:
        net.inject(B, destination, data)
        net.inject(attacker, destination, data)  # the same datagram, replayed, arrives later
    net.run(until=1.0)
    assert pa.addr == B
    assert a.events.count(Received(b"real")) == 1


def test_start_twice_is_an_error_and_no_targets_fail_at_once() -> None:
    _, _, pa, _ = pair()
    pa.start(0.0, [])
    assert isinstance(pa.next_event(), PunchFailed)
    with pytest.raises(ChannelError):
        pa.start(0.0, [B])
    assert pa.receive(b"\x01" * 201, B, 0.1) is False


@pytest.mark.parametrize("a_initiates", [True, False])
def test_a_peer_behind_a_symmetric_nat_is_found_by_its_probes(a_initiates: bool) -> None:
    """Bob's NAT gives him a new public port toward Alice, which no candidate names (his
    offered one is SYMMETRIC_CANDIDATE) and it lets in only what he sent to. Alice learns
    his real address from his first probe -- as the initiator too, who ignores the probe
    as a handshake but now sends her own there -- and both find the path."""
    while True:  # the lower peer id initiates: pick identities in the order wanted
        alice, bob = Identity.generate(), Identity.generate()
        if (alice.peer_id < bob.peer_id) is a_initiates:
            break
    pa, pb = Punch(alice, bob.peer_id), Punch(bob, alice.peer_id)
    net = Network()
    a, b = net.add(A, pa), net.add(B, pb, filtering=True)
    net.start(A, [SYMMETRIC_CANDIDATE])  # where Bob's NAT mapped his STUN query: useless
    net.start(B, [A])
    net.run(until=2.0)
    assert found(a).addr == B
    assert found(b).addr == A
    assert B in pa.targets
    # A forged first message claiming Bob adds at most MAX_PEER_REFLEXIVE destinations.
    assert len(pa.targets) <= 1 + MAX_PEER_REFLEXIVE


def test_peer_reflexive_targets_are_bounded_and_need_the_peers_claim() -> None:
    net = Network()
    _, _, pa, pb = pair()
    net.add(A, pa)
    net.start(A, [NOWHERE])
    stranger = Punch(Identity.generate(), pa.session.local_peer_id)
    stranger.start(0.0, [A])
    bogus = next(d for d, _ in stranger.datagrams_to_send() if d[0] == MessageType.INITIATION)
    pa.receive(bogus, ("192.0.2.50", 1), net.now)  # claims someone else: not learnt
    assert pa.targets == (NOWHERE,)
    pb.start(0.0, [A])
    genuine = next(d for d, _ in pb.datagrams_to_send() if d[0] == MessageType.INITIATION)
    for port in range(1, 10):  # Bob's claim from many addresses: only a few are learnt
        pa.receive(genuine, ("192.0.2.60", port), net.now)
    assert len(pa.targets) == 1 + MAX_PEER_REFLEXIVE
    assert pa.state is PunchState.PUNCHING  # learning a target proves nothing


@pytest.mark.parametrize(
    ("lifetime", "expected"),
    [
        (None, 25.0),  # not measured: the default
        (MappingLifetime(LifetimeMethod.REQUERY, 120.0, None), 25.0),  # long: the default
        (MappingLifetime(LifetimeMethod.RESPONSE_PORT, 20.0, 25.0), 16.0),  # 80 % of 20 s
        (MappingLifetime(LifetimeMethod.REQUERY, 0.5, 1.0), 1.0),  # never under 1 s
    ],
)
def test_the_keepalive_stays_below_the_mapping_lifetime_netcheck_saw(
    lifetime: MappingLifetime | None, expected: float
) -> None:
    report = NatReport(udp=True, mapping_lifetime=lifetime)
    assert keepalive_for(report) == pytest.approx(expected)
    assert PunchConfig(keepalive=keepalive_for(report)).keepalive == pytest.approx(expected)
