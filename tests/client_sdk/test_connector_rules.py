"""The ids of a connection's punches (``<session>.<n>``): what the accepter reads back
from a punch request's id, whatever another client put there; and the connector's
limit on port-prediction sprays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.connect.connector import SPRAY_COOLDOWN, Connector, parse_punch_id, punch_id
from client_sdk.identity import Identity
from client_sdk.rendezvous.client import RendezvousClient


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        (punch_id("0123456789abcdef", 0), ("0123456789abcdef", 0)),
        (punch_id("0123456789abcdef", 3), ("0123456789abcdef", 3)),
        ("a.b.2", ("a.b", 2)),
        ("plain", ("plain", 0)),  # another client's id: a first punch
        (".5", (".5", 0)),
        ("x.", ("x.", 0)),
        ("x.-1", ("x.-1", 0)),
        ("x.1234567", ("x.1234567", 0)),  # not a count we would send
        ("x.²", ("x.²", 0)),  # a digit to str.isdigit, not to int(): refused
    ],
)
def test_punch_ids(message_id: str, expected: tuple[str, int]) -> None:
    assert parse_punch_id(message_id) == expected


@given(st.text(min_size=1, max_size=64))  # the server's bounds
def test_any_id_reads_as_a_session_and_a_count(message_id: str) -> None:
    session, number = parse_punch_id(message_id)
    assert session
    assert number >= 0
    if number:
        assert punch_id(session, number) == message_id


@given(st.text(min_size=1, max_size=40), st.integers(0, 999_999))
def test_what_we_send_reads_back(session: str, number: int) -> None:
    assert parse_punch_id(punch_id(session, number)) == (session, number)


async def test_one_spray_per_ip_per_cooldown() -> None:
    identity = Identity.generate()
    connector = Connector(identity, RendezvousClient("http://127.0.0.1:9", identity))
    assert connector._may_spray("198.51.100.1")
    assert not connector._may_spray("198.51.100.1")  # a lying peer cannot repeat it
    assert connector._may_spray("198.51.100.2")
    connector._sprayed["198.51.100.1"] -= SPRAY_COOLDOWN  # as if the cooldown had passed
    assert connector._may_spray("198.51.100.1")
    assert not connector._may_spray("198.51.100.1")
