"""ChannelData codec (RFC 8656 §12.4/§12.5) and STUN/ChannelData stream framing on TCP/TLS:
round trips, UDP vs TCP padding, every invalid case, and hypothesis properties."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.stun import MAGIC_COOKIE, Message, MessageClass, Method, StunError, parse
from relay.turn.framing import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    MAX_CHANNEL_DATA_LENGTH,
    MAX_FRAME_LENGTH,
    StreamFramer,
    channel_header,
    encode_channel_data,
    is_channel_data,
    parse_channel_data,
)


def _stun(body: bytes = b"", tid: bytes = b"0123456789ab") -> bytes:
    """A raw STUN frame: Binding request header + ``body`` (length a multiple of 4)."""
    return struct.pack("!HHI", 0x0001, len(body), MAGIC_COOKIE) + tid + body


# --- channel_header / encode ----------------------------------------------------------


def test_channel_header() -> None:
    assert channel_header(0x4000, 0) == b"\x40\x00\x00\x00"
    assert channel_header(0x4FFF, 0xFFFF) == b"\x4f\xff\xff\xff"
    assert channel_header(0x4123, 5) == b"\x41\x23\x00\x05"


@pytest.mark.parametrize("channel", [0, 0x3FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF, -1, 0x10000])
def test_channel_header_rejects_bad_channel(channel: int) -> None:
    with pytest.raises(StunError, match="channel number"):
        channel_header(channel, 0)


@pytest.mark.parametrize("length", [-1, 0x10000])
def test_channel_header_rejects_bad_length(length: int) -> None:
    with pytest.raises(StunError, match="length"):
        channel_header(0x4000, length)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 1000, MAX_CHANNEL_DATA_LENGTH])
def test_encode_padding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    unpadded = encode_channel_data(0x4001, payload, pad=False)
    padded = encode_channel_data(0x4001, payload, pad=True)
    assert unpadded == b"\x40\x01" + size.to_bytes(2, "big") + payload
    assert len(padded) % 4 == 0
    assert len(padded) - len(unpadded) == -(4 + size) % 4
    assert padded.startswith(unpadded)
    assert set(padded[len(unpadded) :]) <= {0}
    assert parse_channel_data(unpadded) == (0x4001, payload)
    assert parse_channel_data(padded) == (0x4001, payload)


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(StunError, match="length 65536"):
        encode_channel_data(0x4000, bytes(0x10000), pad=True)


def test_is_channel_data() -> None:
    assert is_channel_data(b"\x40\x00\x00\x00")
    assert is_channel_data(b"\x4f")
    assert not is_channel_data(b"")
    assert not is_channel_data(b"\x00\x01")
    assert not is_channel_data(b"\x50\x00\x00\x00")
    assert not is_channel_data(b"\x80\x00")


# --- parse_channel_data ---------------------------------------------------------------


def test_parse_udp_padding_is_optional() -> None:
    # length 5: 9 bytes unpadded, up to 12 with padding; padding content is ignored.
    message = b"\x40\x00\x00\x05hello"
    assert parse_channel_data(message) == (0x4000, b"hello")
    for extra in (b"\x00", b"\x00\x00", b"\xff\xfe\xfd"):
        assert parse_channel_data(message + extra) == (0x4000, b"hello")


def test_parse_accepts_other_bytes_like() -> None:
    message = b"\x40\x00\x00\x02hi"
    assert parse_channel_data(bytearray(message)) == (0x4000, b"hi")  # type: ignore[arg-type]
    assert parse_channel_data(memoryview(message)) == (0x4000, b"hi")  # type: ignore[arg-type]


def test_parse_empty_payload() -> None:
    assert parse_channel_data(b"\x4f\xff\x00\x00") == (0x4FFF, b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 4-byte header"),
        (b"\x40\x00\x00", "shorter than the 4-byte header"),
        (b"\x40\x00\x00\x05hell", "length 5 exceeds the 4 bytes"),  # RFC 8656 §12.5
        (b"\x40\x00\xff\xff", "length 65535 exceeds the 0 bytes"),
        (b"\x40\x00\x00\x05hello\x00\x00\x00\x00", "at most 3 bytes of padding"),
        (b"\x40\x00\x00\x04abcd\x00", "at most 0 bytes of padding"),
        (b"\x40\x00\x00\x00\x00", "at most 0 bytes of padding"),
        (b"\x40\x00\x00\x03abc\x00\x00", "at most 1 bytes of padding"),
        (b"\x3f\xff\x00\x00", "STUN message, not ChannelData"),
        (_stun(), "STUN message, not ChannelData"),
        (b"\x50\x00\x00\x00", "0x5000 is reserved"),
        (b"\x7f\xff\x00\x00", "0x7fff is reserved"),
        (b"\x80\x00\x00\x00", "first two bits 0b10"),
        (b"\xff\xff\x00\x00", "first two bits 0b11"),
    ],
)
def test_parse_invalid(data: bytes, message: str) -> None:
    with pytest.raises(StunError, match=message):
        parse_channel_data(data)


@pytest.mark.parametrize("value", [None, "abcd", 1234, [0x40, 0, 0, 0]])
def test_parse_rejects_non_bytes(value: object) -> None:
    with pytest.raises(StunError, match="expected bytes"):
        parse_channel_data(value)  # type: ignore[arg-type]


@given(st.binary(max_size=80))
def test_parse_arbitrary_raises_only_stun_error(data: bytes) -> None:
    try:
        channel, payload = parse_channel_data(data)
    except StunError:
        return
    assert CHANNEL_MIN <= channel <= CHANNEL_MAX
    assert data[4:].startswith(payload)
    assert len(data) - 4 - len(payload) <= 3


@given(
    st.integers(CHANNEL_MIN, CHANNEL_MAX),
    st.binary(max_size=300),
    st.booleans(),
)
def test_channel_data_round_trip(channel: int, payload: bytes, pad: bool) -> None:
    wire = encode_channel_data(channel, payload, pad=pad)
    assert parse_channel_data(wire) == (channel, payload)
    assert is_channel_data(wire)
    assert wire[:4] == channel_header(channel, len(payload))


# --- StreamFramer ---------------------------------------------------------------------


def test_framer_splits_mixed_stream() -> None:
    stun = Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12), ()).encode(
        fingerprint=True
    )
    cd1 = encode_channel_data(0x4000, b"abcde", pad=True)
    cd2 = encode_channel_data(0x4001, b"", pad=True)
    cd3 = encode_channel_data(0x4FFF, b"wxyz", pad=True)
    framer = StreamFramer()
    assert framer.feed(stun + cd1 + cd2 + cd3) == [stun, cd1, cd2, cd3]
    assert framer.buffered == 0
    assert parse(stun).transaction_id == stun[8:20]
    assert parse_channel_data(cd1) == (0x4000, b"abcde")


def test_framer_byte_by_byte() -> None:
    frames = [_stun(b"\x00" * 8), encode_channel_data(0x4002, b"xyz", pad=True), _stun()]
    stream = b"".join(frames)
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
        assert framer.buffered < MAX_FRAME_LENGTH
    assert out == frames
    assert framer.buffered == 0


def test_framer_buffers_partial_frames() -> None:
    framer = StreamFramer()
    cd = encode_channel_data(0x4000, b"12345", pad=True)  # 12 bytes
    assert framer.feed(cd[:3]) == []
    assert framer.buffered == 3
    assert framer.feed(cd[3:9]) == []
    assert framer.feed(cd[9:] + cd[:1]) == [cd]
    assert framer.buffered == 1
    assert framer.feed(cd[1:]) == [cd]
    assert framer.feed(b"") == []


def test_framer_largest_frames() -> None:
    big_stun = _stun(b"\x00" * 0xFFFC)
    big_cd = encode_channel_data(0x4000, b"\x01" * 0xFFFF, pad=True)
    assert len(big_stun) == MAX_FRAME_LENGTH
    assert len(big_cd) == 4 + 0xFFFF + 1
    framer = StreamFramer()
    stream = big_stun + big_cd
    out: list[bytes] = []
    for i in range(0, len(stream), 1000):
        out += framer.feed(stream[i : i + 1000])
        assert framer.buffered < MAX_FRAME_LENGTH
    assert out == [big_stun, big_cd]


def test_framer_accepts_bytearray_and_memoryview() -> None:
    cd = encode_channel_data(0x4000, b"ab", pad=True)
    framer = StreamFramer()
    assert framer.feed(bytearray(cd)) == [cd]  # type: ignore[arg-type]
    assert framer.feed(memoryview(cd)) == [cd]  # type: ignore[arg-type]
    assert all(type(f) is bytes for f in framer.feed(cd + cd[:2]) + framer.feed(cd[2:]))


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (b"\x80", "first two bits 0b10"),
        (b"\xc0\x00\x00\x00", "first two bits 0b11"),
        (b"\x16\x03\x01\x02\x00", "not a multiple of 4"),  # a TLS ClientHello on plain TCP
        (b"\x50", "0x5000 is reserved"),
        (b"\x5a\xbc", "0x5abc is reserved"),
        (b"\x7f\xff\x00\x04", "0x7fff is reserved"),
        (b"\x00\x01\x00\x05", "STUN message length 5 is not a multiple of 4"),
        (b"POST / HTTP/1.1\r\n", "0x504f is reserved"),
    ],
)
def test_framer_protocol_errors(prefix: bytes, message: str) -> None:
    framer = StreamFramer()
    with pytest.raises(StunError, match=message):
        framer.feed(prefix)
    with pytest.raises(StunError, match="already failed"):
        framer.feed(_stun())


def test_framer_error_after_valid_frames_and_partial_buffer() -> None:
    framer = StreamFramer()
    cd = encode_channel_data(0x4000, b"abc", pad=True)
    assert framer.feed(cd + cd[:2]) == [cd]
    with pytest.raises(StunError, match="reserved"):
        framer.feed(cd[2:] + b"\x60\x00\x00\x00")
    with pytest.raises(StunError, match="already failed"):
        framer.feed(b"")


def test_framer_does_not_check_stun_contents() -> None:
    # The framer only delimits; relay.stun.parse validates the cookie and attributes.
    frame = struct.pack("!HHI", 0x0001, 4, 0xDEADBEEF) + b"x" * 12 + b"\x00\x00\x00\x00"
    assert StreamFramer().feed(frame) == [frame]
    with pytest.raises(StunError):
        parse(frame)


def test_framer_is_linear_on_many_small_frames() -> None:
    cd = encode_channel_data(0x4000, b"", pad=True)
    stream = cd * 50_000
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(stream), 4099):
        out += framer.feed(stream[i : i + 4099])
    assert len(out) == 50_000


# --- hypothesis properties ------------------------------------------------------------

stun_frames = st.builds(
    lambda words, tid: _stun(words, tid),
    st.binary(max_size=64).map(lambda b: b + bytes(-len(b) % 4)),
    st.binary(min_size=12, max_size=12),
)
channel_frames = st.builds(
    lambda channel, payload: encode_channel_data(channel, payload, pad=True),
    st.integers(CHANNEL_MIN, CHANNEL_MAX),
    st.binary(max_size=70),
)


@settings(max_examples=300)
@given(st.lists(st.one_of(stun_frames, channel_frames), max_size=12), st.data())
def test_split_stream_comes_out_identical(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) // 2 + 2)))
    framer = StreamFramer()
    out: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[start:cut])
        start = cut
    assert out == frames
    assert framer.buffered == 0


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_arbitrary_bytes_frame_or_raise_stun_error(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    received = b"".join(chunks)
    out: list[bytes] = []
    try:
        for chunk in chunks:
            out += framer.feed(chunk)
    except StunError:
        return
    consumed = b"".join(out)
    assert received.startswith(consumed)
    assert len(received) - len(consumed) == framer.buffered
    for frame in out:
        if frame[0] < 0x40:
            assert len(frame) == 20 + int.from_bytes(frame[2:4], "big")
        else:
            channel, _payload = parse_channel_data(frame)
            assert CHANNEL_MIN <= channel <= CHANNEL_MAX
            assert len(frame) % 4 == 0


def test_framer_http_get_is_indistinguishable_from_channel_data() -> None:
    # "GE" = 0x4745 is a valid channel number: the framer waits for 0x5420 bytes of data;
    # the caller's idle/size limits, not the framer, end such a connection.
    framer = StreamFramer()
    assert framer.feed(b"GET / HTTP/1.1\r\n") == []
    assert framer.buffered == 16
