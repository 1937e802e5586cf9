"""Port prediction between real lab NATs: a host behind a symmetric NAT (masquerade
``fully-random``) and one behind a port-restricted cone, their connectivity sockets,
candidates and punch links driven directly (no rendezvous): each side runs its own event
loop on a thread inside its host's namespace, the two swap candidates through a queue and
start together. With ``predict.arrange`` (the hard side fans, the easy side sprays) a
direct path is found; with the plain punch the same pair finds none."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from client_sdk.connect.candidates import local_candidates, mapping_varies, punch_targets
from client_sdk.connect.predict import SocketFan, arrange
from client_sdk.connect.punch import Punch, PunchConfig
from client_sdk.connect.udp import ConnectivitySocket
from client_sdk.identity import Identity
from client_sdk.rendezvous.http import Candidate
from tests.natlab import Lab, Nat
from tests.natlab.conftest import require_lab
from tests.natlab.lab import Host
from tests.natlab.servers import natkit_relay

log = logging.getLogger(__name__)

NATS = {"symmetric": Nat(mapping="address-and-port-dependent"), "port": Nat()}
HOSTS = {"sam": "symmetric", "pat": "port"}


@dataclass(frozen=True)
class Stack:
    lab: Lab
    stun: tuple[str, int]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_lab()
    with Lab(nats=NATS, hosts=HOSTS) as lab, natkit_relay(lab) as server:
        yield Stack(lab, server)


@dataclass
class Outcome:
    candidates: list[Candidate]
    ok: bool
    error: str = ""
    path: tuple[str, int] | None = None
    rtt: float | None = None
    elapsed: float = 0.0
    sprayed: int = 0
    fan_sockets: int | None = None  # opened by the fan (hard side)
    fan_left: int | None = None  # still open once the path was found
    received: bytes = b""


async def side(
    host: Host,
    me: Identity,
    peer: Identity,
    stun: tuple[str, int],
    config: PunchConfig,
    predict: bool,
    outbox: queue.Queue[list[Candidate]],
    inbox: queue.Queue[list[Candidate]],
    barrier: threading.Barrier,
) -> Outcome:
    sock = await ConnectivitySocket.open()
    try:
        reflexive = await sock.reflexive_addresses([stun])
        mine = local_candidates(sock.local_port, [host.ip], reflexive)
        outbox.put(mine)
        theirs = await asyncio.to_thread(inbox.get, timeout=10)
        link = sock.add(Punch(me, peer.peer_id, config))
        spray = arrange(link, mine, theirs, config) if predict else None
        fan = link.owner if isinstance(link.owner, SocketFan) else None
        opened = fan.sockets_open if fan is not None else None
        await asyncio.to_thread(barrier.wait, 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        link.start(punch_targets(theirs), spray)
        try:
            found = await asyncio.wait_for(link.found, config.timeout + 2)
        except (ConnectionError, TimeoutError) as exc:
            return Outcome(mine, False, str(exc), sprayed=link.punch.sprayed, fan_sockets=opened)
        elapsed = loop.time() - started
        left = fan.sockets_open if fan is not None else None
        link.send(b"hello from " + me.peer_id.encode())
        received = await asyncio.wait_for(link.inbox.get(), 3)
        await asyncio.sleep(0.2)  # let the peer read ours before closing
        link.close()
        return Outcome(
            mine,
            True,
            path=found.addr,
            rtt=found.rtt,
            elapsed=elapsed,
            sprayed=link.punch.sprayed,
            fan_sockets=opened,
            fan_left=left,
            received=received or b"",
        )
    finally:
        sock.close()


def run_pair(
    stack: Stack, *, easy_initiates: bool, predict: bool, config: PunchConfig
) -> tuple[Outcome, Outcome]:
    """(the easy side's outcome, the hard side's)."""
    stack.lab.flush()
    while True:  # the lower peer id is the Noise initiator
        easy_id, hard_id = Identity.generate(), Identity.generate()
        if (easy_id.peer_id < hard_id.peer_id) is easy_initiates:
            break
    to_hard: queue.Queue[list[Candidate]] = queue.Queue()
    to_easy: queue.Queue[list[Candidate]] = queue.Queue()
    barrier = threading.Barrier(2)
    pat, sam = stack.lab.host("pat"), stack.lab.host("sam")

    def run(host: Host, me: Identity, peer: Identity, out: Any, into: Any) -> Outcome:
        coroutine = side(host, me, peer, stack.stun, config, predict, out, into, barrier)
        return host.ns.call(lambda: asyncio.run(coroutine))

    with ThreadPoolExecutor(2) as pool:
        easy = pool.submit(run, pat, easy_id, hard_id, to_hard, to_easy)
        hard = pool.submit(run, sam, hard_id, easy_id, to_easy, to_hard)
        return easy.result(timeout=60), hard.result(timeout=60)


@pytest.mark.parametrize("easy_initiates", [True, False], ids=["easy-initiates", "hard-initiates"])
def test_prediction_finds_a_direct_path(stack: Stack, easy_initiates: bool) -> None:
    config = PunchConfig(timeout=5.0)
    easy, hard = run_pair(stack, easy_initiates=easy_initiates, predict=True, config=config)
    # The symmetric NAT shows two ports for one socket (the server and its RFC 5780
    # OTHER-ADDRESS): the hard side is recognisable from its candidates alone.
    assert mapping_varies(hard.candidates)
    assert not mapping_varies(easy.candidates)
    assert easy.ok, easy.error
    assert hard.ok, hard.error
    symmetric, port = stack.lab.router("symmetric"), stack.lab.router("port")
    assert easy.path is not None
    assert hard.path is not None
    assert easy.path[0] == symmetric.wan_ip
    assert hard.path[0] == port.wan_ip
    assert easy.received.startswith(b"hello")
    assert hard.received.startswith(b"hello")
    assert hard.fan_sockets == config.predict_sockets
    assert hard.fan_left is not None
    assert hard.fan_left <= 1  # the losers closed with the path
    assert 0 < easy.sprayed < config.predict_probes
    log.warning(
        "prediction (%s): %d probes sprayed, direct path in %.3f s (easy) / %.3f s (hard)",
        "easy initiates" if easy_initiates else "hard initiates",
        easy.sprayed,
        easy.elapsed,
        hard.elapsed,
    )


def test_without_prediction_there_is_no_direct_path(stack: Stack) -> None:
    config = PunchConfig(timeout=2.0)
    easy, hard = run_pair(stack, easy_initiates=True, predict=False, config=config)
    assert mapping_varies(hard.candidates)
    assert not easy.ok
    assert not hard.ok
    assert "no direct path" in easy.error
    assert easy.sprayed == 0
    assert hard.fan_sockets is None
