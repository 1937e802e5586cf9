"""RFC 6455 framing (``rendezvous.signaling.frames``): what aiohttp's client writer
sends is read back, fragments are reassembled around control frames, every rule of §5
is enforced with the RFC's close code, and arbitrary bytes only ever raise
``FrameError``."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from aiohttp.http_websocket import WebSocketWriter
from hypothesis import given, settings
from hypothesis import strategies as st

from rendezvous.signaling import frames
from rendezvous.signaling.frames import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    FrameError,
    FrameReader,
    Message,
    Opcode,
    accept_key,
    close_payload,
    frame,
    frame_header,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame built by hand (the test's own encoder, independent of frames.py)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, (0x80 if mask else 0) | size))
    elif size < 65536:
        head = bytes((first, (0x80 if mask else 0) | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_rfc_6455_handshake_example() -> None:
    # §1.3's example key and answer.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    with pytest.raises(FrameError, match="16 bytes"):
        accept_key(base64.b64encode(b"short").decode())
    with pytest.raises(FrameError, match="not base64"):
        accept_key("not base64!")


class Capture(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
async def test_reads_what_aiohttps_client_writer_sends(size: int) -> None:
    transport = Capture()
    writer = WebSocketWriter(None, transport, use_mask=True)  # type: ignore[arg-type]
    text = ("é" * size)[: size // 2] or "x"
    await writer.send_frame(text.encode(), 0x1)
    await writer.send_frame(b"\x00\x01" * (size // 2), 0x2)
    await writer.send_frame(b"ping!", 0x9)
    reader = FrameReader(max_message=200_000)
    messages = reader.feed(bytes(transport.data[:7])) + reader.feed(bytes(transport.data[7:]))
    assert messages == [
        Message(Opcode.TEXT, text.encode()),
        Message(Opcode.BINARY, b"\x00\x01" * (size // 2)),
        Message(Opcode.PING, b"ping!"),
    ]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.binary(max_size=20))
def test_fragments_are_reassembled_around_control_frames(parts: list[bytes], ping: bytes) -> None:
    stream = b""
    for i, part in enumerate(parts):
        opcode = Opcode.BINARY if i == 0 else Opcode.CONTINUATION
        stream += client_frame(opcode, part, fin=i == len(parts) - 1)
        if i == 0:
            stream += client_frame(Opcode.PING, ping)  # allowed between fragments (§5.4)
    reader = FrameReader()
    got: list[Message] = []
    for k in range(0, len(stream), 7):  # arrives in small pieces
        got += reader.feed(stream[k : k + 7])
    whole = Message(Opcode.BINARY, b"".join(parts))
    ping_message = Message(Opcode.PING, ping)
    # The ping follows the first frame: before the message unless that frame ended it.
    assert got == ([whole, ping_message] if len(parts) == 1 else [ping_message, whole])


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (client_frame(0x1, b"hi", mask=False), CLOSE_PROTOCOL_ERROR, "must be masked"),
        (bytes((0x81 | 0x40, 0x80)) + bytes(4), CLOSE_PROTOCOL_ERROR, "RSV"),
        (client_frame(0x3, b""), CLOSE_PROTOCOL_ERROR, "reserved opcode"),
        (client_frame(0x9, b"x" * 126), CLOSE_PROTOCOL_ERROR, "control frame"),
        (client_frame(0x9, b"x", fin=False), CLOSE_PROTOCOL_ERROR, "control frame"),
        (client_frame(0x0, b"x"), CLOSE_PROTOCOL_ERROR, "nothing to continue"),
        (
            client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"),
            CLOSE_PROTOCOL_ERROR,
            "inside a fragmented",
        ),
        (bytes((0x82, 0xFF)) + (2**63).to_bytes(8, "big"), CLOSE_PROTOCOL_ERROR, "top bit"),
        (client_frame(0x2, b"x" * 1025), CLOSE_TOO_BIG, "at most 1024"),
        (
            client_frame(0x2, b"x" * 600, fin=False) + client_frame(0x0, b"x" * 600),
            CLOSE_TOO_BIG,
            "at most 1024",
        ),
        (client_frame(0x1, b"\xff"), CLOSE_INVALID_DATA, "not UTF-8"),
        (client_frame(0x8, b"\x03"), CLOSE_PROTOCOL_ERROR, "2 bytes"),
        (client_frame(0x8, (1005).to_bytes(2, "big")), CLOSE_PROTOCOL_ERROR, "may not be sent"),
        (client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), CLOSE_INVALID_DATA, "UTF-8"),
    ],
)
def test_violations_get_the_rfc_close_code(data: bytes, code: int, message: str) -> None:
    with pytest.raises(FrameError, match=message) as raised:
        FrameReader(max_message=1024).feed(data)
    assert raised.value.code == code


def test_a_too_big_frame_is_refused_before_it_arrives() -> None:
    header = bytes((0x82, 0xFF)) + (10**9).to_bytes(8, "big")
    with pytest.raises(FrameError) as raised:
        FrameReader().feed(header)  # no payload yet: the length alone decides
    assert raised.value.code == CLOSE_TOO_BIG


def test_server_frames() -> None:
    assert frame(Opcode.TEXT, b"hi") == b"\x81\x02hi"
    assert frame_header(Opcode.TEXT, 300) == b"\x81\x7e\x01\x2c"
    assert frame_header(Opcode.BINARY, 70000, fin=False) == b"\x02\x7f" + (70000).to_bytes(8, "big")
    assert frame(Opcode.CLOSE, close_payload(1001, "bye")) == b"\x88\x05\x03\xe9bye"
    with pytest.raises(ValueError, match="control frame"):
        frame(Opcode.PING, b"x" * 126)


def feed_all(chunks: list[bytes]) -> int | None:
    """The close code the chunks end in, or None when they parse."""
    reader = FrameReader(max_message=512)
    try:
        for chunk in chunks:
            for message in reader.feed(chunk):
                assert message.opcode != Opcode.CONTINUATION
    except FrameError as exc:
        return exc.code
    return None


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_any_bytes_give_messages_or_a_frame_error(chunks: list[bytes]) -> None:
    assert feed_all(chunks) in (None, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG)


client_frames = st.lists(
    st.builds(
        client_frame,
        st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
        st.binary(max_size=200),
        fin=st.booleans(),
    ),
    max_size=6,
)


@settings(max_examples=300)
@given(client_frames, st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_client_streams_give_messages_or_a_frame_error(
    frames: list[bytes], where: int, value: int
) -> None:
    stream = bytearray(b"".join(frames))
    if stream:
        stream[where % len(stream)] = value
    chunks = [bytes(stream[i : i + 13]) for i in range(0, len(stream), 13)]
    assert feed_all(chunks) in (None, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG)


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_both_unmaskings_agree(payload: bytes, mask: bytes) -> None:
    """The compiled masking the reader uses is the RFC's XOR (§5.3), as the pure one is."""
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert frames._unmask_int(payload, mask) == expected
    assert frames._unmask_c(bytearray(payload), mask) == expected
