"""The netcheck report: its JSON keys are the documented ones, it round-trips, from_json
refuses what is not a report with a precise message, and the human table reads well."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk import NatReport as ExportedReport
from client_sdk import netcheck as exported_netcheck
from client_sdk.netcheck import (
    FilteringBehavior,
    LifetimeMethod,
    MappingBehavior,
    MappingLifetime,
    MappingTest,
    NatReport,
    NetcheckError,
    RelayLatency,
    StunServerResult,
    format_table,
    netcheck,
)

KEYS = [
    "version",
    "udp",
    "public_ipv4",
    "public_ipv6",
    "mapped_address",
    "behind_nat",
    "mapping",
    "mapping_test",
    "mapping_varies_by_destination",
    "filtering",
    "port_preserving",
    "hairpinning",
    "stun",
    "relays",
    "preferred_relay",
    "relays_error",
    "mapping_lifetime",
    "elapsed_ms",
]

FULL = NatReport(
    udp=True,
    public_ipv4="198.51.100.9",
    public_ipv6="2001:db8::9",
    mapped_address="198.51.100.9:40000",
    behind_nat=True,
    mapping=MappingBehavior.ENDPOINT_INDEPENDENT,
    mapping_test=MappingTest.RFC5780,
    mapping_varies_by_destination=False,
    filtering=FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT,
    port_preserving=True,
    hairpinning=False,
    stun=(
        StunServerResult(
            "203.0.113.1:3478", "203.0.113.1:3478", 12.5, "198.51.100.9:40000", "203.0.113.2:3479"
        ),
    ),
    relays=(
        RelayLatency("turn:203.0.113.1:3478?transport=udp", 12.0),
        RelayLatency("turns:relay.example:5349", None),
    ),
    preferred_relay="turn:203.0.113.1:3478?transport=udp",
    mapping_lifetime=MappingLifetime(LifetimeMethod.RESPONSE_PORT, 27.5, 30.0),
    elapsed_ms=812.5,
)


def test_the_sdk_exports_netcheck() -> None:
    assert exported_netcheck is netcheck
    assert ExportedReport is NatReport


def test_json_keys_and_values() -> None:
    data = json.loads(FULL.to_json())
    assert list(data) == KEYS
    assert data["version"] == 1
    assert data["mapping"] == "endpoint-independent"
    assert data["filtering"] == "address-and-port-dependent"
    assert data["stun"][0]["other_address"] == "203.0.113.2:3479"
    assert data["relays"][1] == {"uri": "turns:relay.example:5349", "latency_ms": None}
    assert data["mapping_lifetime"] == {
        "method": "response-port",
        "at_least_s": 27.5,
        "at_most_s": 30.0,
    }
    assert NatReport.from_json(FULL.to_json()) == FULL


def test_blocked_report_has_every_key_null() -> None:
    data = NatReport(udp=False).to_dict()
    assert list(data) == KEYS
    assert data["udp"] is False
    for key in ("public_ipv4", "mapping", "filtering", "port_preserving", "hairpinning"):
        assert data[key] is None
    assert NatReport.from_json(data) == NatReport(udp=False)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


text = st.text(max_size=20)
numbers = st.floats(min_value=0, max_value=1e6, allow_nan=False)
reports = st.builds(
    NatReport,
    udp=st.booleans(),
    public_ipv4=optional(text),
    public_ipv6=optional(text),
    mapped_address=optional(text),
    behind_nat=optional(st.booleans()),
    mapping=optional(st.sampled_from(MappingBehavior)),
    mapping_test=optional(st.sampled_from(MappingTest)),
    mapping_varies_by_destination=optional(st.booleans()),
    filtering=optional(st.sampled_from(FilteringBehavior)),
    port_preserving=optional(st.booleans()),
    hairpinning=optional(st.booleans()),
    stun=st.lists(
        st.builds(
            StunServerResult,
            text,
            optional(text),
            optional(numbers),
            optional(text),
            optional(text),
        ),
        max_size=3,
    ).map(tuple),
    relays=st.lists(st.builds(RelayLatency, text, optional(numbers)), max_size=3).map(tuple),
    preferred_relay=optional(text),
    relays_error=optional(text),
    mapping_lifetime=optional(
        st.builds(MappingLifetime, st.sampled_from(LifetimeMethod), numbers, optional(numbers))
    ),
    elapsed_ms=numbers,
)


@given(reports)
def test_json_round_trip(report: NatReport) -> None:
    assert NatReport.from_json(report.to_json()) == report
    assert NatReport.from_json(report.to_json(indent=None).encode()) == report


def test_from_json_ignores_keys_a_later_version_adds() -> None:
    data = FULL.to_dict()
    data["something_new"] = [1, 2]
    assert NatReport.from_json(data) == FULL


def broken(**changes: Any) -> dict[str, Any]:
    data = FULL.to_dict()
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "is JSON"),
        ("[]", "a JSON object"),
        (broken(version=2), "version 2 is not 1"),
        (broken(version=True), "report.version: expected int"),
        (broken(udp=KeyError), "missing key 'udp'"),
        (broken(udp=1), "report.udp: expected bool"),
        (broken(mapping="full-cone"), "report.mapping: 'full-cone' is not one of"),
        (broken(filtering=3), "report.filtering: expected str"),
        (broken(stun=[1]), r"report.stun\[0\]: expected an object"),
        (broken(stun=[{"server": "x"}]), r"report.stun\[0\]: missing key 'address'"),
        (broken(relays=[{"uri": "u", "latency_ms": "1"}]), "latency_ms: expected a number"),
        (broken(mapping_lifetime={"method": "x", "at_least_s": 1, "at_most_s": None}), "method"),
        (broken(elapsed_ms=True), "elapsed_ms: expected a number"),
    ],
)
def test_from_json_refuses_what_is_not_a_report(data: Any, message: str) -> None:
    with pytest.raises(NetcheckError, match=message):
        NatReport.from_json(data if isinstance(data, str) else json.dumps(data))


def test_table() -> None:
    table = format_table(FULL)
    lines = table.splitlines()
    assert lines[0].split() == ["UDP", "yes"]
    assert "198.51.100.9 (mapped 198.51.100.9:40000)" in table
    assert "endpoint-independent (rfc5780)" in table
    assert "address-and-port-dependent" in table
    assert "Hairpinning" in table
    assert "12.5 ms, RFC 5780 (other address 203.0.113.2:3479)" in table
    assert "12.0 ms  preferred" in table
    assert "27.5-30 s idle (response-port)" in table
    assert lines[-1].split() == ["Took", "0.81", "s"]
    # Values line up in one column.
    assert lines[0].index("yes") == lines[1].index("198.51.100.9") == lines[-1].index("0.81")


def test_table_when_udp_is_blocked() -> None:
    table = format_table(NatReport(udp=False, relays_error="rendezvous down"))
    assert "blocked" in table
    assert "Mapping" not in table
    assert "error: rendezvous down" in table
