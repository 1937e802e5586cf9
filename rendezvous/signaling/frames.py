"""WebSocket frames (RFC 6455 §5), sans-IO: the server side of the framing.

``FrameReader.feed(data)`` takes bytes from a client as they come and returns the
messages they complete -- data messages reassembled from their fragments, control frames
as they arrive -- or raises ``FrameError`` with the close code the RFC names for the
fault. ``frame(opcode, payload)`` encodes what a server sends (unmasked, §5.1), and
``accept_key`` answers an opening handshake's ``Sec-WebSocket-Key`` (§4.2.2).

What a client must do and this enforces (no extensions are negotiated):

* every client frame is masked (§5.1: else close 1002);
* the RSV bits are 0 (§5.2), the opcode is known (§5.2: 3-7 and 0xB-0xF are reserved);
* control frames are not fragmented and carry at most 125 bytes (§5.5);
* a continuation follows an unfinished data frame, and a new data frame does not
  interrupt one (§5.4);
* a 64-bit length has its most significant bit 0 (§5.2);
* a message is at most ``max_message`` bytes (else 1009, §7.4.1);
* a text message is UTF-8 (§8.1: else 1007), and so is a close frame's reason (§5.5.1).
"""

from __future__ import annotations

import base64
import hashlib
from enum import IntEnum
from struct import Struct
from typing import Final, NamedTuple

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "FrameError",
    "FrameReader",
    "Message",
    "Opcode",
    "accept_key",
    "close_payload",
    "frame",
    "frame_header",
]

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009
MAX_CONTROL: Final = 125
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # §1.3
_U16: Final = Struct("!H")
_U64: Final = Struct("!Q")
_LEN16: Final = Struct("!BBH")
_LEN64: Final = Struct("!BBQ")


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_OPCODES: Final = {op.value: op for op in Opcode}


class FrameError(Exception):
    """A client broke the framing; ``code`` is the close code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Message(NamedTuple):
    opcode: Opcode  # TEXT, BINARY, CLOSE, PING or PONG
    payload: bytes


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (§4.2.2: base64 of
    the SHA-1 of the key and the protocol's GUID). The key must be base64 of 16 bytes."""
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise FrameError(CLOSE_PROTOCOL_ERROR, "Sec-WebSocket-Key is not base64") from None
    if len(raw) != 16:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "Sec-WebSocket-Key must encode 16 bytes")
    digest = hashlib.sha1(key.encode("ascii") + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def frame_header(opcode: Opcode, size: int, *, fin: bool = True) -> bytes:
    """The header of an unmasked (server-to-client) frame of ``size`` payload bytes."""
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return _LEN16.pack(first, 126, size)
    return _LEN64.pack(first, 127, size)


def frame(opcode: Opcode, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """An unmasked frame; control frames must fit in 125 bytes (§5.5)."""
    if opcode >= Opcode.CLOSE and (len(payload) > MAX_CONTROL or not fin):
        raise ValueError(f"a control frame carries at most {MAX_CONTROL} bytes, unfragmented")
    return frame_header(opcode, len(payload), fin=fin) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    data = _U16.pack(code) + reason.encode()
    return data[:MAX_CONTROL]


def _unmask_int(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR with the 4-byte mask (§5.3), as one big-integer operation (no Python step per
    byte)."""
    size = len(payload)
    if not size:
        return b""
    repeats = mask * (size // 4 + 1)
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeats[:size], "big")
    return value.to_bytes(size, "big")


def _unmask_c(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``_unmask_int`` with aiohttp's compiled masking (it masks what its writer sends)."""
    data = bytearray(payload)
    _websocket_mask(bytes(mask), data)
    return bytes(data)


try:
    from aiohttp._websocket.helpers import websocket_mask as _websocket_mask
except ImportError:  # pragma: no cover - an aiohttp that moved it: the pure version
    _unmask = _unmask_int
else:
    _unmask = _unmask_c


class FrameReader:
    """Parses what one client sends (see the module docstring for the rules)."""

    __slots__ = ("_buffer", "_fragmented", "_fragments", "_size", "max_message")

    def __init__(self, max_message: int = 64 * 1024) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._fragmented: Opcode | None = None  # the opcode of a message in fragments
        self._fragments: list[bytes] = []
        self._size = 0  # bytes of the fragments so far

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        position, length = 0, len(buffer)
        while True:
            # The common frame, read inline: a whole final text frame under 64 KiB, masked,
            # outside a fragmented message. Anything else takes the general path below.
            if length - position >= 6 and buffer[position] == 0x81 and self._fragmented is None:
                size = buffer[position + 1] - 0x80  # negative: unmasked
                head = position + 2
                if size == 126:
                    size = buffer[head] << 8 | buffer[head + 1]
                    head += 2
                if 0 <= size < 65536 and size != 127:
                    if size > self.max_message:
                        raise FrameError(
                            CLOSE_TOO_BIG, f"a message is at most {self.max_message} bytes"
                        )
                    end = head + 4 + size
                    if end > length:
                        break
                    payload = _unmask(buffer[head + 4 : end], buffer[head : head + 4])
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise FrameError(
                            CLOSE_INVALID_DATA, "a text message is not UTF-8"
                        ) from None
                    messages.append(Message(Opcode.TEXT, payload))
                    position = end
                    continue
            parsed = self._next_frame(buffer, position)
            if parsed is None:
                break
            position, fin, opcode, payload = parsed
            message = self._message(fin, opcode, payload)
            if message is not None:
                messages.append(message)
        del buffer[:position]
        return messages

    def _next_frame(self, buffer: bytearray, at: int) -> tuple[int, bool, Opcode, bytes] | None:
        if len(buffer) - at < 2:
            return None
        first, second = buffer[at], buffer[at + 1]
        if first & 0x70:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "RSV bits set without an extension")
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {first & 0x0F:#x}")
        if not second & 0x80:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "a client frame must be masked")
        fin = bool(first & 0x80)
        size = second & 0x7F
        head = at + 2
        if size == 126:
            if len(buffer) - head < 2:
                return None
            (size,) = _U16.unpack_from(buffer, head)
            head += 2
        elif size == 127:
            if len(buffer) - head < 8:
                return None
            (size,) = _U64.unpack_from(buffer, head)
            if size >> 63:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "64-bit length with its top bit set")
            head += 8
        if opcode >= Opcode.CLOSE and (size > MAX_CONTROL or not fin):
            raise FrameError(
                CLOSE_PROTOCOL_ERROR, "a control frame is unfragmented and at most 125 bytes"
            )
        if opcode < Opcode.CLOSE and self._size + size > self.max_message:
            raise FrameError(CLOSE_TOO_BIG, f"a message is at most {self.max_message} bytes")
        end = head + 4 + size
        if len(buffer) < end:
            return None
        mask = bytes(buffer[head : head + 4])
        payload = _unmask(bytes(buffer[head + 4 : end]), mask)
        return end, fin, opcode, payload

    def _message(self, fin: bool, opcode: Opcode, payload: bytes) -> Message | None:
        if opcode >= Opcode.CLOSE:  # control frames may come between fragments (§5.4)
            if opcode == Opcode.CLOSE:
                _check_close(payload)
            return Message(opcode, payload)
        if opcode == Opcode.CONTINUATION:
            if self._fragmented is None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "a continuation with nothing to continue")
            opcode = self._fragmented
        elif self._fragmented is not None:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
        if not fin:
            self._fragmented = opcode
            self._fragments.append(payload)
            self._size += len(payload)
            return None
        if self._fragments:
            payload = b"".join((*self._fragments, payload))
            self._fragments, self._fragmented, self._size = [], None, 0
        if opcode == Opcode.TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(CLOSE_INVALID_DATA, "a text message is not UTF-8") from None
        return Message(opcode, payload)


def _check_close(payload: bytes) -> None:
    """§5.5.1: empty, or a 2-byte code and a UTF-8 reason; §7.4: a code a peer may send."""
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "a close frame's code is 2 bytes")
    (code,) = _U16.unpack_from(payload)
    if not (1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "a close reason is not UTF-8") from None
