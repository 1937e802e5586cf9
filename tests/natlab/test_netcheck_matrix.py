"""``natkit netcheck`` from a host behind each lab NAT reports exactly that NAT: mapping,
filtering, port preservation, hairpinning, the public address (a double NAT's outer
one), and UDP blocked -- against natkit's relay and against coturn."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.nat import Behaviour
from tests.natlab.servers import coturn, natkit_relay

EIM: Behaviour = "endpoint-independent"
EIF: Behaviour = "endpoint-independent"
ADF: Behaviour = "address-dependent"
APD: Behaviour = "address-and-port-dependent"
NATS = {
    "full": Nat(filtering=EIF),
    "restricted": Nat(filtering=ADF),
    "port": Nat(),
    "symmetric": Nat(mapping=APD),
    "shifted": Nat(port_preserving=False),
    "hairpin": Nat(hairpin=True),
    "carrier": Nat(filtering=ADF),
    "home": Nat(filtering=EIF, behind="carrier"),  # double NAT: the outer one shows
    "blocked": Nat(udp=False),
}
# host -> (mapping, filtering, port_preserving, hairpinning, public address's router)
EXPECTED: dict[str, tuple[str, str, bool, bool, str]] = {
    "full": (EIM, EIF, True, False, "full"),
    "restricted": (EIM, ADF, True, False, "restricted"),
    "port": (EIM, APD, True, False, "port"),
    "symmetric": (APD, APD, False, False, "symmetric"),
    "shifted": (EIM, APD, False, False, "shifted"),
    "hairpin": (EIM, APD, True, True, "hairpin"),
    "home": (EIM, ADF, True, False, "carrier"),
}
SERVERS: dict[str, Callable[[Lab], AbstractContextManager[tuple[str, int]]]] = {
    "natkit": natkit_relay,
    "coturn": coturn,
}


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Lab, tuple[str, int]]]:
    require_lab()
    hosts = {name: name for name in NATS if name != "carrier"}
    with Lab(nats=NATS, hosts=hosts) as lab, SERVERS[request.param](lab) as server:
        yield lab, server


def netcheck(lab: Lab, host: str, server: tuple[str, int]) -> tuple[dict[str, Any], float]:
    """``natkit netcheck --json`` run in ``host``'s namespace: its report, and how long
    the whole process took (start-up included; the report's ``elapsed_ms`` is the
    checks' own time)."""
    started = time.monotonic()
    out = lab.host(host).ns.run(
        sys.executable, "-m", "natkit", "netcheck", "--stun", f"{server[0]}:{server[1]}", "--json"
    )
    return json.loads(out), time.monotonic() - started


@pytest.mark.parametrize("host", list(EXPECTED))
def test_netcheck_reports_the_nat_it_is_behind(
    served: tuple[Lab, tuple[str, int]], host: str
) -> None:
    lab, server = served
    report, _ = netcheck(lab, host, server)
    mapping, filtering, preserving, hairpinning, outer = EXPECTED[host]
    assert report["udp"] is True
    assert report["public_ipv4"] == lab.router(outer).wan_ip
    assert report["mapping"] == mapping
    assert report["filtering"] == filtering
    assert report["port_preserving"] is preserving
    assert report["hairpinning"] is hairpinning
    assert report["elapsed_ms"] < 3000  # the default checks, when UDP works (issue #5)


def test_netcheck_reports_udp_blocked_promptly(served: tuple[Lab, tuple[str, int]]) -> None:
    lab, server = served
    report, seconds = netcheck(lab, "blocked", server)
    assert report["udp"] is False
    assert report["public_ipv4"] is None
    assert report["mapping"] is None
    assert report["filtering"] is None
    assert report["elapsed_ms"] < 2500  # it gives up after about 1.5 s
    assert seconds < 15  # the process, start-up included


def test_netcheck_estimates_the_mapping_lifetime() -> None:
    """Behind a NAT whose idle UDP mappings live 6 s, ``--mapping-lifetime`` brackets
    6 s (the lab sets the router's conntrack UDP timeouts)."""
    require_lab()
    with (
        Lab(nats={"short": Nat(udp_timeout=6)}, hosts={"short": "short"}) as lab,
        natkit_relay(lab) as server,
    ):
        argv = [sys.executable, "-m", "natkit", "netcheck", "--stun", f"{server[0]}:{server[1]}"]
        argv += ["--mapping-lifetime", "--lifetime-max", "20", "--json"]
        report = json.loads(lab.host("short").ns.run(*argv, timeout=60))
    lifetime = report["mapping_lifetime"]
    assert lifetime["at_least_s"] <= 6 <= lifetime["at_most_s"]
    assert lifetime["at_most_s"] - lifetime["at_least_s"] <= 3  # a useful bracket
