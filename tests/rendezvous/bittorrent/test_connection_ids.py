"""Stateless BEP 15 connection ids: lifetime boundaries, binding to secret and address."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.bittorrent import ConnectionIds, TrackerError
from rendezvous.bittorrent.connection_ids import _CACHE_SIZE, SocketAddress

SECRET = b"0123456789abcdef0123456789abcdef"
CLIENT = ("192.0.2.7", 6881)
LIFETIME = 120.0


@pytest.fixture
def ids() -> ConnectionIds:
    return ConnectionIds(SECRET, LIFETIME)


def test_id_is_a_deterministic_64_bit_integer(ids: ConnectionIds) -> None:
    connection_id = ids.issue(CLIENT, 1000.0)
    assert 0 <= connection_id < 2**64
    assert ids.issue(CLIENT, 1000.0) == connection_id
    assert ids.issue(CLIENT, 1079.0) == connection_id  # same slot [960, 1080)
    assert ids.issue(CLIENT, 1080.0) != connection_id  # next slot
    assert ConnectionIds(SECRET, LIFETIME).issue(CLIENT, 1000.0) == connection_id
    assert ids.lifetime == LIFETIME


def test_layout_slot_byte_above_a_56_bit_mac(ids: ConnectionIds) -> None:
    assert ids.issue(CLIENT, 1000.0) >> 56 == 8  # slot floor(1000 / 120)
    assert ids.issue(CLIENT, 300 * LIFETIME) >> 56 == 300 % 256
    # The low 56 bits are MAC output: they differ between slots and between clients.
    low = {ids.issue(CLIENT, slot * LIFETIME) & (2**56 - 1) for slot in range(50)}
    low |= {ids.issue((f"192.0.2.{n}", 6881), 0.0) & (2**56 - 1) for n in range(8, 58)}
    assert len(low) == 100


def test_default_lifetime_is_two_minutes() -> None:
    assert ConnectionIds(SECRET).lifetime == 120.0


# Issued at t = 1000 (slot 8 = [960, 1080)): accepted through slot 9 = [1080, 1200).
@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (1000.0, True),
        (1079.999, True),
        (1120.0, True),  # exactly `lifetime` after issue: always accepted
        (1199.999, True),  # end of the next slot
        (1200.0, False),  # slot 10: too old
        (1240.0, False),  # exactly 2 * lifetime after issue: never accepted
        (959.999, False),  # before the slot it was issued in (clock went backwards)
        (960.0, True),
    ],
)
def test_lifetime_boundaries(ids: ConnectionIds, now: float, accepted: bool) -> None:
    assert ids.valid(ids.issue(CLIENT, 1000.0), CLIENT, now) is accepted


def test_issued_at_the_start_of_a_slot(ids: ConnectionIds) -> None:
    connection_id = ids.issue(CLIENT, 960.0)
    assert ids.valid(connection_id, CLIENT, 960.0 + LIFETIME)
    assert ids.valid(connection_id, CLIENT, 960.0 + 2 * LIFETIME - 0.001)
    assert not ids.valid(connection_id, CLIENT, 960.0 + 2 * LIFETIME)


def test_issued_at_the_end_of_a_slot(ids: ConnectionIds) -> None:
    issued = 1080.0 - 0.5
    connection_id = ids.issue(CLIENT, issued)
    assert ids.valid(connection_id, CLIENT, issued + LIFETIME)
    assert not ids.valid(connection_id, CLIENT, issued + LIFETIME + 0.5)


@pytest.mark.parametrize("slots_later", [2, 3, 255, 256, 257, 512, 513])
def test_old_ids_do_not_come_back(ids: ConnectionIds, slots_later: int) -> None:
    # 256 and 257 slots later the 8 slot bits match again; the MAC must still refuse.
    connection_id = ids.issue(CLIENT, 1000.0)
    assert not ids.valid(connection_id, CLIENT, 1000.0 + slots_later * LIFETIME)


def test_bound_to_secret_and_ip(ids: ConnectionIds) -> None:
    connection_id = ids.issue(CLIENT, 1000.0)
    other_secret = ConnectionIds(b"another secret of 32 bytes......", LIFETIME)
    assert not other_secret.valid(connection_id, CLIENT, 1000.0)
    assert other_secret.issue(CLIENT, 1000.0) != connection_id
    assert not ids.valid(connection_id, ("192.0.2.8", 6881), 1000.0)
    # The same IP from another port is the same client (libtorrent shares ids between
    # its sockets; NATs move ports).
    assert ids.valid(connection_id, ("192.0.2.7", 6882), 1000.0)
    assert not ids.valid(connection_id, ("::ffff:192.0.2.8", 6881), 1000.0)


def test_ipv6_and_ipv4_mapped_addresses(ids: ConnectionIds) -> None:
    address: SocketAddress = ("2001:db8::7", 6881, 0, 0)  # as an AF_INET6 socket reports it
    connection_id = ids.issue(address, 1000.0)
    assert ids.valid(connection_id, ("2001:db8::7", 6881), 1000.0)
    assert not ids.valid(connection_id, ("2001:db8::8", 6881), 1000.0)
    # A dual-stack socket reports IPv4 clients as IPv4-mapped addresses: same client.
    assert ids.valid(ids.issue(CLIENT, 1000.0), ("::ffff:192.0.2.7", 6881), 1000.0)


def test_out_of_range_ids_are_invalid(ids: ConnectionIds) -> None:
    assert not ids.valid(-1, CLIENT, 1000.0)
    assert not ids.valid(2**64, CLIENT, 1000.0)
    assert not ids.valid(ids.issue(CLIENT, 1000.0) + 2**64, CLIENT, 1000.0)


@given(st.integers(0, 63))
def test_any_flipped_bit_is_rejected(bit: int) -> None:
    ids = ConnectionIds(SECRET, LIFETIME)
    connection_id = ids.issue(CLIENT, 1000.0)
    assert not ids.valid(connection_id ^ (1 << bit), CLIENT, 1000.0)


# Integer issue times and an integer lifetime keep the arithmetic exact, so the
# properties are tested exactly at their boundaries.
@given(
    issued=st.integers(0, 10**9),
    age=st.floats(0, 1),
    lifetime=st.integers(1, 3600),
    port=st.integers(0, 0xFFFF),
)
def test_accepted_for_at_least_lifetime(issued: int, age: float, lifetime: int, port: int) -> None:
    ids = ConnectionIds(SECRET, lifetime)
    address = ("198.51.100.1", port)
    assert ids.valid(ids.issue(address, issued), address, issued + age * lifetime)


@given(issued=st.integers(0, 10**9), extra=st.integers(0, 10**6), lifetime=st.integers(1, 3600))
def test_never_accepted_after_twice_lifetime(issued: int, extra: int, lifetime: int) -> None:
    ids = ConnectionIds(SECRET, lifetime)
    connection_id = ids.issue(CLIENT, issued)
    assert not ids.valid(connection_id, CLIENT, issued + 2 * lifetime + extra)


def test_repr_hides_the_secret(ids: ConnectionIds) -> None:
    assert repr(ids) == "ConnectionIds(lifetime=120.0)"
    assert "0123" not in repr(ids)


@pytest.mark.parametrize(
    ("secret", "lifetime", "message"),
    [
        (b"short", 120.0, r"^secret must be at least 16 bytes, got 5$"),
        (SECRET, 0.0, r"^lifetime must be a positive number of seconds, got 0.0$"),
        (SECRET, -1.0, r"^lifetime must be a positive number of seconds, got -1.0$"),
        (SECRET, float("nan"), r"^lifetime must be a positive number of seconds, got nan$"),
        (SECRET, float("inf"), r"^lifetime must be a positive number of seconds, got inf$"),
    ],
)
def test_constructor_rejects(secret: bytes, lifetime: float, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        ConnectionIds(secret, lifetime)


def test_bad_arguments(ids: ConnectionIds) -> None:
    with pytest.raises(TrackerError, match=r"^now must be a finite time, got nan$"):
        ids.issue(CLIENT, float("nan"))
    with pytest.raises(TrackerError, match=r"^now must be a finite time, got inf$"):
        ids.valid(0, CLIENT, float("inf"))
    with pytest.raises(TrackerError, match=r"^now 1e\+300 is out of range for a lifetime of"):
        ids.issue(CLIENT, 1e300)
    with pytest.raises(TrackerError, match=r"^address ip must be an IP address, got 'localhost'$"):
        ids.issue(("localhost", 1), 0.0)
    with pytest.raises(TrackerError, match=r"^address port must be in 0..65535, got 65536$"):
        ids.issue(("127.0.0.1", 65536), 0.0)


def test_the_id_cache_stays_bounded_and_ids_stay_right() -> None:
    ids = ConnectionIds(b"k" * 32)
    first = ids.issue(("10.0.0.1", 1), 1000.0)
    for n in range(_CACHE_SIZE + 10):
        ids.issue((f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1), 1000.0)
    assert len(ids._cache) <= _CACHE_SIZE
    assert ids.valid(first, ("10.0.0.1", 9), 1000.0)  # recomputed after the clear
    assert first == ConnectionIds(b"k" * 32).issue(("10.0.0.1", 1), 1000.0)
