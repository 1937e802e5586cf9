"""netcheck over real sockets, all on loopback: against natkit relay (RFC 5780 on
127.0.0.1 + 127.0.0.2, and ::1), coturn, nothing at all (UDP blocked), a rendezvous that
offers relays, and ``FakeNat``: an RFC 5780 server that answers as if a NAT of a chosen
kind stood in between (it reports the mapped address such a NAT would have made, and
only sends the answers such a NAT would let through), so that every classification path
runs end to end through real sockets."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from client_sdk.identity import Identity
from client_sdk.netcheck import (
    FilteringBehavior,
    LifetimeMethod,
    MappingBehavior,
    MappingTest,
    NatReport,
    NetcheckError,
    Timing,
    netcheck,
)
from client_sdk.netcheck.relays import api_base, parse_relay_uri
from relay.heartbeat import SIGNATURE_HEADER as RELAY_SIGNATURE
from relay.heartbeat import sign as sign_heartbeat
from relay.stun import AttributeType, ErrorCode, Message, MessageClass, Method, StunError, parse
from rendezvous.settings import RendezvousSettings
from tests import stunutil
from tests.netutil import free_tcp_port, free_udp_port
from tests.relay.relay_process import natkit_relay
from tests.rendezvous.apputil import serving

T = AttributeType
EIM = MappingBehavior.ENDPOINT_INDEPENDENT
ADM = MappingBehavior.ADDRESS_DEPENDENT
APDM = MappingBehavior.ADDRESS_AND_PORT_DEPENDENT
EIF = FilteringBehavior.ENDPOINT_INDEPENDENT
ADF = FilteringBehavior.ADDRESS_DEPENDENT
APDF = FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Relay:
    port: int
    alt_port: int
    ipv6: bool

    @property
    def stun(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    """``natkit relay`` as ``natkit up`` runs it: 127.0.0.1:P with the RFC 5780 alternate
    127.0.0.2:Q (and [::1]:P where the host has IPv6)."""
    port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    alt = free_udp_port("127.0.0.1", also=("127.0.0.2",))
    ipv6 = has_ipv6_loopback()
    extra = ["--listen", f"[::1]:{port}"] if ipv6 else []
    with natkit_relay(
        *("--listen", f"127.0.0.1:{port}", *extra, "--alt-listen", f"127.0.0.2:{alt}"),
        *("--metrics-listen", "", "--log-level", "warning"),
        wait_on=("127.0.0.1", port),
    ):
        yield Relay(port, alt, ipv6)


def assert_open_internet(report: NatReport) -> None:
    """What netcheck must say on loopback, where there is no NAT."""
    assert report.udp is True
    assert report.public_ipv4 == "127.0.0.1"
    assert report.behind_nat is False
    assert report.mapping is EIM
    assert report.filtering is EIF
    assert report.port_preserving is True
    assert report.hairpinning is True  # no NAT: your public address is your own
    assert report.mapping_varies_by_destination is False


async def test_natkit_relay_on_loopback(relay: Relay) -> None:
    started = time.monotonic()
    report = await netcheck([relay.stun])
    elapsed = time.monotonic() - started
    assert_open_internet(report)
    assert report.mapping_test is MappingTest.NO_NAT
    assert report.mapped_address is not None
    assert report.mapped_address.startswith("127.0.0.1:")
    (server,) = report.stun
    assert server.server == relay.stun
    assert server.other_address == f"127.0.0.2:{relay.alt_port}"
    assert server.rtt_ms is not None
    assert report.relays == ()
    assert report.preferred_relay is None
    assert report.mapping_lifetime is None
    assert elapsed < 3.0  # the bound (on loopback it takes about 0.1 s)


async def test_ipv6_server_gives_the_public_ipv6(relay: Relay) -> None:
    if not relay.ipv6:
        pytest.skip("no IPv6 loopback")
    both = await netcheck([relay.stun, f"[::1]:{relay.port}"])
    assert both.public_ipv4 == "127.0.0.1"
    assert both.public_ipv6 == "::1"
    assert both.filtering is EIF
    only6 = await netcheck([f"[::1]:{relay.port}"])  # the tests run over IPv6 then
    assert only6.udp is True
    assert only6.public_ipv4 is None
    assert only6.public_ipv6 == "::1"
    assert only6.mapped_address is not None
    assert only6.mapped_address.startswith("[::1]:")
    assert only6.mapping is EIM


async def test_two_servers_without_rfc5780(relay: Relay) -> None:
    # The relay answers on 127.0.0.1:Q too; netcheck cannot tell, so give it two plain
    # servers by pointing at FakeNat servers with OTHER-ADDRESS turned off.
    async with (
        FakeNat.running(other_address=False) as one,
        FakeNat.running(other_address=False) as two,
    ):
        report = await netcheck([one.stun, two.stun])
    assert report.mapping is EIM
    assert report.mapping_test is MappingTest.TWO_SERVERS
    assert report.mapping_varies_by_destination is False
    assert report.filtering is None  # no server could run RFC 5780 §4.4
    assert report.behind_nat is True


async def test_udp_blocked_is_reported_promptly() -> None:
    nobody = free_udp_port()  # nothing listens: the kernel answers ICMP, unread
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))  # reads nothing, answers nothing
        started = time.monotonic()
        report = await netcheck([f"127.0.0.1:{nobody}", f"127.0.0.1:{sink.getsockname()[1]}"])
        elapsed = time.monotonic() - started
    assert report.udp is False
    for key in ("public_ipv4", "mapping", "filtering", "port_preserving", "hairpinning"):
        assert report.to_dict()[key] is None
    assert [s.rtt_ms for s in report.stun] == [None, None]
    assert elapsed < 2.0


async def test_bad_arguments_raise_netcheck_error() -> None:
    with pytest.raises(NetcheckError, match="at least one STUN server"):
        await netcheck([])
    with pytest.raises(NetcheckError, match="the port must be 1-65535"):
        await netcheck(["127.0.0.1:0"])
    with pytest.raises(NetcheckError, match="expected HOST:PORT"):
        await netcheck(["http://127.0.0.1/"])
    with pytest.raises(NetcheckError, match="cannot resolve"):
        await netcheck(["no-such-host.invalid:3478"])
    with pytest.raises(NetcheckError, match="lifetime_max"):
        await netcheck(["127.0.0.1:3478"], mapping_lifetime=True, lifetime_max=0.1)
    with pytest.raises(NetcheckError, match="rendezvous URL"):
        await netcheck(["127.0.0.1:1"], rendezvous="ftp://x", timing=Timing(last_wait=0.1))


async def test_mapping_lifetime_on_loopback(relay: Relay) -> None:
    report = await netcheck([relay.stun], mapping_lifetime=True, lifetime_max=1.0)
    lifetime = report.mapping_lifetime
    assert lifetime is not None
    assert lifetime.method is LifetimeMethod.RESPONSE_PORT  # natkit relay honours it
    assert (lifetime.at_least_s, lifetime.at_most_s) == (1.0, None)  # no NAT: never expires


# ------------------------------------------------------------------------ FakeNat

# What a NAT of each mapping kind does to the port, by the server address the request
# went to: (primary IP, primary port), (primary, alt port), (alt IP, primary port),
# (alt, alt). The mask is XORed into the client's port.
MAPPINGS = {
    "eim": (0, 0, 0, 0),
    "adm": (0, 0, 0x100, 0x100),
    "apdm": (0, 0x300, 0x100, 0x200),
    "apdm-random": (0x400, 0x300, 0x100, 0x200),
}
PUBLIC_IP = "127.0.0.9"  # the "NAT's public address": still loopback, still this host


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeNat, index: int) -> None:
        self.fake = fake
        self.index = index
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.fake.handle(data, (addr[0], addr[1]), self.index)


@dataclass
class FakeNat:
    """An RFC 5780 server on {127.0.0.1, 127.0.0.2} x {P, Q} answering as if behind the
    chosen NAT: ``mapping`` (MAPPINGS), ``filtering`` ("eif", "adf", "apdf": an answer
    from an address the client's mapping has not sent to is dropped accordingly),
    ``change`` ("honour", "ignore": answer from the receiving socket, "420"),
    ``response_port`` (False: 420), ``lifetime`` (a mapping idle longer is gone: a
    RESPONSE-PORT answer to it is dropped, a new request gets another port),
    ``drop_first`` (every request's first transmission is lost)."""

    mapping: str = "eim"
    filtering: str = "eif"
    change: str = "honour"
    other_address: bool = True
    response_port: bool = True
    lifetime: float | None = None
    drop_first: bool = False
    addresses: list[tuple[str, int]] = field(default_factory=list)
    listeners: list[_Listener] = field(default_factory=list)
    contacted: dict[tuple[str, int], set[tuple[str, int]]] = field(default_factory=dict)
    last_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    generation: dict[tuple[str, int], int] = field(default_factory=dict)
    seen_ids: set[bytes] = field(default_factory=set)

    @property
    def stun(self) -> str:
        host, port = self.addresses[0]
        return f"{host}:{port}"

    @classmethod
    @asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[FakeNat]:
        fake = cls(**options)
        p = free_udp_port("127.0.0.1", also=("127.0.0.2",))
        q = free_udp_port("127.0.0.1", also=("127.0.0.2",))
        fake.addresses = [("127.0.0.1", p), ("127.0.0.1", q), ("127.0.0.2", p), ("127.0.0.2", q)]
        loop = asyncio.get_running_loop()
        for index, address in enumerate(fake.addresses):
            _, listener = await loop.create_datagram_endpoint(
                functools.partial(_Listener, fake, index), local_addr=address
            )
            fake.listeners.append(listener)
        try:
            yield fake
        finally:
            for listener in fake.listeners:
                if listener.transport is not None:
                    listener.transport.close()

    def mapped(self, client: tuple[str, int], index: int) -> tuple[str, int]:
        generation = self.generation.get(client, 0)
        return PUBLIC_IP, client[1] ^ MAPPINGS[self.mapping][index] ^ (0x800 * generation)

    def allowed(self, client: tuple[str, int], source: int) -> bool:
        sent_to = self.contacted.get(client, set())
        address = self.addresses[source]
        if self.filtering == "eif":
            return True
        if self.filtering == "adf":
            return any(ip == address[0] for ip, _ in sent_to)
        return address in sent_to

    def handle(self, data: bytes, client: tuple[str, int], index: int) -> None:
        try:
            request = parse(data)
        except StunError:
            return
        if request.method != Method.BINDING or request.message_class != MessageClass.REQUEST:
            return
        if self.drop_first and request.transaction_id not in self.seen_ids:
            self.seen_ids.add(request.transaction_id)
            return
        now = time.monotonic()
        last = self.last_seen.get(client)
        if self.lifetime is not None and last is not None and now - last > self.lifetime:
            self.generation[client] = self.generation.get(client, 0) + 1  # a new mapping
            self.contacted.pop(client, None)
        self.last_seen[client] = now
        self.contacted.setdefault(client, set()).add(self.addresses[index])

        change = request.get(T.CHANGE_REQUEST)
        response_port = request.get(T.RESPONSE_PORT)
        if (change is not None and self.change == "420") or (
            response_port is not None and not self.response_port
        ):
            self.send(index, client, self.error(request, 420))
            return
        source = index
        if change is not None and self.change == "honour":
            source ^= (2 if change.change_ip else 0) | (1 if change.change_port else 0)
        destination = client
        if response_port is not None:
            destination = (client[0], response_port)
            target_seen = self.last_seen.get(destination)
            if self.lifetime is not None and (
                target_seen is None or now - target_seen > self.lifetime
            ):
                return  # that mapping has expired: the NAT drops the answer
        unsolicited = destination != client or source != index
        if unsolicited and not self.allowed(destination, source):
            return  # the NAT filters it
        attributes: list[tuple[int, object]] = [(T.XOR_MAPPED_ADDRESS, self.mapped(client, index))]
        if self.other_address:
            attributes.append((T.RESPONSE_ORIGIN, self.addresses[source]))
            attributes.append((T.OTHER_ADDRESS, self.addresses[index ^ 3]))
        response = Message(
            Method.BINDING, MessageClass.SUCCESS, request.transaction_id, tuple(attributes)
        )
        self.send(source, destination, response.encode(fingerprint=True))

    @staticmethod
    def error(request: Message, code: int) -> bytes:
        attributes = ((T.ERROR_CODE, ErrorCode(code, "Unknown Attribute")),)
        return Message(
            Method.BINDING, MessageClass.ERROR, request.transaction_id, attributes
        ).encode()

    def send(self, index: int, destination: tuple[str, int], data: bytes) -> None:
        transport = self.listeners[index].transport
        if transport is not None:
            transport.sendto(data, destination)


@pytest.mark.parametrize(
    ("mapping", "filtering", "expected_mapping", "expected_filtering", "preserving", "hairpin"),
    [
        ("eim", "eif", EIM, EIF, True, True),  # full cone (its public IP is ours: hairpins)
        ("eim", "adf", EIM, ADF, True, True),  # address-restricted cone
        ("eim", "apdf", EIM, APDF, True, True),  # port-restricted cone
        ("adm", "apdf", ADM, APDF, True, True),
        ("apdm", "apdf", APDM, APDF, True, True),
        ("apdm-random", "apdf", APDM, APDF, False, False),  # symmetric, random ports
    ],
)
async def test_nat_kinds_end_to_end(
    mapping: str,
    filtering: str,
    expected_mapping: MappingBehavior,
    expected_filtering: FilteringBehavior,
    preserving: bool,
    hairpin: bool,
) -> None:
    async with FakeNat.running(mapping=mapping, filtering=filtering) as fake:
        report = await netcheck([fake.stun])
    assert report.udp is True
    assert report.behind_nat is True
    assert report.public_ipv4 == PUBLIC_IP
    assert report.mapping is expected_mapping
    assert report.mapping_test is MappingTest.RFC5780
    assert report.filtering is expected_filtering
    assert report.port_preserving is preserving
    assert report.hairpinning is hairpin
    assert report.mapping_varies_by_destination is (expected_mapping is not EIM)


async def test_filtering_ignores_a_server_that_ignores_change_request() -> None:
    # Answers from the primary address to a CHANGE-REQUEST are not endpoint-independent
    # filtering; a 420 (no alternate) is not either.
    for change in ("ignore", "420"):
        async with FakeNat.running(filtering="apdf", change=change) as fake:
            report = await netcheck([fake.stun])
        assert report.filtering is None, change
        assert report.mapping is EIM


async def test_lost_first_transmissions_change_nothing() -> None:
    async with FakeNat.running(mapping="apdm", filtering="adf", drop_first=True) as fake:
        report = await netcheck([fake.stun])
    assert (report.mapping, report.filtering) == (APDM, ADF)


@pytest.mark.parametrize("response_port", [True, False])
async def test_mapping_lifetime_finds_the_expiry(response_port: bool) -> None:
    async with FakeNat.running(lifetime=0.6, response_port=response_port) as fake:
        report = await netcheck([fake.stun], mapping_lifetime=True, lifetime_max=2.0)
    lifetime = report.mapping_lifetime
    assert lifetime is not None
    expected = LifetimeMethod.RESPONSE_PORT if response_port else LifetimeMethod.REQUERY
    assert lifetime.method is expected
    assert lifetime.at_most_s is not None
    # Generous bounds: the ladder steps by 2/48 s, and timers on a busy machine drift.
    assert 0.3 <= lifetime.at_least_s < lifetime.at_most_s <= 1.2


# ------------------------------------------------------------------------ coturn


@pytest.fixture
def coturn() -> Iterator[int]:
    """coturn with two listening IPs (127.0.0.1, 127.0.0.2): RFC 5780 on its default
    alternate port, listening port + 1."""
    if shutil.which("turnserver") is None:
        pytest.skip("turnserver not installed (Debian package coturn)")
    for _ in range(50):
        port = free_udp_port("127.0.0.1", also=("127.0.0.2",))
        try:
            for ip in ("127.0.0.1", "127.0.0.2"):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((ip, port + 1))
            break
        except OSError:
            continue
    args = ["--no-tcp", "--realm=natkit.test", "--listening-ip=127.0.0.1"]
    args += ["--listening-ip=127.0.0.2", f"--listening-port={port}"]
    with stunutil.coturn(*args, server=("127.0.0.1", port)):
        yield port


@pytest.mark.interop
async def test_coturn_as_the_stun_server(coturn: int) -> None:
    report = await netcheck([f"127.0.0.1:{coturn}"], mapping_lifetime=True, lifetime_max=1.0)
    assert_open_internet(report)
    assert report.stun[0].other_address == f"127.0.0.2:{coturn + 1}"
    lifetime = report.mapping_lifetime
    assert lifetime is not None
    assert lifetime.method is LifetimeMethod.RESPONSE_PORT


# ------------------------------------------------------------------------ relays


SECRET = "netcheck-turn-secret"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("turn:127.0.0.1:3478?transport=udp", ("turn", "127.0.0.1", 3478)),
        ("turn:relay.example", ("turn", "relay.example", 3478)),
        ("turns:relay.example?transport=tcp", ("turns", "relay.example", 5349)),
        ("stun:[2001:db8::1]:3479", ("stun", "2001:db8::1", 3479)),
        ("TURN:h:1", ("turn", "h", 1)),
        ("http://x", None),
        ("turn:", None),
        ("turn:h:99999", None),
    ],
)
def test_parse_relay_uri(uri: str, expected: tuple[str, str, int] | None) -> None:
    target = parse_relay_uri(uri)
    if expected is None:
        assert target is None
    else:
        assert target is not None
        assert (target.scheme, target.host, target.port) == expected


def test_api_base() -> None:
    assert api_base("http://127.0.0.1:8470/v1") == "http://127.0.0.1:8470"
    assert api_base("https://rv.example/") == "https://rv.example"
    assert api_base("https://rv.example/prefix/v1/") == "https://rv.example/prefix"
    with pytest.raises(NetcheckError):
        api_base("127.0.0.1:8470")


async def test_relays_from_the_rendezvous(relay: Relay) -> None:
    dead = free_udp_port()
    live_udp = f"turn:127.0.0.1:{relay.port}?transport=udp"
    live_tcp = f"turn:127.0.0.1:{relay.port}?transport=tcp"
    dead_uri = f"turn:127.0.0.1:{dead}?transport=udp"
    tls_uri = "turns:127.0.0.1:5349?transport=tcp"
    settings = RendezvousSettings(
        store="memory",
        secret="t",
        turn_secret=SECRET,
        turn_uris=[dead_uri, live_udp, live_tcp, tls_uri],
    )
    async with serving(settings) as client:
        url = f"http://127.0.0.1:{client.port}/v1"
        report = await netcheck([relay.stun], rendezvous=url, timing=Timing(relay_timeout=0.5))
        latency = {r.uri: r.latency_ms for r in report.relays}
        assert list(latency) == [dead_uri, live_udp, live_tcp, tls_uri]
        assert latency[dead_uri] is None
        assert latency[tls_uri] is None
        assert latency[live_udp] is not None
        assert latency[live_udp] == latency[live_tcp]  # one host:port, measured once
        assert report.preferred_relay == live_udp
        assert report.relays_error is None
        assert_open_internet(report)

        # A relay heartbeating into the rendezvous takes the static URIs' place; the
        # request is signed with the identity given.
        body = json.dumps({"region": "lab", "uris": [live_udp], "load": 0.1}).encode()
        headers = {
            RELAY_SIGNATURE: sign_heartbeat(SECRET, body, time.time()),
            "Content-Type": "application/json",
        }
        assert (await client.put("/v1/relays/r1", data=body, headers=headers)).status == 204
        beat = await netcheck(
            [relay.stun], rendezvous=url, identity=Identity.generate(), region="lab"
        )
        assert [r.uri for r in beat.relays] == [live_udp]
        assert beat.preferred_relay == live_udp


async def test_relays_error_is_reported_not_raised(relay: Relay) -> None:
    async with serving(RendezvousSettings(store="memory", secret="t")) as client:
        report = await netcheck([relay.stun], rendezvous=f"http://127.0.0.1:{client.port}")
    assert report.relays == ()
    assert report.relays_error is not None
    assert "503 no_turn_secret" in report.relays_error
    assert report.udp is True
    closed = free_tcp_port()
    report = await netcheck([relay.stun], rendezvous=f"http://127.0.0.1:{closed}")
    assert report.relays_error is not None
    assert "connection_failed" in report.relays_error


# ------------------------------------------------------------------------ CLI


def natkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natkit", "netcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_json(relay: Relay) -> None:
    done = natkit("--stun", relay.stun, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    for key in ("udp", "public_ipv4", "mapping", "filtering", "port_preserving", "hairpinning"):
        assert key in data
    assert data["udp"] is True
    assert data["public_ipv4"] == "127.0.0.1"
    assert data["mapping"] == "endpoint-independent"
    assert data["filtering"] == "endpoint-independent"
    assert data["port_preserving"] is True
    assert data["hairpinning"] is True
    assert NatReport.from_json(done.stdout).udp is True


def test_cli_table_and_environment(relay: Relay) -> None:
    import os

    env = {**os.environ, "NETCHECK_STUN": relay.stun}
    done = subprocess.run(
        [sys.executable, "-m", "natkit", "netcheck"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["UDP", "yes"]
    assert any(line.split()[:2] == ["Filtering", "endpoint-independent"] for line in lines)
    assert any(line.startswith("Mapping ") for line in lines)
    assert lines[-1].startswith("Took")


def test_cli_udp_blocked_and_errors() -> None:
    blocked = natkit("--stun", f"127.0.0.1:{free_udp_port()}", "--json")
    assert blocked.returncode == 0  # a blocked network is a result
    assert json.loads(blocked.stdout)["udp"] is False
    missing = natkit()
    assert missing.returncode == 2
    assert "--stun HOST:PORT" in missing.stderr
    bad = natkit("--stun", "127.0.0.1:http")
    assert bad.returncode == 2
    assert "the port must be 1-65535" in bad.stderr
    unresolvable = natkit("--stun", "no-such-host.invalid")
    assert unresolvable.returncode == 1
    assert "natkit netcheck: cannot resolve" in unresolvable.stderr
