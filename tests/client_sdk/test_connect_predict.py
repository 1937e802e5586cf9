"""Port prediction (``client_sdk.connect.predict``, the spray of ``punch``): who does
what from the candidates; the spray's bounds; a hard side behind a simulated symmetric
NAT and an easy one behind a port-restricted cone, on a simulated clock, connecting with
the spray and failing without it; and ``SocketFan`` on loopback -- routing, which socket
answers which address, the refresh of the all-sockets send, closing, no fd leak."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.connect import predict
from client_sdk.connect.candidates import (
    mapping_varies,
    punch_targets,
    srflx_addresses,
    varying_ips,
)
from client_sdk.connect.predict import (
    MAIN,
    MAX_REMEMBERED,
    FanRoutes,
    Prediction,
    SocketFan,
    arrange,
    fan_datagram_bound,
    fd_budget,
    plan,
)
from client_sdk.connect.punch import (
    MAX_PEER_REFLEXIVE,
    SPRAY_PORTS,
    SPRAY_TICK,
    PathFound,
    Punch,
    PunchConfig,
    PunchEvent,
    PunchFailed,
    PunchState,
    Received,
    Spray,
)
from client_sdk.connect.udp import ConnectivitySocket, Link
from client_sdk.identity import Identity
from client_sdk.rendezvous.http import Candidate
from client_sdk.secure.session import MessageType

Address = tuple[str, int]

H_IP = "203.0.113.50"  # the hard side's NAT
E_PUBLIC: Address = ("198.51.100.20", 40000)  # the easy side's one mapping
STUN_1: Address = ("192.0.2.1", 3478)
STUN_2: Address = ("192.0.2.2", 3479)


def identities(easy_initiates: bool) -> tuple[Identity, Identity]:
    """(easy, hard): the lower peer id is the Noise initiator."""
    while True:
        easy, hard = Identity.generate(), Identity.generate()
        if (easy.peer_id < hard.peer_id) is easy_initiates:
            return easy, hard


# -- who does what ----------------------------------------------------------------------

HARD = [
    Candidate(H_IP, 61001, "udp", "srflx"),
    Candidate(H_IP, 52002, "udp", "srflx"),
    Candidate("10.0.0.5", 50000, "udp", "host"),
]
EASY = [Candidate(*E_PUBLIC, "udp", "srflx"), Candidate("10.1.0.5", 40000, "udp", "host")]


def test_mapping_varies_needs_two_ports_on_one_ip() -> None:
    assert mapping_varies(HARD)
    assert varying_ips(HARD) == (H_IP,)
    assert not mapping_varies(EASY)
    assert srflx_addresses(HARD) == ((H_IP, 61001), (H_IP, 52002))
    # Two reflexive addresses on different IPs (two uplinks) are not a varying mapping;
    # duplicates, hosts, relays and malformed entries do not count.
    assert not mapping_varies(
        [
            Candidate("203.0.113.1", 5000, "udp", "srflx"),
            Candidate("203.0.113.2", 6000, "udp", "srflx"),
            Candidate("203.0.113.1", 5000, "udp", "srflx"),
            Candidate("203.0.113.1", 6000, "udp", "host"),
            Candidate("203.0.113.1", 7000, "udp", "relay"),
            Candidate("203.0.113.1", 8000, "tcp", "srflx"),
            Candidate("203.0.113.1", 0, "udp", "srflx"),
            Candidate("203.0.113.1", True, "udp", "srflx"),
        ]
    )


def test_plan_one_hard_side_fans_the_other_sprays() -> None:
    config = PunchConfig()
    assert plan(HARD, EASY, config) == Prediction("fan", easy=(E_PUBLIC,))
    easy_side = plan(EASY, HARD, config)
    assert easy_side == Prediction("spray", peer_ip=H_IP)
    assert easy_side.spray(config) == Spray(H_IP, 2048, 1000.0)
    assert Prediction("fan", easy=(E_PUBLIC,)).spray(config) is None
    assert plan(EASY, EASY, config) is None  # the plain punch
    assert plan(HARD, HARD, config) is None  # both hard: the relay
    host_only = [Candidate("198.51.100.9", 4000, "udp", "host")]
    assert plan(HARD, host_only, config) is None  # no NAT there: the plain punch reaches it
    assert plan(host_only, HARD, config) is None
    assert plan(HARD, EASY, PunchConfig(predict_sockets=0)) is None
    assert plan(EASY, HARD, PunchConfig(predict_probes=0)) is None


candidate_fields = st.one_of(
    st.text(max_size=50),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(["udp", "tcp", "srflx", "host", "relay", "prflx", H_IP, "0.0.0.0"]),
    st.sampled_from(["255.255.255.255", "::1", "224.0.0.1", "127.0.0.1", "1.2.3.4"]),
)
anything = st.one_of(
    st.builds(Candidate, candidate_fields, candidate_fields, candidate_fields, candidate_fields),
    st.builds(
        Candidate,
        st.sampled_from([H_IP, "198.51.100.1"]),
        st.integers(min_value=-5, max_value=70000),
        st.just("udp"),
        st.just("srflx"),
    ),
    candidate_fields,
    st.dictionaries(st.text(max_size=5), candidate_fields, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(anything, max_size=12), st.lists(anything, max_size=12))
def test_candidate_reading_never_raises(mine: list[Any], theirs: list[Any]) -> None:
    assert isinstance(mapping_varies(theirs), bool)
    for ip, port in srflx_addresses(theirs):
        assert isinstance(ip, str)
        assert 0 < port < 65536
    assert set(varying_ips(theirs)) <= {ip for ip, _ in srflx_addresses(theirs)}
    punch_targets(theirs)
    prediction = plan(mine, theirs)
    if prediction is not None:
        spray = prediction.spray(PunchConfig())  # a valid Spray, or None for the fan
        assert spray is None or spray.ip in varying_ips(theirs)


def test_config_and_spray_are_checked() -> None:
    for bad in (
        {"predict_sockets": -1},
        {"predict_sockets": 5000},
        {"predict_probes": -1},
        {"predict_probes": 70000},
        {"predict_rate": 0},
        {"predict_refresh": 0},
    ):
        with pytest.raises(ValueError, match="predict_"):
            PunchConfig(**bad)
    for ip in ("not-an-ip", "::1", "0.0.0.0", "224.0.0.1", "010.0.0.1"):
        with pytest.raises(ValueError, match="cannot spray"):
            Spray(ip)
    with pytest.raises(ValueError, match="probes"):
        Spray(H_IP, probes=0)
    with pytest.raises(ValueError, match="rate"):
        Spray(H_IP, rate=0)
    with pytest.raises(ValueError, match="duration"):
        Spray(H_IP, duration=0)
    assert fan_datagram_bound(PunchConfig()) == 256 * 2 * 5


# -- the spray's bounds -----------------------------------------------------------------


def spray_alone(spray: Spray, config: PunchConfig, seed: int = 1) -> tuple[Punch, list]:
    """A punch spraying toward a peer that never answers, its timers run to the end:
    (the punch, [(time, port)] of every sprayed datagram)."""
    punch = Punch(Identity.generate(), Identity.generate().peer_id, config)
    targets = [(spray.ip, 61001), (spray.ip, 52002), ("10.0.0.5", 50000)]
    punch.start(0.0, targets, spray, rng=random.Random(seed))
    sent: list[tuple[float, int]] = []
    now = 0.0
    while True:
        for datagram, (ip, port) in punch.datagrams_to_send():
            assert datagram[0] == MessageType.INITIATION
            if (ip, port) not in targets:
                assert ip == spray.ip
                sent.append((now, port))
        timer = punch.get_timer()
        if timer is None:
            return punch, sent
        assert timer >= now
        now = timer
        punch.handle_timer(now)


def window_max(times: list[float], width: float) -> int:
    best, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - width:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize(
    ("spray", "least", "most"),
    [
        (Spray(H_IP), 2048, 2048),  # 1000 a second: all 2048 well within the 5 s timeout
        (Spray(H_IP, probes=500, rate=50), 249, 251),  # the timeout comes first: ~50 x 5
        (Spray(H_IP, probes=5000, rate=2000, duration=0.5), 980, 1020),  # the duration
    ],
)
def test_spray_bounds_hold(spray: Spray, least: int, most: int) -> None:
    config = PunchConfig()
    punch, sent = spray_alone(spray, config)
    times = [at for at, _ in sent]
    ports = [port for _, port in sent]
    expected = len(sent)
    assert least <= expected == punch.sprayed <= most
    assert len(set(ports)) == len(ports)  # distinct
    assert all(SPRAY_PORTS.start <= p < SPRAY_PORTS.stop for p in ports)
    assert not {61001, 52002} & set(ports)  # not the targets' ports
    burst = max(1.0, spray.rate * SPRAY_TICK)
    for count, at in enumerate(times, start=1):
        assert count <= burst + spray.rate * at + 1e-6  # the token bucket, cumulatively
    assert window_max(times, 1.0) <= spray.rate + burst  # ... and in any second
    limit = min(config.timeout, spray.duration or config.timeout)
    assert times[-1] < limit
    assert len(punch.targets) == 3  # sprayed ports are no targets
    assert punch.state is PunchState.FAILED
    events = []
    while (event := punch.next_event()) is not None:
        events.append(event)
    assert isinstance(events[-1], PunchFailed)
    assert f"{expected} sprayed" in events[-1].reason


def test_spray_draws_every_port_once_and_no_more() -> None:
    spray = Spray(H_IP, probes=len(SPRAY_PORTS), rate=100_000)
    punch, sent = spray_alone(spray, PunchConfig(timeout=2.0))
    ports = [port for _, port in sent]
    assert sorted(ports) == [p for p in SPRAY_PORTS if p not in (61001, 52002)]
    assert punch.sprayed == len(SPRAY_PORTS) - 2


def test_spray_is_deterministic_given_the_rng() -> None:
    first = spray_alone(Spray(H_IP, probes=50), PunchConfig(), seed=7)[1]
    again = spray_alone(Spray(H_IP, probes=50), PunchConfig(), seed=7)[1]
    other = spray_alone(Spray(H_IP, probes=50), PunchConfig(), seed=8)[1]
    assert first == again != other


# -- a simulated symmetric NAT against a port-restricted cone ------------------------------


@dataclass
class Side:
    punch: Punch
    events: list[PunchEvent] = field(default_factory=list)

    def found(self) -> PathFound | None:
        paths = [e for e in self.events if isinstance(e, PathFound)]
        assert len(paths) <= 1
        return paths[0] if paths else None


class BirthdayNet:
    """The easy side E behind an endpoint-independent mapping (one public address,
    ``E_PUBLIC``) with address-and-port-dependent filtering: only what E sent to gets in.
    The hard side H behind an address-and-port-dependent mapping: each (socket,
    destination) gets a random public port of 1024-65535 that lets in only that
    destination. H sends through ``routes`` (the fan's decisions) or, without, from its
    main socket only. One-way ``latency``; one simulated clock."""

    def __init__(
        self, easy: Punch, hard: Punch, routes: FanRoutes | None, seed: int, latency: float = 0.02
    ) -> None:
        self.e, self.h = Side(easy), Side(hard)
        self.routes = routes
        self.latency = latency
        self.rng = random.Random(seed)
        self.now = 0.0
        self.h_ports: dict[tuple[int, Address], int] = {}  # (socket, destination) -> port
        self.h_owner: dict[int, tuple[int, Address]] = {}
        self.e_contacted: set[Address] = set()
        self._flight: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = itertools.count()
        self.sprayed_at_first_hit: int | None = None  # probes until one hit a mapping
        self.hits = 0  # probes from E that reached H
        self.e_sprayed = 0
        self.e_sent_after_found = 0
        # H's main socket asked two STUN servers: two mappings, offered as candidates.
        self.h_candidates = [
            Candidate(H_IP, self.h_port(MAIN, STUN_1), "udp", "srflx"),
            Candidate(H_IP, self.h_port(MAIN, STUN_2), "udp", "srflx"),
        ]

    def h_port(self, via: int, destination: Address) -> int:
        key = (via, destination)
        if key not in self.h_ports:
            while (port := self.rng.randrange(1024, 65536)) in self.h_owner:
                pass
            self.h_ports[key] = port
            self.h_owner[port] = key
        return self.h_ports[key]

    def start(self, spray: Spray | None, rng_seed: int = 0) -> None:
        self.h.punch.start(self.now, [E_PUBLIC])
        self._flush_h()
        targets = punch_targets(self.h_candidates)
        self.e.punch.start(self.now, targets, spray, rng=random.Random(rng_seed))
        self._flush_e()

    def _inject(self, source: Address, destination: Address, data: bytes) -> None:
        at = self.now + self.latency
        heapq.heappush(self._flight, (at, next(self._seq), source, destination, data))

    def _flush_e(self) -> None:
        for data, destination in self.e.punch.datagrams_to_send():
            if self.e.found() is not None and data[0] == MessageType.INITIATION:
                self.e_sent_after_found += 1
            self.e_contacted.add(destination)
            if destination[0] == H_IP and destination not in self.e.punch.targets:
                self.e_sprayed += 1
                owner = self.h_owner.get(destination[1])
                hit = owner is not None and owner[1] == E_PUBLIC
                if hit and self.sprayed_at_first_hit is None:
                    self.sprayed_at_first_hit = self.e_sprayed
            self._inject(E_PUBLIC, destination, data)
        while (event := self.e.punch.next_event()) is not None:
            self.e.events.append(event)

    def _flush_h(self) -> None:
        for data, destination in self.h.punch.datagrams_to_send():
            sockets = self.routes.route(destination, self.now) if self.routes else [MAIN]
            for via in sockets:
                self._inject((H_IP, self.h_port(via, destination)), destination, data)
        while (event := self.h.punch.next_event()) is not None:
            self.h.events.append(event)
            if isinstance(event, PathFound) and self.routes is not None:
                self.routes.settle(self.h.punch.addr)

    def _deliver(self, source: Address, destination: Address, data: bytes) -> None:
        if destination == E_PUBLIC:
            if source in self.e_contacted:  # port-restricted filtering
                self.e.punch.receive(data, source, self.now)
                self._flush_e()
            return
        owner = self.h_owner.get(destination[1]) if destination[0] == H_IP else None
        if owner is None or owner[1] != source:  # no mapping, or not the one it opened to
            return
        via = owner[0]
        if via != MAIN and (self.routes is None or via not in self.routes.open):
            return  # a closed fan socket
        self.hits += 1
        if self.routes is not None:
            self.routes.heard(source, via)
        self.h.punch.receive(data, source, self.now)
        self._flush_h()

    def run(self, until: float) -> None:
        while True:
            timers = [
                (t, side) for side in (self.e, self.h) if (t := side.punch.get_timer()) is not None
            ]
            next_timer = min(timers, key=lambda x: x[0]) if timers else None
            arrival = self._flight[0][0] if self._flight else None
            due = [t for t in (arrival, next_timer[0] if next_timer else None) if t is not None]
            if not due or min(due) > until:
                self.now = max(self.now, until)
                return
            if arrival is not None and (next_timer is None or arrival <= next_timer[0]):
                at, _, source, destination, data = heapq.heappop(self._flight)
                self.now = max(self.now, at)
                self._deliver(source, destination, data)
            elif next_timer is not None:
                at, side = next_timer
                self.now = max(self.now, at)
                side.punch.handle_timer(self.now)
                self._flush_e() if side is self.e else self._flush_h()


def birthday(
    easy_initiates: bool, *, seed: int, spray: bool = True, fan: bool = True
) -> BirthdayNet:
    config = PunchConfig()
    easy_id, hard_id = identities(easy_initiates)
    easy, hard = Punch(easy_id, hard_id.peer_id, config), Punch(hard_id, easy_id.peer_id, config)
    routes = FanRoutes(config.predict_sockets, [E_PUBLIC], config.predict_refresh) if fan else None
    net = BirthdayNet(easy, hard, routes, seed)
    net.start(Spray.from_config(H_IP, config) if spray else None, rng_seed=seed + 1_000_003)
    net.run(until=config.timeout + 2)
    return net


@pytest.mark.parametrize("easy_initiates", [True, False], ids=["easy-initiates", "hard-initiates"])
def test_the_spray_finds_the_hard_peer(easy_initiates: bool) -> None:
    net = birthday(easy_initiates, seed=11)
    e_found, h_found = net.e.found(), net.h.found()
    assert e_found is not None, net.e.events
    assert h_found is not None, net.h.events
    assert h_found.addr == E_PUBLIC
    via, destination = net.h_owner[e_found.addr[1]]  # E's path: one of H's mappings to E
    assert e_found.addr[0] == H_IP
    assert destination == E_PUBLIC
    assert net.routes is not None
    assert net.routes.settled
    assert net.routes.open == ({via} if via != MAIN else set())  # the losers are closed
    # The spray stopped with the path; it never counted as peer-reflexive learning.
    assert net.e.punch.sprayed < 2048
    assert net.e_sent_after_found == 0
    assert len(net.e.punch.targets) <= 2 + MAX_PEER_REFLEXIVE
    assert net.sprayed_at_first_hit is not None
    # Data both ways over the predicted path.
    net.e.punch.send(b"to hard", net.now)
    net._flush_e()
    net.h.punch.send(b"to easy", net.now)
    net._flush_h()
    net.run(until=net.now + 1)
    assert Received(b"to hard") in net.h.events
    assert Received(b"to easy") in net.e.events


@pytest.mark.parametrize("easy_initiates", [True, False], ids=["easy-initiates", "hard-initiates"])
def test_without_the_spray_the_same_network_fails(easy_initiates: bool) -> None:
    net = birthday(easy_initiates, seed=11, spray=False)
    for side in (net.e, net.h):
        assert side.found() is None
        assert any(isinstance(e, PunchFailed) for e in side.events)
    assert net.hits == 0  # nothing of E's ever reached H
    assert net.routes is not None
    assert net.routes.fanned == 5  # once a second over the 5 s timeout


def test_probes_until_a_hit_match_the_birthday_estimate() -> None:
    """Over many seeds: every run connects; the probes until the first hit average
    about 64,512 / 257 ~ 251 (a geometric distribution)."""
    firsts = []
    for seed in range(40):
        net = birthday(seed % 2 == 0, seed=seed)
        assert net.e.found() is not None
        assert net.h.found() is not None
        assert net.sprayed_at_first_hit is not None
        firsts.append(net.sprayed_at_first_hit)
    mean = sum(firsts) / len(firsts)
    logging.getLogger(__name__).info("probes until a hit: mean %.0f, max %d", mean, max(firsts))
    assert 120 < mean < 450


# -- FanRoutes ----------------------------------------------------------------------------

OTHER: Address = ("192.0.2.77", 7000)


def test_fan_routes_fan_out_at_most_once_per_refresh() -> None:
    routes = FanRoutes(4, [E_PUBLIC], refresh=1.0)
    assert routes.route(E_PUBLIC, 0.0) == [MAIN, 0, 1, 2, 3]
    assert routes.route(E_PUBLIC, 0.05) == [MAIN]
    assert routes.route(E_PUBLIC, 0.99) == [MAIN]
    assert routes.route(E_PUBLIC, 1.0) == [MAIN, 0, 1, 2, 3]
    assert routes.route(OTHER, 1.0) == [MAIN]  # not the easy peer's: the main socket only
    assert routes.fanned == 2
    routes.heard(E_PUBLIC, 2)
    assert routes.route(E_PUBLIC, 5.0) == [2]  # the socket that heard it
    routes.heard(E_PUBLIC, MAIN)
    assert routes.route(E_PUBLIC, 5.0) == [MAIN]
    routes.heard(E_PUBLIC, 3)
    assert routes.settle(E_PUBLIC) == [0, 1, 2]
    assert routes.open == {3}
    assert routes.route(E_PUBLIC, 9.0) == [3]
    routes.close(3)
    assert routes.route(E_PUBLIC, 9.0) == [MAIN]  # settled: no more fanning
    routes.heard(OTHER, 3)  # a closed socket is not remembered
    assert routes.socket_for(OTHER) is None


def test_fan_routes_remember_a_bounded_number_of_addresses() -> None:
    routes = FanRoutes(2, [E_PUBLIC], refresh=1.0)
    routes.heard(E_PUBLIC, 1)
    for port in range(1, MAX_REMEMBERED + 10):
        routes.heard(("192.0.2.9", port), 0)
    assert routes.socket_for(E_PUBLIC) is None  # the oldest went
    assert routes.socket_for(("192.0.2.9", MAX_REMEMBERED + 9)) == 0
    assert routes.settle(None) == [0, 1]


def test_fd_budget_clamps_to_the_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    assert fd_budget(10) == 10
    used = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(
        resource, "getrlimit", lambda _: (used + predict.FD_RESERVE + 5, resource.RLIM_INFINITY)
    )
    with caplog.at_level(logging.WARNING, logger="client_sdk.connect.predict"):
        assert fd_budget(256) in (4, 5, 6)  # (listing /proc/self/fd opens one)
    assert "256 sockets wanted" in caplog.text
    monkeypatch.setattr(resource, "getrlimit", lambda _: (10, 10))
    assert fd_budget(256) == 0


# -- SocketFan on loopback ----------------------------------------------------------------

FAN = 8
FAST = PunchConfig(timeout=3.0, predict_sockets=FAN, predict_refresh=0.3)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[tuple[bytes, Address]]:
    got: list[tuple[bytes, Address]] = []
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return got
        got.append((data, (addr[0], addr[1])))


@pytest.fixture
async def main_socket() -> AsyncIterator[ConnectivitySocket]:
    sock = await ConnectivitySocket.open()
    yield sock
    sock.close()


async def test_socket_fan_sends_from_every_socket_then_from_the_one_that_heard(
    main_socket: ConnectivitySocket,
) -> None:
    easy_id, hard_id = identities(easy_initiates=True)
    before = open_fds()
    easy, other = loopback_socket(), loopback_socket()
    easy_addr, other_addr = easy.getsockname(), other.getsockname()
    link = main_socket.add(Punch(hard_id, easy_id.peer_id, FAST))
    fan = SocketFan.adopt(link, [easy_addr], sockets=FAN, refresh=FAST.predict_refresh)
    assert link.owner is fan
    assert fan.sockets_open == FAN
    fan_ports = set(fan.local_ports().values())
    assert len(fan_ports) == FAN
    assert main_socket.local_port not in fan_ports
    link.start([easy_addr, other_addr])
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(1.0)
    elapsed = asyncio.get_running_loop().time() - started
    first = drain(easy)
    from_fan = [addr for _, addr in first if addr[1] in fan_ports]
    from_main = [addr for _, addr in first if addr[1] == main_socket.local_port]
    # Every probe round from the main socket; from all fan sockets once per refresh.
    assert len(from_main) >= 10
    rounds = len(from_fan) // FAN
    assert len(from_fan) % FAN == 0
    assert {port for _, port in from_fan} == fan_ports
    assert 2 <= rounds <= int(elapsed / FAST.predict_refresh) + 1
    assert fan.routes.fanned == rounds
    # The address that is not the easy peer's hears the main socket only.
    assert {addr[1] for _, addr in drain(other)} == {main_socket.local_port}

    # The easy peer's probe reaches fan socket 3: from then on, 3 answers it.
    easy_punch = Punch(easy_id, hard_id.peer_id, FAST)
    easy_punch.start(0.0, [("127.0.0.1", 9)])
    probe = next(d for d, _ in easy_punch.datagrams_to_send())
    chosen = fan.local_ports()[3]
    easy.sendto(probe, ("127.0.0.1", chosen))
    await asyncio.sleep(0.1)
    drain(easy)
    await asyncio.sleep(FAST.predict_refresh * 2)
    after = drain(easy)
    assert after  # the hard side's probes and its message 2 (it is the responder here)
    assert {addr[1] for _, addr in after} == {chosen}
    assert fan.routes.socket_for(easy_addr) == 3
    # Junk and a message 1 claiming someone else are not the link's.
    stranger = Punch(Identity.generate(), hard_id.peer_id, FAST)
    stranger.start(0.0, [("127.0.0.1", 9)])
    easy.sendto(next(d for d, _ in stranger.datagrams_to_send()), ("127.0.0.1", chosen))
    easy.sendto(b"\x04junk", ("127.0.0.1", chosen))
    await asyncio.sleep(0.05)
    assert fan.dropped == 2

    link.close()
    assert fan.sockets_open == 0
    easy.close()
    other.close()
    assert open_fds() == before


class FilteringSocket(ConnectivitySocket):
    """A connectivity socket behind an emulated port-restricted NAT: datagrams come in
    only from addresses it has sent to (loopback filters nothing by itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.contacted: set[Address] = set()
        self.filtered = 0

    def sendto(self, datagram: bytes, addr: Address) -> None:
        self.contacted.add(addr)
        super().sendto(datagram, addr)

    def _datagram(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if addr[:2] not in self.contacted:
            self.filtered += 1
            return
        super()._datagram(data, addr)


async def punch_through_fan(
    hard_main: ConnectivitySocket, easy_initiates: bool
) -> tuple[Link, Link, SocketFan, ConnectivitySocket, int]:
    """The hard side's link adopted by a fan; the easy side's own connectivity socket,
    behind an emulated port-restricted NAT, punching toward fan socket 5 only (the one
    its spray "hit")."""
    easy_id, hard_id = identities(easy_initiates)
    easy_main = await FilteringSocket.open()
    easy_addr = ("127.0.0.1", easy_main.local_port)
    hard_link = hard_main.add(Punch(hard_id, easy_id.peer_id, FAST))
    spray = arrange(
        hard_link,
        [
            Candidate("127.0.0.1", 1001, "udp", "srflx"),
            Candidate("127.0.0.1", 1002, "udp", "srflx"),
        ],
        [Candidate(*easy_addr, "udp", "srflx")],
        FAST,
    )
    assert spray is None
    fan = hard_link.owner
    assert isinstance(fan, SocketFan)
    chosen = fan.local_ports()[5]
    easy_link = easy_main.add(Punch(easy_id, hard_id.peer_id, FAST))
    hard_link.start([easy_addr])
    easy_link.start([("127.0.0.1", chosen)])
    await asyncio.wait_for(asyncio.gather(hard_link.found, easy_link.found), 3)
    return hard_link, easy_link, fan, easy_main, chosen


@pytest.mark.parametrize("easy_initiates", [True, False], ids=["easy-initiates", "hard-initiates"])
async def test_socket_fan_keeps_the_winner_and_closes_the_losers(
    main_socket: ConnectivitySocket, easy_initiates: bool
) -> None:
    before = open_fds()
    hard_link, easy_link, fan, easy_main, chosen = await punch_through_fan(
        main_socket, easy_initiates
    )
    # The easy side's path is the fan socket; the hard side kept it alone.
    assert easy_link.remote_address == ("127.0.0.1", chosen)
    assert hard_link.remote_address == ("127.0.0.1", easy_main.local_port)
    assert fan.local_ports() == {5: chosen}
    hard_link.send(b"from the winner")
    assert await asyncio.wait_for(easy_link.inbox.get(), 2) == b"from the winner"
    easy_link.send(b"to the winner")
    assert await asyncio.wait_for(hard_link.inbox.get(), 2) == b"to the winner"
    assert easy_link.remote_address == ("127.0.0.1", chosen)  # still the fan socket
    hard_link.close()
    assert fan.sockets_open == 0
    assert main_socket._by_index == {}
    easy_main.close()
    await asyncio.sleep(0)
    assert open_fds() == before


async def test_socket_fan_closes_everything_when_the_punch_fails(
    main_socket: ConnectivitySocket,
) -> None:
    before = open_fds()
    easy_id, hard_id = identities(easy_initiates=True)
    config = PunchConfig(timeout=0.3, predict_sockets=16)
    link = main_socket.add(Punch(hard_id, easy_id.peer_id, config))
    nowhere: Address = ("127.0.0.1", 9)
    loop_hard = [Candidate("127.0.0.1", p, "udp", "srflx") for p in (1001, 1002)]
    assert arrange(link, loop_hard, [Candidate(*nowhere, "udp", "srflx")], config) is None
    fan = link.owner
    assert isinstance(fan, SocketFan)
    assert fan.routes.easy == {nowhere}
    assert open_fds() == before + 16
    link.start([nowhere])
    with pytest.raises(ConnectionError, match="no direct path"):
        await asyncio.wait_for(link.found, 2)
    assert fan.sockets_open == 0
    assert open_fds() == before
    # A fan for an ended link, or on a closed socket, is refused; a failing socket
    # factory leaves nothing open.
    with pytest.raises(ConnectionError):
        SocketFan.adopt(link, [E_PUBLIC])
    fresh = main_socket.add(Punch(hard_id, Identity.generate().peer_id, config))
    made: list[socket.socket] = []

    def failing() -> socket.socket:
        if len(made) == 3:
            raise OSError(24, "Too many open files")
        made.append(loopback_socket())
        return made[-1]

    with pytest.raises(OSError, match="Too many open files"):
        SocketFan.adopt(fresh, [E_PUBLIC], sockets=8, open_socket=failing)
    assert all(s.fileno() == -1 for s in made)
    assert fresh.owner is main_socket
    assert arrange(fresh, HARD, EASY, config, open_socket=failing) is None  # logged, skipped
    assert fresh.owner is main_socket
    fresh.close()
    assert open_fds() == before


async def test_arrange_on_the_easy_side_returns_the_spray(main_socket: ConnectivitySocket) -> None:
    link = main_socket.add(Punch(Identity.generate(), Identity.generate().peer_id, FAST))
    assert arrange(link, EASY, HARD, FAST) == Spray(H_IP, FAST.predict_probes, FAST.predict_rate)
    assert arrange(link, EASY, EASY, FAST) is None
    assert link.owner is main_socket
    link.close()


async def test_reflexive_addresses_follow_the_other_address(
    main_socket: ConnectivitySocket,
) -> None:
    """A STUN server naming an OTHER-ADDRESS is asked there too, from the same socket; a
    server without one, or one naming its own IP, is asked once."""
    from aioice import stun as codec

    servers = [loopback_socket() for _ in range(3)]
    other = ("127.0.0.2", 0)
    alternate = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    alternate.bind(other)
    alternate.setblocking(False)
    servers.append(alternate)
    addresses = [s.getsockname() for s in servers]
    advertised = {0: addresses[3], 1: None, 2: ("127.0.0.1", addresses[2][1] + 1)}
    mapped = {0: 1111, 1: 2222, 2: 3333, 3: 4444}
    asked = {i: 0 for i in range(4)}
    loop = asyncio.get_running_loop()

    def answer(i: int) -> None:
        for data, source in drain(servers[i]):
            request = codec.parse_message(data)
            asked[i] += 1
            response = codec.Message(
                codec.Method.BINDING, codec.Class.RESPONSE, request.transaction_id
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.3", mapped[i])
            if advertised.get(i) is not None:
                response.attributes["OTHER-ADDRESS"] = advertised[i]
            servers[i].sendto(bytes(response), source)

    for i, sock in enumerate(servers):
        loop.add_reader(sock.fileno(), answer, i)
    try:
        found = await main_socket.reflexive_addresses(addresses[:3])
        assert found == [("198.51.100.3", p) for p in (1111, 4444, 2222, 3333)]
        assert asked == {0: 1, 1: 1, 2: 1, 3: 1}
        plain = await main_socket.reflexive_addresses(addresses[:1], follow_other=False)
        assert plain == [("198.51.100.3", 1111)]
        assert await main_socket.binding(addresses[0]) == (("198.51.100.3", 1111), addresses[3])
    finally:
        for sock in servers:
            loop.remove_reader(sock.fileno())
            sock.close()
