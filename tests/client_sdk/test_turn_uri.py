"""``turn:``/``turns:`` URIs (RFC 7065) as the rendezvous hands them out, and the relay
candidates a peer sends: table cases, and hypothesis for anything else (never raises)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.connect.relay import TurnServer, parse_turn_uri, relay_targets, turn_servers
from client_sdk.rendezvous.http import Candidate


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("turn:203.0.113.1:3478?transport=udp", TurnServer("203.0.113.1", 3478, "udp")),
        ("turn:203.0.113.1:3478?transport=tcp", TurnServer("203.0.113.1", 3478, "tcp")),
        ("turn:relay.example", TurnServer("relay.example", 3478, "udp")),
        ("TURN:relay.example:80?transport=TCP", TurnServer("relay.example", 80, "tcp")),
        ("turns:relay.example", TurnServer("relay.example", 5349, "tcp", tls=True)),
        ("turns:relay.example:443?transport=tcp", TurnServer("relay.example", 443, "tcp", True)),
        ("turn:[2001:db8::1]:3478", TurnServer("2001:db8::1", 3478, "udp")),
        ("turn:[2001:db8::1]", TurnServer("2001:db8::1", 3478, "udp")),
    ],
)
def test_turn_uris(uri: str, expected: TurnServer) -> None:
    assert parse_turn_uri(uri) == expected
    assert parse_turn_uri(str(expected)) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "stun:203.0.113.1:3478",
        "turn:",
        "turn::3478",
        "turn:host:0",
        "turn:host:65536",
        "turn:host:x",
        "turn:host:3478?transport=sctp",
        "turns:host?transport=udp",  # TLS over UDP would be DTLS, not offered
        "turn:[2001:db8::1",
        "turn:[2001:db8::1]x",
        "http://host",
        "",
    ],
)
def test_what_is_not_a_turn_server(uri: str) -> None:
    assert parse_turn_uri(uri) is None


def test_servers_keep_their_order_udp_first_or_tcp_first() -> None:
    uris = [
        "stun:a:3478",
        "turn:a:3478?transport=tcp",
        "turn:a:3478?transport=udp",
        "turn:b:3478?transport=udp",
        "turn:a:3478?transport=udp",  # twice
    ]
    assert [str(s) for s in turn_servers(uris)] == [
        "turn:a:3478?transport=udp",
        "turn:b:3478?transport=udp",
        "turn:a:3478?transport=tcp",
    ]
    assert [s.transport for s in turn_servers(uris, udp_first=False)] == ["tcp", "udp", "udp"]


def test_relay_targets_are_the_usable_relay_candidates() -> None:
    candidates = [
        Candidate("203.0.113.1", 50000, "udp", "relay"),
        Candidate("203.0.113.1", 50000, "udp", "relay"),  # twice
        Candidate("10.0.0.2", 4000, "udp", "host"),
        Candidate("203.0.113.1", 50001, "tcp", "relay"),
        Candidate("2001:db8::1", 50002, "udp", "relay"),
        Candidate("224.0.0.1", 50003, "udp", "relay"),
        Candidate("203.0.113.2", 50004, "udp", "relay"),
    ]
    assert relay_targets(candidates) == (("203.0.113.1", 50000), ("203.0.113.2", 50004))


@given(st.text(max_size=80))
def test_any_text_parses_or_is_refused(uri: str) -> None:
    server = parse_turn_uri(uri)
    if server is not None:
        assert 0 < server.port < 65536
        assert server.host
        assert server.transport in ("udp", "tcp")
        assert parse_turn_uri(str(server)) == server


candidates = st.builds(
    Candidate,
    st.one_of(st.ip_addresses().map(str), st.text(max_size=20), st.integers()),
    st.one_of(st.integers(-5, 70000), st.text(max_size=5)),
    st.sampled_from(["udp", "tcp", "", "x"]),
    st.sampled_from(["relay", "host", "srflx", "prflx", "?"]),
)


@given(st.lists(st.one_of(candidates, st.none(), st.integers()), max_size=12))
def test_relay_targets_never_raise(found: list[object]) -> None:
    targets = relay_targets(found)
    assert len(targets) <= 4
    assert len(set(targets)) == len(targets)
    for ip, port in targets:
        assert isinstance(ip, str)
        assert 0 < port < 65536
