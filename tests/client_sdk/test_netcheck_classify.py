"""netcheck's conclusions from observations, without sockets: RFC 5780 §4.3 mapping,
§4.4 filtering, two-server mapping, port preservation, hairpinning, lifetime bounds, and
whole observation sets for each kind of NAT the lab builds."""

from __future__ import annotations

import pytest

from client_sdk.netcheck.classify import (
    Answer,
    Observations,
    Outcome,
    ServerAnswer,
    Verdict,
    behind_nat,
    classify,
    classify_filtering,
    classify_mapping,
    filtering_outcome,
    lifetime_bounds,
    mapping_from_servers,
    port_preserving,
    same_address,
    varies_by_destination,
)
from client_sdk.netcheck.lifetime import idle_ladder
from client_sdk.netcheck.report import FilteringBehavior, MappingBehavior, MappingTest

EIM = MappingBehavior.ENDPOINT_INDEPENDENT
ADM = MappingBehavior.ADDRESS_DEPENDENT
APDM = MappingBehavior.ADDRESS_AND_PORT_DEPENDENT
EIF = FilteringBehavior.ENDPOINT_INDEPENDENT
ADF = FilteringBehavior.ADDRESS_DEPENDENT
APDF = FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
R, N, U = Outcome.RESPONSE, Outcome.NO_RESPONSE, Outcome.UNSUPPORTED

A = ("198.51.100.9", 40000)
B = ("198.51.100.9", 40001)
C = ("198.51.100.9", 40002)
D = ("198.51.100.10", 40000)
PRIMARY = ("203.0.113.1", 3478)
ALT_IP = ("203.0.113.2", 3478)
ALT = ("203.0.113.2", 3479)
ALT_PORT = ("203.0.113.1", 3479)


@pytest.mark.parametrize(
    ("test1", "test2", "test3", "expected"),
    [
        (A, A, None, EIM),  # test II equals test I: test III is not needed
        (A, A, B, EIM),
        (A, B, B, ADM),
        (A, B, C, APDM),
        (A, D, D, ADM),  # another public IP for the alternate address, kept for its port
        (A, D, B, APDM),
        (None, A, A, None),  # no test I
        (A, None, None, None),  # test II unanswered
        (A, None, A, None),
        (A, B, None, None),  # not EIM, and test III unanswered: ADM or APDM unknown
    ],
)
def test_rfc5780_mapping(
    test1: tuple[str, int] | None,
    test2: tuple[str, int] | None,
    test3: tuple[str, int] | None,
    expected: MappingBehavior | None,
) -> None:
    assert classify_mapping(test1, test2, test3) is expected


@pytest.mark.parametrize(
    ("test1", "test2", "test3", "expected"),
    [
        (True, R, None, EIF),
        (True, R, N, EIF),  # test II alone decides
        (True, R, U, EIF),
        (True, N, R, ADF),
        (True, N, N, APDF),
        (True, N, U, None),  # test III's server did not change the port: unknown
        (True, N, None, None),
        (True, U, R, None),  # the server ignored change-IP: unknown, not EIF
        (True, U, N, None),
        (True, None, None, None),  # not run (no RFC 5780 server)
        (False, N, N, None),  # no test I on this socket: silence proves nothing
        (False, R, None, None),
    ],
)
def test_rfc5780_filtering(
    test1: bool,
    test2: Outcome | None,
    test3: Outcome | None,
    expected: FilteringBehavior | None,
) -> None:
    assert classify_filtering(test1, test2, test3) is expected


@pytest.mark.parametrize(
    ("answer", "change_ip", "expected"),
    [
        (None, True, N),
        (None, False, N),
        (Answer(source=ALT), True, R),
        (Answer(source=ALT_PORT), False, R),
        (Answer(source=PRIMARY), True, U),  # the server ignored CHANGE-REQUEST
        (Answer(source=PRIMARY), False, U),
        (Answer(source=ALT_IP), True, U),  # only the IP changed
        (Answer(source=ALT), False, U),  # the IP changed though only the port was asked
        (Answer(source=ALT, error_code=420), True, U),  # RFC 5780 §7.2: no alternate
    ],
)
def test_filtering_outcome_checks_where_the_answer_came_from(
    answer: Answer | None, change_ip: bool, expected: Outcome
) -> None:
    assert filtering_outcome(answer, PRIMARY, change_ip=change_ip) is expected


def test_filtering_outcome_compares_ips_not_spellings() -> None:
    answer = Answer(source=("2001:db8::1", 3479))
    assert filtering_outcome(answer, ("2001:db8:0::1", 3478), change_ip=False) is R


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([], None),
        ([(PRIMARY, A)], None),
        ([(PRIMARY, A), (ALT, A)], EIM),
        ([(PRIMARY, A), (ALT, A), (ALT_PORT, A)], EIM),
        ([(PRIMARY, A), (ALT, B)], APDM),  # varies: reported conservatively
        ([(PRIMARY, A), (ALT_PORT, B)], APDM),
        ([(PRIMARY, A), (ALT, A), (ALT_PORT, B)], APDM),
    ],
)
def test_mapping_from_two_servers(
    answers: list[tuple[tuple[str, int], tuple[str, int]]], expected: MappingBehavior | None
) -> None:
    assert mapping_from_servers(answers) is expected


@pytest.mark.parametrize(
    ("mapped", "expected"),
    [([], None), ([A], None), ([A, A], False), ([A, A, B], True), ([A, D], True)],
)
def test_varies_by_destination(mapped: list[tuple[str, int]], expected: bool | None) -> None:
    assert varies_by_destination(mapped) is expected


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([], None),
        ([(40000, None)], None),
        ([(40000, A)], True),
        ([(40000, A), (40001, B)], True),
        ([(40000, A), (40001, C)], False),  # one socket's port was not kept
        ([(50000, A)], False),
        ([(40000, A), (40001, None)], True),  # an unanswered socket says nothing
    ],
)
def test_port_preserving(
    ports: list[tuple[int, tuple[str, int] | None]], expected: bool | None
) -> None:
    assert port_preserving(ports) is expected


def test_behind_nat_and_address_equality() -> None:
    assert behind_nat(("192.168.1.2", 40000), A) is True
    assert behind_nat(A, A) is False
    assert behind_nat(("198.51.100.9", 40001), A) is True  # same IP, other port: a NAT
    assert behind_nat(None, A) is None
    assert behind_nat(A, None) is None
    assert same_address(("::1", 5), ("0:0::1", 5))
    assert not same_address(("::1", 5), ("::1", 6))


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ([(5, True), (10, True), (15, False)], (10, 15)),
        ([(5, True), (10, True)], (10, None)),  # alive at the bound
        ([(5, False)], (0.0, 5)),
        ([(5, True), (10, None), (15, False)], (5, 15)),  # inconclusive trials ignored
        ([(5, True), (10, False), (15, True)], (5, 10)),  # a later survivor cannot raise it
        ([(5, None)], (0.0, None)),
        ([], (0.0, None)),
    ],
)
def test_lifetime_bounds(
    trials: list[tuple[float, bool | None]], expected: tuple[float, float | None]
) -> None:
    assert lifetime_bounds(trials) == expected


def test_idle_ladder() -> None:
    ladder = idle_ladder(120)
    assert ladder[:3] == (2.5, 5.0, 7.5)
    assert 30.0 in ladder
    assert ladder[23:] == (60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0)
    assert list(ladder) == sorted(set(ladder))
    assert idle_ladder(2)[-1] == 2.0


# Whole observation sets, as the mapping socket M, the filtering socket F, and the
# hairpinning sockets see them behind each kind of NAT (local 192.168.1.2).
LOCAL = ("192.168.1.2", 40000)


def observed(
    *,
    test1: tuple[str, int] | None = A,
    test2: tuple[str, int] | None = A,
    test3: tuple[str, int] | None = A,
    filtering: tuple[Outcome | None, Outcome | None] = (R, None),
    ports: tuple[tuple[int, tuple[str, int] | None], ...] = ((40000, A),),
    hairpin: bool | None = False,
    other: tuple[str, int] | None = ALT,
    local: tuple[str, int] | None = LOCAL,
) -> Observations:
    first = None if test1 is None else Answer(PRIMARY, mapped=test1, other=other)
    return Observations(
        local=local,
        servers=(ServerAnswer(PRIMARY, first),),
        rfc5780=PRIMARY if other is not None else None,
        mapping_test2=None if test2 is None else Answer(ALT_IP, mapped=test2),
        mapping_test3=None if test3 is None else Answer(ALT, mapped=test3),
        filtering_test1=Answer(PRIMARY, mapped=B, other=other),
        filtering_test2=filtering[0],
        filtering_test3=filtering[1],
        ports=ports,
        hairpin=hairpin,
    )


@pytest.mark.parametrize(
    ("name", "obs", "mapping", "filtering", "preserving", "hairpin"),
    [
        ("full cone", observed(), EIM, EIF, True, False),
        ("full cone, hairpin", observed(hairpin=True), EIM, EIF, True, True),
        ("address-restricted", observed(filtering=(N, R)), EIM, ADF, True, False),
        ("port-restricted", observed(filtering=(N, N)), EIM, APDF, True, False),
        (
            "symmetric, random ports",
            observed(
                test1=("198.51.100.9", 51111),
                test2=("198.51.100.9", 52222),
                test3=("198.51.100.9", 53333),
                filtering=(N, N),
                ports=((40000, ("198.51.100.9", 51111)), (40001, ("198.51.100.9", 54444))),
            ),
            APDM,
            APDF,
            False,
            False,
        ),
        ("address-dependent", observed(test2=B, test3=B, filtering=(N, N)), ADM, APDF, True, False),
        (
            "server without CHANGE-REQUEST support",
            observed(filtering=(U, U)),
            EIM,
            None,
            True,
            False,
        ),
    ],
)
def test_classify_nat_kinds(
    name: str,
    obs: Observations,
    mapping: MappingBehavior,
    filtering: FilteringBehavior | None,
    preserving: bool,
    hairpin: bool,
) -> None:
    verdict = classify(obs)
    assert verdict.udp
    assert verdict.behind_nat is True
    assert verdict.mapping is mapping, name
    assert verdict.mapping_test is MappingTest.RFC5780
    assert verdict.mapping_varies_by_destination is (mapping is not EIM)
    assert verdict.filtering is filtering, name
    assert verdict.port_preserving is preserving
    assert verdict.hairpinning is hairpin


def test_classify_udp_blocked() -> None:
    obs = Observations(local=LOCAL, servers=(ServerAnswer(PRIMARY, None),), ports=((40000, None),))
    assert classify(obs) == Verdict(udp=False)


def test_classify_no_nat_is_endpoint_independent_without_rfc5780() -> None:
    obs = Observations(local=A, servers=(ServerAnswer(PRIMARY, Answer(PRIMARY, mapped=A)),))
    verdict = classify(obs)
    assert verdict.behind_nat is False
    assert verdict.mapping is EIM
    assert verdict.mapping_test is MappingTest.NO_NAT
    assert verdict.filtering is None  # no RFC 5780 server: not tested


@pytest.mark.parametrize(("second", "expected", "varies"), [(A, EIM, False), (B, APDM, True)])
def test_classify_two_plain_servers(
    second: tuple[str, int], expected: MappingBehavior, varies: bool
) -> None:
    obs = Observations(
        local=LOCAL,
        servers=(
            ServerAnswer(PRIMARY, Answer(PRIMARY, mapped=A)),
            ServerAnswer(ALT, Answer(ALT, mapped=second)),
        ),
    )
    verdict = classify(obs)
    assert verdict.mapping is expected
    assert verdict.mapping_test is MappingTest.TWO_SERVERS
    assert verdict.mapping_varies_by_destination is varies
    assert verdict.mapped == A


def test_classify_uses_the_rfc5780_servers_test1() -> None:
    # The first server has no OTHER-ADDRESS; the second runs the RFC 5780 tests.
    obs = Observations(
        local=LOCAL,
        servers=(
            ServerAnswer(("192.0.2.1", 3478), Answer(("192.0.2.1", 3478), mapped=C)),
            ServerAnswer(PRIMARY, Answer(PRIMARY, mapped=A, other=ALT)),
        ),
        rfc5780=PRIMARY,
        mapping_test2=Answer(ALT_IP, mapped=A),
        filtering_test1=Answer(PRIMARY, mapped=B),
        filtering_test2=R,
    )
    verdict = classify(obs)
    assert verdict.mapped == A
    assert verdict.mapping is EIM  # RFC 5780 says so, although the other server saw C
    assert verdict.mapping_test is MappingTest.RFC5780
    assert verdict.mapping_varies_by_destination is True
    assert verdict.filtering is EIF


def test_classify_falls_back_to_two_servers_when_rfc5780_test2_is_lost() -> None:
    obs = Observations(
        local=LOCAL,
        servers=(
            ServerAnswer(PRIMARY, Answer(PRIMARY, mapped=A, other=ALT)),
            ServerAnswer(("192.0.2.1", 3478), Answer(("192.0.2.1", 3478), mapped=A)),
        ),
        rfc5780=PRIMARY,
    )
    verdict = classify(obs)
    assert verdict.mapping is EIM
    assert verdict.mapping_test is MappingTest.TWO_SERVERS
