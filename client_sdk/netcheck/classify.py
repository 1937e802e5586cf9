"""From observations to NAT behaviour: pure functions, no sockets, no clocks.

The probing code (``client_sdk.netcheck.probe``) records what came back from which test;
everything it concludes is decided here, so every rule is tested from tables of
observations. The rules are RFC 5780 §4 (behaviour definitions from RFC 4787):

* Mapping (§4.3): test I, a Binding request to the server's primary address; if the
  XOR-MAPPED-ADDRESS is the socket's own address there is no NAT (endpoint-independent).
  Test II, from the same socket to the alternate IP and primary port: the same mapped
  address as test I means endpoint-independent. Test III, to the alternate IP and port:
  the same as test II means address-dependent, else address-and-port-dependent.
* Filtering (§4.4), on a socket of its own: test I as above; test II asks (CHANGE-REQUEST)
  for the answer from the alternate IP and port: an answer means endpoint-independent.
  Test III asks for it from the primary IP and alternate port: an answer means
  address-dependent, silence address-and-port-dependent.
* Without an RFC 5780 server, two servers' mapped addresses (as Tailscale's netcheck
  does): equal means endpoint-independent. Different means the mapping varies by
  destination, reported as address-and-port-dependent: the conservative reading, since
  two single-address servers cannot tell it from address-dependent (and both defeat
  plain hole punching alike); ``mapping_varies_by_destination`` carries the observation.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from client_sdk.netcheck.report import FilteringBehavior, MappingBehavior, MappingTest
from client_sdk.netcheck.stun import Address


class Outcome(enum.Enum):
    """What a filtering test (a CHANGE-REQUEST) got back."""

    RESPONSE = "response"  # a success from the address the test asked for
    NO_RESPONSE = "no-response"  # silence until the timeout: the NAT filtered it
    UNSUPPORTED = "unsupported"  # an error (420: no alternate), or the server ignored it


@dataclass(frozen=True, slots=True)
class Answer:
    """One answered Binding request."""

    source: Address  # where the answer came from (the datagram's source address)
    mapped: Address | None = None  # XOR-MAPPED-ADDRESS
    other: Address | None = None  # OTHER-ADDRESS
    error_code: int | None = None  # set for an error response
    rtt: float = 0.0  # seconds from the first send to the answer


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """Test I from the mapping socket to one server (in the order servers were given)."""

    server: Address
    answer: Answer | None


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything the default checks saw, for ``classify``."""

    local: Address | None  # the mapping socket: the IP the route to the server uses, its port
    servers: tuple[ServerAnswer, ...] = ()
    rfc5780: Address | None = None  # the primary address of the server used for §4.3/§4.4
    mapping_test2: Answer | None = None
    mapping_test3: Answer | None = None
    filtering_test1: Answer | None = None
    filtering_test2: Outcome | None = None  # None: not run
    filtering_test3: Outcome | None = None
    # (local port, mapped address) of every probing socket's test I to the same server.
    ports: tuple[tuple[int, Address | None], ...] = ()
    hairpin: bool | None = None  # None: not run


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the observations say (the behavioural part of a ``NatReport``)."""

    udp: bool
    mapped: Address | None = None
    behind_nat: bool | None = None
    mapping: MappingBehavior | None = None
    mapping_test: MappingTest | None = None
    mapping_varies_by_destination: bool | None = None
    filtering: FilteringBehavior | None = None
    port_preserving: bool | None = None
    hairpinning: bool | None = None


def same_address(a: Address, b: Address) -> bool:
    """Equal transport addresses, whatever the IP's spelling (``::1`` and ``0::1``)."""
    return a[1] == b[1] and same_ip(a[0], b[0])


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def behind_nat(local: Address | None, mapped: Address | None) -> bool | None:
    """RFC 5780 §4.3 test I: no NAT when the server saw the socket's own address."""
    if local is None or mapped is None:
        return None
    return not same_address(local, mapped)


def classify_mapping(
    test1: Address | None, test2: Address | None, test3: Address | None
) -> MappingBehavior | None:
    """RFC 5780 §4.3 from the mapped addresses of tests I, II and III (None: no answer,
    or not run); None when the tests that would decide did not answer."""
    if test1 is None or test2 is None:
        return None
    if same_address(test1, test2):
        return MappingBehavior.ENDPOINT_INDEPENDENT
    if test3 is None:
        return None
    if same_address(test2, test3):
        return MappingBehavior.ADDRESS_DEPENDENT
    return MappingBehavior.ADDRESS_AND_PORT_DEPENDENT


def mapping_from_servers(
    answers: Sequence[tuple[Address, Address]],
) -> MappingBehavior | None:
    """(server, mapped address) from one socket to two or more servers: equal mapped
    addresses mean endpoint-independent; different ones address-and-port-dependent
    (see the module's note). None with fewer than two answers."""
    if len(answers) < 2:
        return None
    first = answers[0][1]
    if all(same_address(first, mapped) for _, mapped in answers[1:]):
        return MappingBehavior.ENDPOINT_INDEPENDENT
    return MappingBehavior.ADDRESS_AND_PORT_DEPENDENT


def varies_by_destination(mapped: Sequence[Address]) -> bool | None:
    """Whether one socket's mapped address differed between destinations."""
    if len(mapped) < 2:
        return None
    return any(not same_address(mapped[0], other) for other in mapped[1:])


def filtering_outcome(answer: Answer | None, primary: Address, *, change_ip: bool) -> Outcome:
    """The outcome of a CHANGE-REQUEST sent to ``primary``: change IP and port
    (``change_ip``, test II) or the port only (test III). The datagram's source must be
    the address asked for: a server that ignores CHANGE-REQUEST answers from the primary,
    and counting that answer would report any NAT as endpoint-independent."""
    if answer is None:
        return Outcome.NO_RESPONSE
    if answer.error_code is not None:
        return Outcome.UNSUPPORTED
    ip_changed = not same_ip(answer.source[0], primary[0])
    port_changed = answer.source[1] != primary[1]
    asked = ip_changed and port_changed if change_ip else port_changed and not ip_changed
    return Outcome.RESPONSE if asked else Outcome.UNSUPPORTED


def classify_filtering(
    test1: bool, test2: Outcome | None, test3: Outcome | None
) -> FilteringBehavior | None:
    """RFC 5780 §4.4 from whether test I was answered on the filtering socket and the
    outcomes of tests II and III (None: not run)."""
    if not test1 or test2 is None or test2 is Outcome.UNSUPPORTED:
        return None
    if test2 is Outcome.RESPONSE:
        return FilteringBehavior.ENDPOINT_INDEPENDENT
    if test3 is Outcome.RESPONSE:
        return FilteringBehavior.ADDRESS_DEPENDENT
    if test3 is Outcome.NO_RESPONSE:
        return FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
    return None


def port_preserving(ports: Sequence[tuple[int, Address | None]]) -> bool | None:
    """Whether the NAT kept the local port: every answered socket's mapped port equals
    its local port. None when nothing was answered."""
    seen = [(local, mapped[1]) for local, mapped in ports if mapped is not None]
    if not seen:
        return None
    return all(local == mapped for local, mapped in seen)


def lifetime_bounds(trials: Sequence[tuple[float, bool | None]]) -> tuple[float, float | None]:
    """(at least, at most) seconds an idle mapping lives, from (idle time, still alive)
    trials (alive None: inconclusive, ignored). A mapping that expired after T is taken
    to expire after any longer idle time too: the upper bound is the shortest idle time
    after which it was gone, the lower bound the longest shorter one it survived (0.0
    when it survived none)."""
    dead = [idle for idle, alive in trials if alive is False]
    at_most = min(dead) if dead else None
    alive = [idle for idle, ok in trials if ok is True and (at_most is None or idle < at_most)]
    return (max(alive) if alive else 0.0), at_most


def classify(obs: Observations) -> Verdict:
    """The verdict on everything the default checks observed."""
    answered = [(s.server, s.answer) for s in obs.servers if s.answer is not None]
    if not answered:
        return Verdict(udp=False)
    # Test I: the RFC 5780 server's answer, else the first server's that answered.
    mapped = next((a for server, a in answered if server == obs.rfc5780), answered[0][1]).mapped
    nat = behind_nat(obs.local, mapped)

    mapping: MappingBehavior | None = None
    how: MappingTest | None = None
    if nat is False:
        mapping, how = MappingBehavior.ENDPOINT_INDEPENDENT, MappingTest.NO_NAT
    if mapping is None and obs.rfc5780 is not None:
        mapping = classify_mapping(
            mapped,
            obs.mapping_test2.mapped if obs.mapping_test2 else None,
            obs.mapping_test3.mapped if obs.mapping_test3 else None,
        )
        how = MappingTest.RFC5780 if mapping is not None else None
    pairs = [(server, a.mapped) for server, a in answered if a.mapped is not None]
    if mapping is None:
        mapping = mapping_from_servers(pairs)
        how = MappingTest.TWO_SERVERS if mapping is not None else None

    seen = [m for _, m in pairs]
    for extra in (obs.mapping_test2, obs.mapping_test3):
        if extra is not None and extra.mapped is not None:
            seen.append(extra.mapped)

    filtering = None
    if obs.rfc5780 is not None:
        test1_ok = obs.filtering_test1 is not None and obs.filtering_test1.error_code is None
        filtering = classify_filtering(test1_ok, obs.filtering_test2, obs.filtering_test3)

    return Verdict(
        udp=True,
        mapped=mapped,
        behind_nat=nat,
        mapping=mapping,
        mapping_test=how,
        mapping_varies_by_destination=varies_by_destination(seen),
        filtering=filtering,
        port_preserving=port_preserving(obs.ports),
        hairpinning=obs.hairpin,
    )
