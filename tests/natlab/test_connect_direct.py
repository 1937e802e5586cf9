"""``Peer.connect``/``Peer.accept`` between hosts behind real lab NATs, with the whole
stack on the public segment (Redis, the rendezvous on it, natkit relay for STUN): each
case runs ``tests.natlab.peer_script`` in two host namespaces -- one accepts, one
connects -- and checks the path is direct, a datagram went each way, and how long it
took. A symmetric NAT against a port-restricted one has no direct path without port
prediction: that pair goes direct by prediction."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.nat import Behaviour
from tests.natlab.servers import natkit_relay, redis_server, rendezvous_server

REPO = Path(__file__).resolve().parents[2]  # where `python -m tests.natlab...` resolves
SECRET = "natlab-turn-secret"
EIF: Behaviour = "endpoint-independent"
ADF: Behaviour = "address-dependent"
APD: Behaviour = "address-and-port-dependent"
PUNCH_TIMEOUT = 3.0
CONNECT_BOUND = 5.0  # seconds a direct connect may take here (it takes well under one)

NATS = {
    "port1": Nat(),  # port-restricted cone (the Linux default)
    "port2": Nat(),
    "full": Nat(filtering=EIF),
    "restricted": Nat(filtering=ADF),
    "hairpin": Nat(hairpin=True),
    "carrier": Nat(),
    "home": Nat(behind="carrier"),  # double NAT
    "symmetric": Nat(mapping=APD),
    "full2": Nat(filtering=EIF),
}
HOSTS = {
    "alice": "port1",
    "bob": "port2",
    "fred": "full",
    "rita": "restricted",
    "hana": "hairpin",
    "hugo": "hairpin",
    "dora": "home",
    "sam": "symmetric",
    "fay": "full2",
}


@dataclass(frozen=True)
class Stack:
    lab: Lab
    url: str
    stun: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_lab()
    with (
        Lab(nats=NATS, hosts=HOSTS) as lab,
        redis_server(lab) as store,
        rendezvous_server(lab, store, turn_secret=SECRET) as url,
        natkit_relay(lab, rendezvous_url=url, auth_secret=SECRET) as server,
    ):
        yield Stack(lab, url, f"{server[0]}:{server[1]}")


def script(stack: Stack, host: str, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.natlab.peer_script", *args]
    argv += ["--rendezvous", stack.url, "--stun", stack.stun]
    argv += ["--punch-timeout", str(PUNCH_TIMEOUT)]
    return stack.lab.host(host).ns.popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )


def first_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The first JSON line ``process`` prints, within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"no line from {process.args!r} in {timeout} s:\n{err.decode()}")
    line = process.stdout.readline()
    if not line:
        _, err = process.communicate()
        raise AssertionError(f"{process.args!r} printed nothing:\n{err.decode()}")
    return dict(json.loads(line))


def finish(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The last JSON line ``process`` prints before it exits (killed after ``timeout``)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"{process.args!r} still running after {timeout} s:\n{err.decode()}"
        ) from None
    lines = out.decode().strip().splitlines()
    if not lines:
        raise AssertionError(f"{process.args!r} printed nothing:\n{err.decode()}")
    return dict(json.loads(lines[-1]))


def run_pair(stack: Stack, accepter: str, dialler: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the accepter's result, the dialler's result)."""
    stack.lab.flush()  # every case starts from NATs with no mappings
    accepting = script(stack, accepter, "accept", "--wait", "20")
    try:
        ready = first_line(accepting, 20)
        dialling = script(stack, dialler, "connect", ready["ready"])
        dialled = finish(dialling, 30)
        if dialled["ok"]:
            accepted = finish(accepting, 30)
        else:  # nothing to wait for: the accepter never gets a connection
            accepting.terminate()
            accepting.communicate(timeout=10)
            accepted = {"ok": None, "error": "terminated"}
    finally:
        if accepting.poll() is None:
            accepting.kill()
            accepting.wait()
    return accepted, dialled


@pytest.mark.parametrize(
    ("accepter", "dialler"),
    [
        ("bob", "alice"),  # port-restricted vs port-restricted
        ("alice", "fred"),  # port-restricted accepts from a full cone
        ("rita", "bob"),  # address-restricted accepts from port-restricted
        ("hana", "hugo"),  # both behind one NAT, hairpinning on
        ("bob", "dora"),  # a double NAT dials port-restricted
        ("fay", "fred"),  # full cone vs full cone
        ("fred", "sam"),  # symmetric dials a full cone: its new port is let in
        ("sam", "fred"),  # ... and the other way round
        ("rita", "sam"),  # symmetric dials address-restricted (rita probed sam's address)
    ],
    ids=[
        "port-port",
        "full-port",
        "restricted-port",
        "same-nat-hairpin",
        "double-nat",
        "full-full",
        "symmetric-to-full",
        "full-to-symmetric",
        "symmetric-to-restricted",
    ],
)
def test_direct_path_is_punched(stack: Stack, accepter: str, dialler: str) -> None:
    accepted, dialled = run_pair(stack, accepter, dialler)
    assert dialled["ok"], dialled
    assert accepted["ok"], accepted
    assert dialled["path"] == accepted["path"] == "direct"
    # Data both ways: the dialler's ping arrived, the accepter's pong came back.
    assert any(m.startswith("ping") for m in accepted["received"])
    assert any(m.startswith("pong") for m in dialled["received"])
    assert dialled["elapsed"] < CONNECT_BOUND
    assert accepted["elapsed"] < CONNECT_BOUND
    assert 0 <= dialled["rtt"] < 1
    assert 0 <= accepted["rtt"] < 1


def test_symmetric_against_port_restricted_goes_direct_by_port_prediction(stack: Stack) -> None:
    accepted, dialled = run_pair(stack, "alice", "sam")
    assert dialled["ok"], dialled
    assert accepted["ok"], accepted
    assert dialled["path"] == accepted["path"] == "direct"
    assert any(m.startswith("ping") for m in accepted["received"])
    assert any(m.startswith("pong") for m in dialled["received"])
    # alice (port-restricted) hears sam from a port of the symmetric NAT that no candidate
    # named: one of the mappings sam's fan opened, found by alice's spray.
    assert dialled["elapsed"] < CONNECT_BOUND
