"""RESERVATION-TOKENs any worker can honour, and the kernel semantics they rely on."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.turn.reservation import ReservationTokens
from relay.turn.sockets import UdpRelayPorts

KEY = b"k" * 32


def test_token_round_trip_and_expiry() -> None:
    tokens = ReservationTokens(KEY)
    token = tokens.mint(socket.AF_INET, 50001, 1000.0)
    assert len(token) == 8
    assert tokens.verify(token, 1000.0) == (socket.AF_INET, 50001)
    assert tokens.verify(token, 1029.9) == (socket.AF_INET, 50001)
    assert tokens.verify(token, 1031.0) is None  # older than 30 s
    v6 = tokens.mint(socket.AF_INET6, 50003, 5.0)
    assert tokens.verify(v6, 6.0) == (socket.AF_INET6, 50003)
    # Another key (another deployment) does not accept it.
    assert ReservationTokens(b"x" * 32).verify(token, 1000.0) is None


def test_token_survives_the_15_bit_time_wrap() -> None:
    tokens = ReservationTokens(KEY)
    issued = 0x7FFF * 3 + 0x7FF0  # just before the low 15 bits wrap
    token = tokens.mint(socket.AF_INET, 40000, float(issued))
    assert tokens.verify(token, float(issued + 20)) == (socket.AF_INET, 40000)


@given(st.binary(min_size=0, max_size=12), st.floats(min_value=0, max_value=2**40))
def test_arbitrary_tokens_are_refused(token: bytes, now: float) -> None:
    assert ReservationTokens(KEY).verify(token, now) is None


@given(st.integers(0, 7), st.integers(0, 255))
def test_every_tampered_byte_is_refused(position: int, flip: int) -> None:
    tokens = ReservationTokens(KEY)
    token = bytearray(tokens.mint(socket.AF_INET, 50000, 100.0))
    token[position] ^= flip or 1
    assert tokens.verify(bytes(token), 100.0) is None


async def test_hold_in_one_worker_claim_in_another() -> None:
    """Two UdpRelayPorts stand for two worker processes: the holder receives nothing,
    the claim takes the port's traffic, and the port cannot be bound a second time."""
    loop = asyncio.get_running_loop()
    ips = {socket.AF_INET: ("127.0.0.1", "127.0.0.1")}
    first = UdpRelayPorts(loop, ips, min_port=42000, max_port=42999, time=loop.time)
    second = UdpRelayPorts(loop, ips, min_port=42000, max_port=42999, time=loop.time)
    received: list[bytes] = []

    def handle(relay: object, data: bytes, addr: object, now: float) -> None:
        received.append(data)

    second.serve(handle, lambda reply: None)
    port, holder = 0, None
    for candidate in range(42000, 43000):
        holder = first.hold(socket.AF_INET, candidate)
        if holder is not None:
            port = candidate
            break
    assert holder is not None
    try:
        assert first.bind(socket.AF_INET, port) is None  # an ordinary bind cannot take it
        relay = second.claim(socket.AF_INET, port)
        assert relay is not None
        assert second.claim(socket.AF_INET, port) is None  # good once
        assert first.claim(socket.AF_INET, port) is None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(20):
                peer.sendto(b"%d" % i, ("127.0.0.1", port))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(received) == 20:
                break
        assert len(received) == 20  # all of it reached the claimed socket
        holder.close()
        assert first.bind(socket.AF_INET, port) is None  # still the claimer's
        relay.close()
    finally:
        holder.close()


@pytest.mark.parametrize("family", [socket.AF_INET])
async def test_hold_outside_the_range_is_refused(family: socket.AddressFamily) -> None:
    loop = asyncio.get_running_loop()
    ports = UdpRelayPorts(
        loop, {family: ("127.0.0.1", "127.0.0.1")}, min_port=42000, max_port=42010, time=loop.time
    )
    assert ports.hold(family, 41999) is None
    assert ports.claim(family, 42011) is None
    assert ports.hold(socket.AF_INET6, 42001) is None  # no IPv6 relay address configured
