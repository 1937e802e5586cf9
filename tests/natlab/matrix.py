"""The connectivity matrix of issue #6: every ordered pair of the lab's NAT kinds, what
path theory allows each, and one ``connect()`` between them -- shared by the test
(``tests/natlab/test_connect_matrix.py``: each pair once, asserted) and the benchmark
(``benchmarks/connectivity.py``: each pair N times, tabulated).

* **Kinds** (``KINDS``): full cone, restricted cone, port-restricted cone, symmetric,
  shifted (endpoint-independent but not port-preserving), double NAT and UDP blocked --
  each a chain of ``Nat``s between a host and the public segment. Every kind has two
  routers (sides ``a`` and ``b``, one host each), so "X -> X" crosses two NATs of kind X;
  the dialler is always the ``a`` host, the accepter the ``b`` host. ``SAME_NAT``: two
  more routers (hairpinning on, off), two hosts behind each.
* **Expectation** (``expected_rule``/``expected_path``): the harness's reading of the
  issue, not the product's -- a small table of rules, first match wins.
* **Running** (``Stack``, ``run_pair``, ``run_case``, ``Timing``): one ``Lab`` holding
  every router, Redis, ``natkit rendezvous`` (TURN REST secret) and ``natkit relay``
  heartbeating into it (UDP and TCP TURN, STUN with its RFC 5780 alternate); a pair is two
  ``tests.natlab.peer_script`` processes, one accepting, one dialling, started together
  on NATs that forgot every mapping. The result (``PairResult``) holds the path
  ``connect()`` returned on and the time to a direct path -- at once, or by an upgrade
  from the relay while the direct punch was still looking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from client_sdk.netcheck.relays import fetch_relay_uris
from client_sdk.netcheck.report import NetcheckError
from tests.natlab.lab import Lab
from tests.natlab.nat import BEHAVIOURS, Behaviour, Nat
from tests.natlab.servers import STUN_PORT, natkit_relay, redis_server, rendezvous_server

PathKind = Literal["direct", "relay"]

REPO = Path(__file__).resolve().parents[2]  # where `python -m tests.natlab...` resolves
SECRET = "natlab-turn-secret"  # the TURN REST secret the rendezvous and the relay share
# RFC 4787's behaviours, for mapping and filtering alike
EI: Behaviour = "endpoint-independent"
AD: Behaviour = "address-dependent"
APD: Behaviour = "address-and-port-dependent"

PUNCH_TIMEOUT = 3.0  # seconds a punch looks for a direct path (peer_script --punch-timeout)
START_TIMEOUT = 20.0  # seconds a peer process may take to start and reach the rendezvous
ACCEPT_WAIT = 30.0  # seconds the accepter waits for a connection
DIAL_TIMEOUT = 40.0  # seconds the dialler may take from start to its result
ACCEPTER_AFTER = 8.0  # seconds the accepter may take to finish after the dialler did
# (beyond its own punch and its wait for an upgrade)
RELAY_READY = 15.0  # seconds the relay has to appear in the rendezvous


# ---- the catalogue ----------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Kind:
    """A NAT behaviour of the matrix. ``label`` names it in pair ids and tables;
    ``chain`` holds the routers between a host and the public segment, outermost first
    (two for a double NAT; ``layout`` sets their ``behind``)."""

    label: str
    chain: tuple[Nat, ...]

    def __repr__(self) -> str:
        return f"Kind({self.label!r})"

    @property
    def mapping(self) -> Behaviour:
        """The mapping the chain shows from outside: its most dependent router's."""
        return max((nat.mapping for nat in self.chain), key=BEHAVIOURS.index)

    @property
    def filtering(self) -> Behaviour:
        """The filtering the chain shows from outside: its strictest router's."""
        return max((nat.filtering for nat in self.chain), key=BEHAVIOURS.index)

    @property
    def udp(self) -> bool:
        return all(nat.udp for nat in self.chain)

    @property
    def eim(self) -> bool:
        """Endpoint-independent mapping: one public port whatever the destination."""
        return self.mapping == EI

    @property
    def easy(self) -> bool:
        """EIM and filtering that does not depend on the peer's port: the peer's probes
        reach the host through the address its STUN server saw, whatever port they
        come from."""
        return self.eim and self.filtering != APD


FULL_CONE = Kind("full-cone", (Nat(filtering=EI),))
RESTRICTED_CONE = Kind("restricted-cone", (Nat(filtering=AD),))
PORT_RESTRICTED = Kind("port-restricted", (Nat(),))  # the Linux default
SYMMETRIC = Kind("symmetric", (Nat(mapping=APD),))
SHIFTED = Kind("shifted", (Nat(port_preserving=False),))  # EIM + APDF, a fixed port offset
DOUBLE_NAT = Kind("double-nat", (Nat(), Nat()))  # port-restricted behind a port-restricted CGN
UDP_BLOCKED = Kind("udp-blocked", (Nat(udp=False),))  # TCP still passes
KINDS = (FULL_CONE, RESTRICTED_CONE, PORT_RESTRICTED, SYMMETRIC, SHIFTED, DOUBLE_NAT, UDP_BLOCKED)

# Two hosts behind one port-restricted NAT, with and without hairpinning.
SAME_NAT_HAIRPIN = Kind("same-nat-hairpin", (Nat(hairpin=True),))
SAME_NAT_NO_HAIRPIN = Kind("same-nat-no-hairpin", (Nat(),))
SAME_NAT = (SAME_NAT_HAIRPIN, SAME_NAT_NO_HAIRPIN)

DIALLER_SIDE, ACCEPTER_SIDE = "a", "b"


# ---- what theory allows -----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One line of the expectation table: ``name`` (shown in tables), whether it
    ``applies`` to a pair (either order) and the ``path`` it gives."""

    name: str
    path: PathKind
    applies: Callable[[Kind, Kind, bool], bool]


RULES: tuple[Rule, ...] = (
    # Both behind one NAT: host candidates on the shared LAN meet without crossing the
    # router at all, hairpinning or not (with it the reflexive addresses work too).
    Rule("same NAT", "direct", lambda a, b, same: same),
    # UDP blocked on either side: no UDP path exists; that side reaches its relay over
    # TCP, the other over UDP, and the two allocations relay between them.
    Rule("UDP blocked", "relay", lambda a, b, same: not (a.udp and b.udp)),
    # One side easy (EIM, filtering independent of the peer's port): the other's probes
    # get in through its reflexive address, whatever port the other's NAT gives them, and
    # the easy side answers the port they came from (peer-reflexive).
    Rule("an easy side", "direct", lambda a, b, same: a.easy or b.easy),
    # Both EIM (port-dependent filtering): each probes the other's reflexive address,
    # which its own outgoing probes opened -- the classic simultaneous punch.
    Rule("both EIM", "direct", lambda a, b, same: a.eim and b.eim),
    # Exactly one symmetric, the other EIM: the EIM side's port is known; the symmetric
    # side's new port toward it is found by port prediction.
    Rule("port prediction", "direct", lambda a, b, same: a.eim != b.eim),
    # Both symmetric ("hard-hard"): neither port can be known in advance.
    Rule("hard-hard", "relay", lambda a, b, same: not (a.eim or b.eim)),
)


def expected_rule(a: Kind, b: Kind, *, same_nat: bool = False) -> Rule:
    """The first rule of ``RULES`` that applies to ``a`` and ``b`` (in either order)."""
    for rule in RULES:
        if rule.applies(a, b, same_nat):
            return rule
    raise AssertionError(f"no rule for {a.label} and {b.label}")  # RULES cover every pair


def expected_path(a: Kind, b: Kind, *, same_nat: bool = False) -> PathKind:
    """The path ``connect()`` must take between ``a`` and ``b`` (either way round)."""
    return expected_rule(a, b, same_nat=same_nat).path


# ---- the cases and the lab that holds them ----------------------------------------------


def host_name(kind: Kind, side: str) -> str:
    return f"{kind.label}-{side}"


@dataclass(frozen=True)
class Case:
    """One pair: ``dialler`` connects to ``accepter``; ``same_nat``: both behind the one
    router of a ``SAME_NAT`` kind."""

    dialler: Kind
    accepter: Kind
    same_nat: bool = False

    @property
    def id(self) -> str:
        return (
            self.dialler.label if self.same_nat else f"{self.dialler.label}->{self.accepter.label}"
        )

    @property
    def dialler_host(self) -> str:
        return host_name(self.dialler, DIALLER_SIDE)

    @property
    def accepter_host(self) -> str:
        return host_name(self.accepter, ACCEPTER_SIDE)

    @property
    def rule(self) -> Rule:
        return expected_rule(self.dialler, self.accepter, same_nat=self.same_nat)

    @property
    def expected(self) -> PathKind:
        return self.rule.path


CASES: tuple[Case, ...] = (
    *(Case(dialler, accepter) for dialler in KINDS for accepter in KINDS),
    *(Case(kind, kind, same_nat=True) for kind in SAME_NAT),
)


def layout() -> tuple[dict[str, Nat], dict[str, str]]:
    """The lab's routers and hosts: for each kind and side a chain of routers (the
    innermost named like its host, each outer one ``-up`` more) with one host; for each
    same-NAT kind one router with both sides' hosts."""
    nats: dict[str, Nat] = {}
    hosts: dict[str, str] = {}
    for kind in KINDS:
        for side in (DIALLER_SIDE, ACCEPTER_SIDE):
            upstream: str | None = None
            for depth, nat in enumerate(kind.chain):
                name = host_name(kind, side) + "-up" * (len(kind.chain) - 1 - depth)
                nats[name] = replace(nat, behind=upstream)
                upstream = name
            assert upstream is not None
            hosts[host_name(kind, side)] = upstream
    for kind in SAME_NAT:
        (nats[kind.label],) = kind.chain
        for side in (DIALLER_SIDE, ACCEPTER_SIDE):
            hosts[host_name(kind, side)] = kind.label
    return nats, hosts


@dataclass(frozen=True)
class Timing:
    """How the peers of a pair run. ``punch_timeout``: seconds a punch looks for a direct
    path (``Peer(punch_timeout=)``). ``upgrade_wait``: seconds a connection that started on
    the relay stays up, after its ping/pong, for the direct punch to upgrade it -- at most:
    the wait ends when that punch gives up (None: the punch timeout; 0: no wait)."""

    punch_timeout: float = PUNCH_TIMEOUT
    upgrade_wait: float | None = None

    @property
    def upgrade(self) -> float:
        return self.punch_timeout if self.upgrade_wait is None else self.upgrade_wait


# ---- the stack ----------------------------------------------------------------------------


class Stack:
    """The lab (``layout``) with Redis, ``natkit rendezvous`` (TURN REST secret) and
    ``natkit relay`` on the public segment, the relay heartbeating into the rendezvous
    (TURN over UDP and TCP) and answering STUN; ready once the rendezvous lists the relay.
    A context manager: everything stops, and every namespace goes, at its end."""

    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self.lab: Lab
        self.url = ""
        self.stun: tuple[str, ...] = ()

    def __enter__(self) -> Stack:
        with self._exit as stack:
            nats, hosts = layout()
            self.lab = stack.enter_context(Lab(nats=nats, hosts=hosts))
            store = stack.enter_context(redis_server(self.lab))
            self.url = stack.enter_context(rendezvous_server(self.lab, store, turn_secret=SECRET))
            relay = stack.enter_context(
                natkit_relay(self.lab, rendezvous_url=self.url, auth_secret=SECRET)
            )
            assert relay == (self.lab.server_ip(0), STUN_PORT)
            # The peers' STUN server: the relay (RFC 5780 alternate on 203.0.113.2:3479).
            self.stun = (f"{relay[0]}:{relay[1]}",)
            self._wait_for_relay()
            self._exit = stack.pop_all()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._exit.close()

    def _wait_for_relay(self) -> None:
        """Until the rendezvous hands out the relay's TURN URIs (its first heartbeat)."""
        deadline = time.monotonic() + RELAY_READY
        while True:
            try:
                if self.lab.public.call(lambda: asyncio.run(fetch_relay_uris(self.url))):
                    return
                problem = "no relay URIs"
            except NetcheckError as exc:
                problem = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the relay never showed up in the rendezvous: {problem}")
            time.sleep(0.2)

    def forget_mappings(self, *hosts: str) -> None:
        """Every router between ``hosts`` and the public segment forgets its mappings
        (conntrack and the learnt maps: ``Router.flush``); the other routers carry no
        traffic between cases."""
        done: set[str] = set()
        for host in hosts:
            router: str | None = self.lab.host(host).router.name
            while router is not None and router not in done:
                done.add(router)
                self.lab.router(router).flush()
                router = self.lab.router(router).nat.behind

    def peer(
        self, host: str, *args: str, timing: Timing, stderr: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """``tests.natlab.peer_script ARGS`` on ``host`` against this stack, as ``timing``
        says (stdin and stdout are pipes)."""
        argv = [sys.executable, "-m", "tests.natlab.peer_script", *args]
        argv += ["--rendezvous", self.url, "--punch-timeout", str(timing.punch_timeout)]
        argv += ["--upgrade-wait", str(timing.upgrade)]
        for server in self.stun:
            argv += ["--stun", server]
        return self.lab.host(host).ns.popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO
        )


# ---- one pair -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairResult:
    """One ``connect()`` and its ping/pong. ``ok``: the dialler's ``connect()`` returned a
    connection, on ``path`` (None when it failed), after ``seconds`` (until it failed,
    when it did; None when it never got that far). ``accepter_ok``: the accepter got the
    connection (on ``accepter_path``). ``data_both_ways``: the dialler's ping reached the
    accepter and its pong came back. ``direct_seconds``: from the start of ``connect()``
    to a direct path -- ``seconds`` when it returned on one, later when a relayed
    connection upgraded while the punch went on (None: never direct). ``final_path``: the
    dialler's path at the end. ``error``: what went wrong."""

    ok: bool
    path: PathKind | None
    seconds: float | None
    accepter_ok: bool
    data_both_ways: bool
    error: str = ""
    direct_seconds: float | None = None
    final_path: PathKind | None = None
    accepter_path: PathKind | None = None

    @property
    def connected(self) -> bool:
        """Both sides connected and a datagram went each way."""
        return self.ok and self.accepter_ok and self.data_both_ways

    @property
    def best_path(self) -> PathKind | None:
        """Direct when the connection was direct at some point (from the start or by an
        upgrade), else the path ``connect()`` returned on."""
        return "direct" if self.direct_seconds is not None else self.path

    @property
    def upgraded(self) -> bool:
        """It started on the relay and moved to a direct path."""
        return self.path == "relay" and self.direct_seconds is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failed(error: str, seconds: float | None = None) -> PairResult:
    """The dialler got no connection (so neither did the accepter)."""
    return PairResult(False, None, seconds, accepter_ok=False, data_both_ways=False, error=error)


class _ScriptError(Exception):
    """A peer process misbehaved (no line in time, nothing printed, bad JSON)."""


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The first JSON line ``process`` prints, within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise _ScriptError(f"no line within {timeout:g} s")
    return _parse(process.stdout.readline())


def _last_line(
    process: subprocess.Popen[bytes], timeout: float, stdin: bytes | None = None
) -> dict[str, Any]:
    """The last JSON line ``process`` prints before it exits, within ``timeout`` (after
    writing ``stdin`` to it, if given)."""
    try:
        out, _ = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _ScriptError(f"still running after {timeout:g} s") from None
    lines = out.strip().splitlines()
    return _parse(lines[-1] if lines else b"")


def _parse(line: bytes) -> dict[str, Any]:
    if not line.strip():
        raise _ScriptError("printed nothing")
    try:
        return dict(json.loads(line))
    except ValueError:
        raise _ScriptError(f"printed {line[:200]!r}") from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=10)


def _tail(log: IO[bytes], lines: int = 15) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def run_pair(stack: Stack, accepter: str, dialler: str, timing: Timing = Timing()) -> PairResult:
    """``dialler`` connects to ``accepter`` (host names of ``stack.lab``) on NATs that
    forgot every mapping; both peer processes start at once, the dialler learns the
    accepter's peer id once it listens. Never raises for what the peers do: a failure
    is a ``PairResult`` with ``error`` (and the peers' last log lines)."""
    stack.forget_mappings(accepter, dialler)
    with tempfile.TemporaryFile() as accept_log, tempfile.TemporaryFile() as dial_log:
        wait = ("--wait", str(ACCEPT_WAIT))
        accepting = stack.peer(accepter, "accept", *wait, timing=timing, stderr=accept_log)
        dialling = stack.peer(dialler, "connect", "-", timing=timing, stderr=dial_log)
        try:
            result = _exchange(accepting, dialling, timing)
        except _ScriptError as exc:
            result = _failed(str(exc))
        finally:
            _stop(dialling)
            _stop(accepting)
        if result.connected:
            return result
        logs = f"accepter's log:\n{_tail(accept_log)}\ndialler's log:\n{_tail(dial_log)}"
        return replace(result, error=f"{result.error}\n{logs}")


def _exchange(
    accepting: subprocess.Popen[bytes], dialling: subprocess.Popen[bytes], timing: Timing
) -> PairResult:
    try:
        ready = _first_line(accepting, START_TIMEOUT)
    except _ScriptError as exc:
        raise _ScriptError(f"accepter: {exc}") from None
    try:
        dialled = _last_line(dialling, DIAL_TIMEOUT, stdin=f"{ready['ready']}\n".encode())
    except _ScriptError as exc:
        raise _ScriptError(f"dialler: {exc}") from None
    if not dialled["ok"]:  # the accepter never gets a connection: nothing to wait for
        why = f"{dialled.get('error')}: {dialled.get('message')}"
        return _failed(why, seconds=dialled.get("elapsed"))
    try:
        accepted = _last_line(accepting, timing.punch_timeout + timing.upgrade + ACCEPTER_AFTER)
    except _ScriptError as exc:
        accepted = {"ok": False, "error": "accepter", "message": str(exc)}
    both_ways = bool(accepted["ok"]) and _heard(accepted, "ping") and _heard(dialled, "pong")
    error = "" if accepted["ok"] else f"accepter: {accepted['error']}: {accepted.get('message')}"
    if accepted["ok"] and not both_ways:
        error = (
            f"no ping/pong: dialler heard {dialled['received']}, accepter {accepted['received']}"
        )
    direct_after = dialled["direct_after"]
    return PairResult(
        ok=True,
        path=dialled["connected_path"],
        seconds=dialled["elapsed"],
        accepter_ok=bool(accepted["ok"]),
        data_both_ways=both_ways,
        error=error,
        direct_seconds=None if direct_after is None else dialled["elapsed"] + direct_after,
        final_path=dialled["path"],
        accepter_path=accepted.get("connected_path"),
    )


def _heard(result: dict[str, Any], word: str) -> bool:
    return any(message.startswith(word) for message in result["received"])


def run_case(stack: Stack, case: Case, timing: Timing = Timing()) -> PairResult:
    return run_pair(stack, case.accepter_host, case.dialler_host, timing)
