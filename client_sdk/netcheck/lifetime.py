"""How long the NAT keeps an idle UDP mapping (opt-in: it takes up to ``max_idle`` s).

Method (RFC 5780 §4.6, run in parallel instead of a sequential binary search): a
*control* socket Y learns its mapping from the server. Then one fresh socket X_T per idle
time T of a ladder (every max/48 s up to max/2, every max/12 s beyond: 2.5 s steps to a
minute, 10 s steps to two, by default) sends one Binding request, which creates its
mapping (Pa, Pp_T), and then stays silent. T seconds after X_T's answer arrived (the
last packet through the mapping), Y sends a Binding request with RESPONSE-PORT = Pp_T:
the server answers from the address X_T talked to, to Pa:Pp_T. The answer reaches X_T
only if the mapping is still there -- whatever the filtering, since it comes from the
very address X_T sent to. Silence, while the server still answers Y itself (a control
request), means the mapping is gone. A request reaching X_T never refreshes the mapping
before the test (nothing is sent from X_T), and every X_T is used once.

Trials are read in order of T and the run stops at the first expired one: the report is
(longest T survived below it, first T it expired at), or (longest T, None) when the
mapping outlived ``max_idle``.

When the server refuses RESPONSE-PORT (RFC 5780 makes it optional: 420), X_T instead asks
again itself after T and compares the mapped address (``requery``). That only sees an
expiry when the NAT gives the new mapping another port: a NAT that preserves ports
hands back the same one and the estimate is then an upper bound (``at_most_s`` None).

Limits: a NAT's timers vary with load and with the traffic seen (Linux conntrack keeps a
mapping that saw one request and one answer 30 s, one with traffic both ways for longer;
this test measures the former); a NAT with several public IPs that does not keep a
host's mappings on one ("paired" pooling, RFC 4787 REQ-2) defeats RESPONSE-PORT (such
trials count as inconclusive).
"""

from __future__ import annotations

import asyncio
import socket

from client_sdk.netcheck.classify import lifetime_bounds, same_address, same_ip
from client_sdk.netcheck.report import LifetimeMethod, MappingLifetime
from client_sdk.netcheck.runner import Runner
from client_sdk.netcheck.stun import Address, binding_request, new_transaction_id
from client_sdk.netcheck.transport import ProbeSocket, wait_with_resends


def idle_ladder(max_idle: float) -> tuple[float, ...]:
    """The idle times tried: every max/48 s up to max/2, then every max/12 s to max."""
    fine, coarse = max_idle / 48, max_idle / 12
    points = [round(fine * i, 3) for i in range(1, 25)]
    points += [round(max_idle / 2 + coarse * i, 3) for i in range(1, 7)]
    return tuple(points)


async def _response_port_trial(
    runner: Runner,
    x: ProbeSocket,
    x_mapped: Address,
    y: ProbeSocket,
    y_mapped: Address,
    server: Address,
) -> bool | None:
    if not same_ip(x_mapped[0], y_mapped[0]):
        return None  # not one public IP for the host's mappings: RESPONSE-PORT cannot tell
    tid = new_transaction_id()
    request = binding_request(tid, response_port=x_mapped[1])
    waiter = x.watch(tid)
    try:
        got = await wait_with_resends(
            waiter, lambda: y.send(request, server), runner.timing.schedule
        )
    finally:
        x.unwatch(tid)
    if got is not None:
        return True
    control = await runner.binding(y, server)
    return False if control is not None else None


async def _requery_trial(
    runner: Runner, x: ProbeSocket, x_mapped: Address, server: Address
) -> bool | None:
    answer = await runner.binding(x, server)
    if answer is None or answer.mapped is None:
        return None
    return same_address(answer.mapped, x_mapped)


async def measure_lifetime(
    runner: Runner, server: Address, family: socket.AddressFamily, max_idle: float
) -> MappingLifetime | None:
    """The idle lifetime of a mapping toward ``server`` (see the module); None when the
    server does not answer."""
    y = await runner.socket(family)
    first = await runner.binding(y, server)
    if first is None or first.mapped is None:
        return None
    y_mapped = first.mapped
    # Does the server honour RESPONSE-PORT? Ask for the answer at Y's own mapped port.
    check = await runner.binding(y, server, response_port=y_mapped[1])
    supported = check is not None and check.error_code is None
    method = LifetimeMethod.RESPONSE_PORT if supported else LifetimeMethod.REQUERY

    async def trial(idle: float) -> bool | None:
        x = await runner.socket(family)
        opened = await runner.binding(x, server)
        if opened is None or opened.mapped is None:
            return None
        # The answer (binding returns as it arrives) was the mapping's last packet: the
        # idle time counts from now.
        await asyncio.sleep(idle)
        if supported:
            return await _response_port_trial(runner, x, opened.mapped, y, y_mapped, server)
        return await _requery_trial(runner, x, opened.mapped, server)

    ladder = idle_ladder(max_idle)
    tasks = [asyncio.create_task(trial(idle)) for idle in ladder]
    results: list[tuple[float, bool | None]] = []
    try:
        for idle, task in zip(ladder, tasks, strict=True):
            alive = await task
            results.append((idle, alive))
            if alive is False:
                break  # expired: every longer idle time would be too
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if all(alive is None for _, alive in results):
        return None
    at_least, at_most = lifetime_bounds(results)
    return MappingLifetime(method, at_least, at_most)
