"""TURN ChannelData messages and STUN/ChannelData framing on TCP and TLS streams.

ChannelData (RFC 8656 §12.4)::

    0x4000-0x4FFF channel number (2) | length of the application data (2) | data | padding

* Channel numbers (RFC 8656 §12): 0x0000-0x3FFF can never be channels (the first two bits
  0b00 mark a STUN message), 0x4000-0x4FFF are the channels, 0x5000-0xFFFF are reserved
  (RFC 7983 demultiplexing: 0x8000+ is RTP/RTCP/DTLS/...). Reserved numbers are invalid
  here, as RFC 8656 §12.5 has the receiver discard them.
* The length field excludes the header and the padding (RFC 8656 §12.4).
* Over TCP and TLS the message MUST be padded to a multiple of 4 bytes; over UDP padding
  is optional ("MAY be included", RFC 8656 §12.4).
* A UDP datagram shorter than 4 + length is discarded (RFC 8656 §12.5). RFC 8656 says
  nothing about a longer one; padding only ever reaches the next multiple of 4
  (RFC 8656 §12.4), so bytes beyond that boundary cannot be padding and the datagram is
  rejected as malformed rather than silently truncated.

Stream framing (RFC 8656 §12.5, RFC 8489 §6.2.2): on a TCP/TLS connection STUN messages
and ChannelData messages follow each other with no other framing. Both carry their
length in bytes 2-3: a STUN message (first two bits 0b00) is 20 + length bytes, length a
multiple of 4 (RFC 8489 §5); a ChannelData message (0b01) is 4 + length rounded up to a
multiple of 4. First bits 0b10/0b11 or a reserved channel number cannot be resynchronised
on a stream: :class:`StreamFramer` raises :class:`~relay.stun.StunError` and the caller
closes the connection.

Every error is a :class:`~relay.stun.StunError` with a precise message.
"""

from __future__ import annotations

import struct
from typing import Final

from relay.stun import HEADER_LENGTH, MAX_BODY_LENGTH, StunError

__all__ = [
    "CHANNEL_DATA_HEADER_LENGTH",
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "LEGACY_CHANNEL_MAX",
    "MAX_CHANNEL_DATA_LENGTH",
    "MAX_FRAME_LENGTH",
    "StreamFramer",
    "channel_header",
    "encode_channel_data",
    "is_channel_data",
    "parse_channel_data",
]

#: RFC 8656 §12: the valid channel numbers.
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF
#: RFC 5766 §11 allowed channels up to 0x7FFF, and coturn's own clients still pick numbers
#: up to there; the relay accepts them unless told to be strict (``--no-legacy-channels``).
LEGACY_CHANNEL_MAX: Final = 0x7FFF
CHANNEL_DATA_HEADER_LENGTH: Final = 4
#: The 16-bit length field bounds the application data.
MAX_CHANNEL_DATA_LENGTH: Final = 0xFFFF
#: Largest frame on a stream: a STUN message with the largest body (a multiple of 4);
#: the largest padded ChannelData message (4 + 65535 + 1 = 65540) is smaller.
MAX_FRAME_LENGTH: Final = HEADER_LENGTH + MAX_BODY_LENGTH

_HEADER: Final = struct.Struct("!HH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


def _channel_problem(number: int) -> str:
    """Why the 16-bit ``number`` opening a message is not a valid channel number."""
    if number < CHANNEL_MIN:
        return f"0x{number:04x} has first two bits 0b00: a STUN message, not ChannelData"
    if number < 0x8000:
        return f"channel number 0x{number:04x} is reserved (RFC 8656 §12: 0x5000-0xFFFF)"
    return (
        f"first two bits 0b{number >> 14:02b} (0x{number:04x}) are neither STUN (0b00) "
        "nor ChannelData (0b01)"
    )


def is_channel_data(data: bytes) -> bool:
    """Cheap demultiplexing test: ``data`` starts with a valid channel number (RFC 7983)."""
    return len(data) >= 1 and 0x40 <= data[0] <= 0x4F


def channel_header(channel: int, length: int, *, channel_max: int = CHANNEL_MAX) -> bytes:
    """The 4-byte ChannelData header for ``length`` bytes of data (hot path)."""
    if not CHANNEL_MIN <= channel <= channel_max:
        raise StunError(f"channel number {channel:#06x} is outside 0x4000-{channel_max:#06x}")
    if not 0 <= length <= MAX_CHANNEL_DATA_LENGTH:
        raise StunError(f"ChannelData length {length} is outside 0-{MAX_CHANNEL_DATA_LENGTH}")
    return _pack_header(channel, length)


def encode_channel_data(
    channel: int, payload: bytes, *, pad: bool, channel_max: int = CHANNEL_MAX
) -> bytes:
    """A ChannelData message; ``pad=True`` (mandatory over TCP/TLS, RFC 8656 §12.4)
    appends zero bytes up to a multiple of 4."""
    header = channel_header(channel, len(payload), channel_max=channel_max)
    if pad and len(payload) & 3:
        return b"".join((header, payload, bytes(4 - (len(payload) & 3))))
    return header + payload


def parse_channel_data(data: bytes, *, channel_max: int = CHANNEL_MAX) -> tuple[int, bytes]:
    """(channel number, application data) of one ChannelData message; raises StunError.

    Accepts a UDP datagram with or without padding, and a padded message from
    :class:`StreamFramer`. The padding bytes are ignored, whatever their value.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise StunError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size < CHANNEL_DATA_HEADER_LENGTH:
        raise StunError(f"ChannelData is {size} bytes, shorter than the 4-byte header")
    channel, length = _unpack_header(data)
    if not CHANNEL_MIN <= channel <= channel_max:
        raise StunError(_channel_problem(channel))
    end = CHANNEL_DATA_HEADER_LENGTH + length
    if size < end:
        # RFC 8656 §12.5: shorter than 4 + length -> discard.
        raise StunError(f"ChannelData length {length} exceeds the {size - 4} bytes that follow")
    if size > (end + 3) & ~3:
        # RFC 8656 §12.4: padding only reaches the next multiple of 4.
        raise StunError(
            f"ChannelData of length {length} is followed by {size - end} bytes; "
            f"at most {-end & 3} bytes of padding may follow"
        )
    return channel, data[CHANNEL_DATA_HEADER_LENGTH:end]


def _frame_length(first: int, length: int, channel_max: int = CHANNEL_MAX) -> int:
    """Total bytes of the stream frame whose header holds ``first`` and ``length``."""
    if first < CHANNEL_MIN:
        if length & 3:
            # RFC 8489 §5: the last two bits of the STUN message length are always zero.
            raise StunError(f"STUN message length {length} is not a multiple of 4")
        return HEADER_LENGTH + length
    if first <= channel_max:
        # RFC 8656 §12.4: over TCP/TLS the message is padded to a multiple of 4.
        return (CHANNEL_DATA_HEADER_LENGTH + length + 3) & ~3
    raise StunError(_channel_problem(first))


class StreamFramer:
    """Splits a TURN TCP/TLS byte stream into STUN and ChannelData frames (sans-IO).

    :meth:`feed` returns the complete frames, each as ``bytes`` exactly as received
    (ChannelData with its padding: pass it to :func:`parse_channel_data`; STUN to
    :func:`relay.stun.parse`). Tell them apart by ``frame[0] < 0x40`` (STUN).
    Between calls at most one partial frame is buffered, so the buffer never exceeds
    ``MAX_FRAME_LENGTH - 1`` bytes; each byte is copied O(1) times. After a
    :class:`~relay.stun.StunError` the stream cannot be resynchronised: every later
    call raises again (frames completed earlier in the failing call are dropped with
    it), and the caller should close the connection.
    """

    __slots__ = ("_buffer", "_channel_max", "_error")

    def __init__(self, *, channel_max: int = CHANNEL_MAX) -> None:
        """``channel_max``: the highest channel number accepted (``LEGACY_CHANNEL_MAX``
        for RFC 5766 clients)."""
        self._buffer = bytearray()
        self._channel_max = channel_max
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for more data."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete, in order."""
        if self._error is not None:
            raise StunError(f"stream already failed: {self._error}")
        if not isinstance(data, bytes):
            data = bytes(data)
        buffer = self._buffer
        if not buffer:
            # Fast path: frame straight from ``data``; keep only the tail.
            frames, offset = self._split(data)
            if offset < len(data):
                buffer += data[offset:]
            return frames
        buffer += data
        with memoryview(buffer) as view:
            frames, offset = self._split(view)
        del buffer[:offset]  # the tail came with ``data``: linear overall
        return frames

    def _split(self, data: bytes | memoryview) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        offset = 0
        size = len(data)
        while offset < size:
            if data[offset] > self._channel_max >> 8:
                # Past the last channel whatever follows: fail at the first byte.
                number = data[offset] << 8
                if size - offset >= 2:
                    number |= data[offset + 1]
                self._error = _channel_problem(number)
                raise StunError(self._error)
            if size - offset < CHANNEL_DATA_HEADER_LENGTH:
                break
            first, length = _unpack_header(data, offset)
            try:
                total = _frame_length(first, length, self._channel_max)
            except StunError as exc:
                self._error = str(exc)
                raise
            if size - offset < total:
                break
            frame = data[offset : offset + total]
            frames.append(frame if isinstance(frame, bytes) else frame.tobytes())
            offset += total
        return frames, offset
