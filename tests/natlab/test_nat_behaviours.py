"""Each lab NAT behaves as labelled, probed from outside with plain UDP sockets: mapping
and filtering (RFC 4787), port preservation, hairpinning, double NAT, UDP blocked and
random loss. Later tests trust these labels (netcheck's matrix, punching)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.netns import PREFIX, VETH_PREFIX, remove_stale, sh
from tests.natlab.probe import Probes, filtering_of, mapping_of, private_socket

NATS = {
    "full": Nat(filtering="endpoint-independent"),
    "restricted": Nat(filtering="address-dependent"),
    "port": Nat(),  # Linux's default: endpoint-independent mapping, port-restricted
    "symmetric": Nat(mapping="address-and-port-dependent"),
    "shifted": Nat(port_preserving=False),
    "hairpin": Nat(hairpin=True),
    "carrier": Nat(filtering="address-dependent"),
    "home": Nat(filtering="endpoint-independent", behind="carrier"),
    "blocked": Nat(udp=False),
    "lossy": Nat(loss=0.5),
}
HOSTS = {name: name for name in NATS if name != "carrier"}
HOSTS |= {"port-2": "port", "hairpin-2": "hairpin"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab()
    with Lab(nats=NATS, hosts=HOSTS) as built:
        yield built


@pytest.fixture
def probes(lab: Lab) -> Iterator[Probes]:
    opened = Probes.open(lab)
    try:
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("host", "mapping", "filtering"),
    [
        ("full", "endpoint-independent", "endpoint-independent"),
        ("restricted", "endpoint-independent", "address-dependent"),
        ("port", "endpoint-independent", "address-and-port-dependent"),
        ("symmetric", "address-and-port-dependent", "address-and-port-dependent"),
        ("shifted", "endpoint-independent", "address-and-port-dependent"),
        # Double NAT: both map endpoint-independently; the outer one filters by address.
        ("home", "endpoint-independent", "address-dependent"),
    ],
)
def test_mapping_and_filtering(
    lab: Lab, probes: Probes, host: str, mapping: str, filtering: str
) -> None:
    with private_socket(lab, host) as sock:
        assert mapping_of(probes, sock) == mapping
    with private_socket(lab, host) as sock:
        assert filtering_of(probes, sock) == filtering


@pytest.mark.parametrize(
    ("host", "preserving"),
    [("port", True), ("full", True), ("shifted", False), ("symmetric", False)],
)
def test_port_preservation(lab: Lab, probes: Probes, host: str, preserving: bool) -> None:
    with private_socket(lab, host) as sock:
        public = probes.mapped(sock, (0, 0))
        assert public is not None
        assert (public[1] == sock.getsockname()[1]) is preserving


def test_public_address_is_the_outermost_nats(lab: Lab, probes: Probes) -> None:
    with private_socket(lab, "home") as sock:
        public = probes.mapped(sock, (0, 0))
    assert public is not None
    assert public[0] == lab.router("carrier").wan_ip
    assert lab.router("home").wan_ip.startswith("10.")  # the home NAT's WAN is private


@pytest.mark.parametrize(
    ("router", "hairpins", "same_host"),
    [("hairpin", True, False), ("hairpin", True, True), ("port", False, False)],
)
def test_hairpinning(
    lab: Lab, probes: Probes, router: str, hairpins: bool, same_host: bool
) -> None:
    """Between two hosts behind the NAT, and between two sockets of one host."""
    other = router if same_host else f"{router}-2"
    with private_socket(lab, router) as first, private_socket(lab, other) as second:
        public_second = probes.mapped(second, (0, 0))
        public_first = probes.mapped(first, (0, 0))
        assert public_first is not None
        assert public_second is not None
        second.settimeout(0.5)
        first.sendto(b"hairpin", public_second)
        try:
            data, source = second.recvfrom(100)
        except TimeoutError:
            data, source = b"", ("", 0)
        assert (data == b"hairpin") is hairpins
        if hairpins:  # it arrives as from the sender's public address
            assert source == public_first


def test_udp_blocked(lab: Lab, probes: Probes) -> None:
    with private_socket(lab, "blocked") as sock:
        assert probes.mapped(sock, (0, 0)) is None
    # TCP still passes: only UDP is blocked.
    server = lab.public.socket(kind=socket.SOCK_STREAM)
    with server:
        server.bind((lab.server_ip(0), 4100))
        server.listen()
        client = lab.host("blocked").ns.socket(kind=socket.SOCK_STREAM)
        with client:
            client.settimeout(2)
            client.connect((lab.server_ip(0), 4100))


def test_random_loss(lab: Lab, probes: Probes) -> None:
    server = probes.endpoints[(0, 0)]
    server.settimeout(0.3)
    with private_socket(lab, "lossy") as sock:
        for n in range(200):
            sock.sendto(b"%d" % n, probes.address((0, 0)))
        arrived = 0
        try:
            while True:
                server.recvfrom(100)
                arrived += 1
        except TimeoutError:
            pass
    assert 40 <= arrived <= 160  # half of 200, give or take 6 standard deviations


def test_a_bad_description_is_refused_and_leaves_nothing() -> None:
    with pytest.raises(ValueError, match="port-preserving"):
        Nat(filtering="endpoint-independent", port_preserving=False)
    lab = Lab(nats={"a": Nat(behind="b"), "b": Nat(behind="a")}, hosts={})
    with pytest.raises(Exception, match="behind itself"):
        lab.build()
    assert not lab._made  # the public namespace made before the check was removed


def test_a_killed_runs_leftovers_are_removed() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: a run killed before its teardown
    namespace = f"{PREFIX}{gone.pid}-0-stale"
    interface = f"{VETH_PREFIX}{gone.pid % 100000}x0a"
    sh("ip", "netns", "add", namespace)
    sh("ip", "link", "add", interface, "type", "veth", "peer", "name", interface[:-1] + "b")
    try:
        removed = remove_stale()
        assert namespace in removed
        assert interface in removed
        assert namespace not in sh("ip", "netns", "list")
        assert interface not in sh("ip", "-o", "link", "show")
    finally:
        sh("ip", "netns", "delete", namespace, check=False)
        sh("ip", "link", "delete", interface, check=False)
