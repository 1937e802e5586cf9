"""``netcheck()``: run the tests over real sockets, then ``classify`` what they saw.

The default checks run in three phases, each test on sockets of its own, each socket
bound to a random high port (RFC 5780 §4.1):

1. Test I everywhere, concurrently: the mapping socket M to every server (the UDP check of
   §4.2, test I of §4.3, and the mapped addresses compared when there is no RFC 5780
   server), the filtering socket F to the primary server (§4.4 test I), two hairpinning
   sockets H1 and H2, and an IPv6 socket when a server has an IPv6 address. No answer
   from anyone within 1.5 s: UDP is blocked, and the run ends there.
2. Filtering and hairpinning, concurrently. F sends §4.4 tests II (change IP and port)
   and III (change port) to the primary address it already used in test I, at once: both
   go to the address of F's one mapping, so neither changes what the other measures, and
   their answers come from different addresses. An answer to II ends the test
   (endpoint-independent); otherwise both wait out the filtering timeout. F never sends
   to the alternate address, and nothing has been sent to the alternate address yet from
   any socket: a NAT (or a conntrack-based emulation of one) that keys filtering state
   on the host rather than the mapping cannot be opened for F by another test's packets.
   Hairpinning (RFC 5780 §3.4): H1 and H2 each send a Binding request to the *other's*
   mapped address; the NAT hairpins if either request arrives at the other socket. Both
   directions, so that a hairpinning NAT that also filters lets the second request in
   once the first has opened the way, as two peers behind one NAT would.
3. Mapping tests II and III from M (alternate IP and primary port; alternate IP and
   port), concurrently, and the relays' latency (``relays``).

Then, only if asked, the mapping lifetime (``lifetime``), which takes up to its bound.

Pacing (RFC 5780 §5 asks for at most ten new transactions per second): netcheck starts
its 8-10 transactions 10 ms apart instead, so that the default checks stay well under 3 s;
retransmissions stay unsynchronised (each transaction's timers start at its own time).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from client_sdk.identity import Identity
from client_sdk.netcheck.classify import (
    Answer,
    Observations,
    Outcome,
    ServerAnswer,
    classify,
    filtering_outcome,
)
from client_sdk.netcheck.lifetime import measure_lifetime
from client_sdk.netcheck.relays import (
    api_base,
    fetch_relay_uris,
    measure_relays,
    preferred_relay,
)
from client_sdk.netcheck.report import (
    NatReport,
    NetcheckError,
    RelayLatency,
    StunServerResult,
)
from client_sdk.netcheck.runner import Runner, Timing, route_source
from client_sdk.netcheck.servers import ResolvedServer, format_address, parse_server, resolve
from client_sdk.netcheck.stun import Address, binding_request, new_transaction_id
from client_sdk.netcheck.transport import ProbeSocket, Schedule, first_of, wait_with_resends

MAX_LIFETIME_BOUND = 3600.0


@dataclass(frozen=True, slots=True)
class _Checks:
    family: socket.AddressFamily
    observations: Observations
    servers: tuple[StunServerResult, ...]
    other_answers: bool  # a socket other than M got an answer
    ipv6: Address | None  # mapped address from the IPv6 probe


class _Progress:
    """Phase 2's end, for the relay probes (sent only once nothing they add to the NAT's
    state can change a filtering result), and whether anything answered phase 1."""

    def __init__(self) -> None:
        self.filtering_done = asyncio.Event()
        self.udp = False


def _family_of(address: Address) -> int:
    return ipaddress.ip_address(address[0]).version


async def _filtering(
    runner: Runner, probe: ProbeSocket, primary: Address, wait: float
) -> tuple[Outcome, Outcome | None]:
    """RFC 5780 §4.4 tests II and III, concurrently on F's mapping."""
    schedule = Schedule.every(runner.timing.resend, wait)
    test2 = asyncio.create_task(
        runner.binding(probe, primary, change_ip=True, change_port=True, schedule=schedule)
    )
    test3 = asyncio.create_task(runner.binding(probe, primary, change_port=True, schedule=schedule))
    try:
        outcome2 = filtering_outcome(await test2, primary, change_ip=True)
        if outcome2 is Outcome.RESPONSE:
            return outcome2, None  # endpoint-independent: test III cannot change that
        return outcome2, filtering_outcome(await test3, primary, change_ip=False)
    finally:
        test3.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await test3


async def _hairpin(
    runner: Runner,
    h1: ProbeSocket,
    mapped1: Address,
    h2: ProbeSocket,
    mapped2: Address,
    wait: float,
) -> bool:
    """RFC 5780 §3.4, both ways: does a request to one socket's mapped address, sent
    from the other socket, arrive?"""
    await runner.pacer.wait()
    tid1, tid2 = new_transaction_id(), new_transaction_id()
    request1, request2 = binding_request(tid1), binding_request(tid2)
    arrived = first_of(h2.watch(tid1, request=True), h1.watch(tid2, request=True))

    def send() -> None:
        h1.send(request1, mapped2)
        h2.send(request2, mapped1)

    sends = tuple(at for at in (0.0, 0.1, 0.3) if at < wait)
    try:
        return await wait_with_resends(arrived, send, Schedule(sends, wait)) is not None
    finally:
        h1.unwatch(tid2)
        h2.unwatch(tid1)
        arrived.cancel()


async def _default_checks(
    runner: Runner,
    servers: Sequence[ResolvedServer],
    family: socket.AddressFamily,
    progress: _Progress,
) -> _Checks:
    try:
        return await _run_checks(runner, servers, family, progress)
    finally:
        progress.filtering_done.set()


async def _run_checks(
    runner: Runner,
    servers: Sequence[ResolvedServer],
    family: socket.AddressFamily,
    progress: _Progress,
) -> _Checks:
    main = [(s, addr) for s in servers if (addr := s.address(family)) is not None]
    m, f, h1, h2 = [await runner.socket(family) for _ in range(4)]
    # IPv6 beside IPv4 tests: one Binding for the public IPv6 address, on the side (a
    # host without IPv6 connectivity must not hold the IPv4 phases up for 1.5 s).
    v6_server = None
    if family == socket.AF_INET:
        v6_server = next((s for s in servers if s.ipv6 is not None), None)
    v6_task = asyncio.create_task(_ipv6_probe(runner, v6_server))
    try:
        return await _phases(runner, main, family, (m, f, h1, h2), v6_task, progress)
    finally:
        v6_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await v6_task


async def _ipv6_probe(
    runner: Runner, server: ResolvedServer | None
) -> tuple[ResolvedServer, Address, Answer | None] | None:
    if server is None or server.ipv6 is None:
        return None
    try:
        probe = await runner.socket(socket.AF_INET6)
    except OSError:  # no IPv6 on this host
        return server, server.ipv6, None
    return server, server.ipv6, await runner.binding(probe, server.ipv6)


def _server_result(server: ResolvedServer, address: Address, a: Answer | None) -> StunServerResult:
    return StunServerResult(
        server=server.spec.text,
        address=format_address(address),
        rtt_ms=None if a is None else round(a.rtt * 1000, 3),
        mapped_address=format_address(a.mapped) if a and a.mapped else None,
        other_address=format_address(a.other) if a and a.other else None,
    )


async def _phases(
    runner: Runner,
    main: Sequence[tuple[ResolvedServer, Address]],
    family: socket.AddressFamily,
    sockets: tuple[ProbeSocket, ProbeSocket, ProbeSocket, ProbeSocket],
    v6_task: asyncio.Task[tuple[ResolvedServer, Address, Answer | None] | None],
    progress: _Progress,
) -> _Checks:
    m, f, h1, h2 = sockets
    primary = main[0][1]

    # Phase 1: test I everywhere.
    phase1 = await asyncio.gather(
        *(runner.binding(m, address) for _, address in main),
        runner.binding(f, primary),
        runner.binding(h1, primary),
        runner.binding(h2, primary),
    )
    m_answers: list[Answer | None] = list(phase1[: len(main)])
    f_answer, h1_answer, h2_answer = phase1[len(main) :]
    results = [
        _server_result(s, address, a) for (s, address), a in zip(main, m_answers, strict=True)
    ]
    local_ip = route_source(family, primary)
    local = (local_ip, m.local_port) if local_ip is not None else None
    ports = tuple(
        (probe.local_port, a.mapped if a else None)
        for probe, a in ((m, m_answers[0]), (f, f_answer), (h1, h1_answer), (h2, h2_answer))
    )
    observations = Observations(
        local=local,
        servers=tuple(
            ServerAnswer(address, a) for (_, address), a in zip(main, m_answers, strict=True)
        ),
        ports=ports,
    )
    others = any(a is not None for a in (f_answer, h1_answer, h2_answer))
    if not others and not any(m_answers):
        # Nothing over the tests' family; the IPv6 probe started with phase 1 and ends
        # about now.
        v6_done = await v6_task
        v6_answer = v6_done[2] if v6_done else None
        if v6_done is not None:
            results.append(_server_result(*v6_done))
        progress.udp = v6_answer is not None
        return _Checks(
            family,
            observations,
            tuple(results),
            progress.udp,
            v6_answer.mapped if v6_answer else None,
        )
    progress.udp = True

    # The RFC 5780 server: the first one whose test I carried an OTHER-ADDRESS of its family.
    rfc5780: tuple[Address, Address] | None = None
    for (_, address), answer in zip(main, m_answers, strict=True):
        other = answer.other if answer is not None else None
        if other is not None and _family_of(other) == _family_of(address):
            rfc5780 = (address, other)
            break

    # Phase 2: filtering (on F's mapping) and hairpinning, concurrently.
    async def filtering() -> tuple[Answer | None, Outcome | None, Outcome | None]:
        if rfc5780 is None:
            return None, None, None
        server = rfc5780[0]
        probe, test1 = f, f_answer
        if server != primary:  # F's test I went to a server without RFC 5780: start over
            probe = await runner.socket(family)
            test1 = await runner.binding(probe, server)
        if test1 is None:
            return None, None, None
        wait = runner.timing.filtering_wait(test1.rtt)
        outcome2, outcome3 = await _filtering(runner, probe, server, wait)
        return test1, outcome2, outcome3

    async def hairpin() -> bool | None:
        if h1_answer is None or h2_answer is None:
            return None
        if h1_answer.mapped is None or h2_answer.mapped is None:
            return None
        rtt = max(h1_answer.rtt, h2_answer.rtt)
        wait = runner.timing.filtering_wait(rtt)
        return await _hairpin(runner, h1, h1_answer.mapped, h2, h2_answer.mapped, wait)

    (f_test1, outcome2, outcome3), hairpinning = await asyncio.gather(filtering(), hairpin())
    progress.filtering_done.set()

    # Phase 3: mapping tests II and III from M (only now does anything go to the alternate).
    test2 = test3 = None
    if rfc5780 is not None:
        server, other = rfc5780
        test2, test3 = await asyncio.gather(
            runner.binding(m, (other[0], server[1])), runner.binding(m, other)
        )
    observations = Observations(
        local=local,
        servers=observations.servers,
        rfc5780=None if rfc5780 is None else rfc5780[0],
        mapping_test2=test2,
        mapping_test3=test3,
        filtering_test1=f_test1,
        filtering_test2=outcome2,
        filtering_test3=outcome3,
        ports=ports,
        hairpin=hairpinning,
    )
    v6_done = await v6_task
    if v6_done is not None:
        results.append(_server_result(*v6_done))
    v6 = v6_done[2].mapped if v6_done and v6_done[2] else None
    return _Checks(family, observations, tuple(results), others, v6)


async def netcheck(
    stun: str | Sequence[str],
    *,
    rendezvous: str | None = None,
    identity: Identity | None = None,
    region: str = "",
    rendezvous_token: str | None = None,
    mapping_lifetime: bool = False,
    lifetime_max: float = 120.0,
    timing: Timing | None = None,
) -> NatReport:
    """Discover the NAT between this host and the STUN server(s) ``stun`` (``HOST:PORT``
    strings; an RFC 5780 server, one with an alternate address, gives the full picture).

    ``rendezvous``: a rendezvous server's URL; its relays are listed with their latency
    (``identity`` signs the request, an ephemeral one if None; ``region`` and
    ``rendezvous_token``, a tenant's bearer token, are passed on). ``mapping_lifetime``:
    also estimate how long an idle mapping lives, which takes up to ``lifetime_max``
    seconds more. Raises NetcheckError for arguments that cannot work (no server, one
    that does not parse or resolve, a bad URL); what the network does is the report.
    """
    specs = [parse_server(text) for text in ([stun] if isinstance(stun, str) else stun)]
    if not specs:
        raise NetcheckError("netcheck needs at least one STUN server (HOST:PORT)")
    if mapping_lifetime and not 1.0 <= lifetime_max <= MAX_LIFETIME_BOUND:
        raise NetcheckError(f"lifetime_max must be 1-{MAX_LIFETIME_BOUND:g} s, got {lifetime_max}")
    if rendezvous:
        api_base(rendezvous)  # a URL that cannot work is the caller's error, not a result
    timing = timing if timing is not None else Timing()
    loop = asyncio.get_running_loop()
    started = loop.time()
    servers = await asyncio.gather(*(resolve(spec) for spec in specs))
    family = socket.AF_INET if any(s.ipv4 for s in servers) else socket.AF_INET6

    progress = _Progress()
    uris_task: asyncio.Task[list[str]] | None = None
    if rendezvous:
        uris_task = asyncio.create_task(
            fetch_relay_uris(
                rendezvous,
                identity=identity,
                region=region,
                token=rendezvous_token,
                timeout=timing.http_timeout,
            )
        )
    try:
        async with Runner(timing) as runner:

            async def relays() -> tuple[tuple[RelayLatency, ...], str | None]:
                if uris_task is None:
                    return (), None
                try:
                    uris = await uris_task
                except NetcheckError as exc:
                    return (), str(exc)
                await progress.filtering_done.wait()
                return await measure_relays(runner, uris, family, probe=progress.udp), None

            checks, (relay_list, relays_error) = await asyncio.gather(
                _default_checks(runner, servers, family, progress), relays()
            )
            verdict = classify(checks.observations)
            udp = verdict.udp or checks.other_answers
            lifetime_result = None
            server = checks.observations.rfc5780 or next(
                (s.server for s in checks.observations.servers if s.answer), None
            )
            if mapping_lifetime and udp and server is not None:
                lifetime_result = await measure_lifetime(runner, server, family, lifetime_max)
    finally:
        if uris_task is not None and not uris_task.done():
            uris_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, NetcheckError):
                await uris_task

    mapped = verdict.mapped
    v4 = mapped if mapped is not None and checks.family == socket.AF_INET else None
    v6 = mapped if mapped is not None and checks.family == socket.AF_INET6 else checks.ipv6
    return NatReport(
        udp=udp,
        public_ipv4=v4[0] if v4 else None,
        public_ipv6=v6[0] if v6 else None,
        mapped_address=format_address(mapped) if mapped else None,
        behind_nat=verdict.behind_nat,
        mapping=verdict.mapping,
        mapping_test=verdict.mapping_test,
        mapping_varies_by_destination=verdict.mapping_varies_by_destination,
        filtering=verdict.filtering,
        port_preserving=verdict.port_preserving,
        hairpinning=verdict.hairpinning,
        stun=checks.servers,
        relays=relay_list,
        preferred_relay=preferred_relay(relay_list),
        relays_error=relays_error,
        mapping_lifetime=lifetime_result,
        elapsed_ms=round((loop.time() - started) * 1000, 1),
    )
