"""Bencoding (BEP 3, "bencoding"): a strict decoder and a canonical encoder.

Python representation:

==================  ===============================================================
bencode             Python
==================  ===============================================================
integer ``i42e``    ``int`` (``bool`` is refused when encoding)
string ``4:spam``   ``bytes`` when decoding; ``bytes`` or ``str`` (UTF-8) when encoding
list ``l...e``      ``list`` when decoding; ``list`` or ``tuple`` when encoding
dict ``d...e``      ``dict[bytes, ...]`` when decoding; keys ``bytes`` or ``str`` when
                    encoding, written sorted by their raw bytes as BEP 3 requires
==================  ===============================================================

:func:`decode` accepts only the canonical encoding, so that every value has exactly one
byte form: no leading zeros (``i03e``, ``03:abc``), no ``i-0e``, dict keys strictly
increasing (sorted, no duplicates), no trailing data. It also bounds the work an
attacker can cause: nesting at most :data:`MAX_DEPTH` levels, integers at most
:data:`MAX_INT_DIGITS` digits, string lengths checked against the remaining input
before anything is sliced. Every problem raises :class:`TrackerError` naming the
offset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeAlias

from .errors import TrackerError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "Bencodable", "Decoded", "decode", "encode"]

MAX_DEPTH: Final = 64
"""Deepest nesting of lists/dicts accepted (a top-level list is depth 1)."""

MAX_INT_DIGITS: Final = 64
"""Longest integer accepted, in decimal digits (far beyond any 64-bit tracker field)."""

_MAX_LENGTH_DIGITS: Final = 10  # a string length of 10**10 bytes can never fit the input

# Recursive aliases: what encode() takes, and what decode() returns.
Bencodable: TypeAlias = (
    int
    | bytes
    | str
    | Sequence["Bencodable"]
    | Mapping[str, "Bencodable"]
    | Mapping[bytes, "Bencodable"]
    | Mapping[str | bytes, "Bencodable"]  # Mapping is invariant in its key type
)
Decoded: TypeAlias = int | bytes | list["Decoded"] | dict[bytes, "Decoded"]

_INT_LIMIT: Final = 10**MAX_INT_DIGITS


# --------------------------------------------------------------------------- encoding


def encode(value: Bencodable) -> bytes:
    """Encode ``value`` canonically (dict keys sorted by raw bytes, BEP 3).

    Raises :class:`TrackerError` for unsupported types (including ``bool`` and
    ``float``), dict keys that are not ``str``/``bytes``, two keys with the same UTF-8
    bytes (``"a"`` and ``b"a"``), integers longer than :data:`MAX_INT_DIGITS` digits,
    strings that are not valid Unicode, and nesting deeper than :data:`MAX_DEPTH`.
    """
    out: list[bytes] = []
    _encode_into(value, out, 0)
    return b"".join(out)


def _encode_into(value: object, out: list[bytes], depth: int) -> None:
    if isinstance(value, bool):
        raise TrackerError("cannot bencode a bool; use an int")
    if isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise TrackerError(f"cannot bencode an integer longer than {MAX_INT_DIGITS} digits")
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | str):
        raw = _key_bytes(value) if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list | tuple):
        _check_depth(depth + 1)
        out.append(b"l")
        for item in value:
            _encode_into(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Mapping):
        _check_depth(depth + 1)
        items: dict[bytes, object] = {}
        for key, item in value.items():
            if isinstance(key, str):
                raw_key = _key_bytes(key)
            elif isinstance(key, bytes):
                raw_key = key
            else:
                raise TrackerError(f"dict keys must be str or bytes, got {type(key).__name__}")
            if raw_key in items:
                raise TrackerError(f"duplicate dict key {raw_key!r} (given as both str and bytes)")
            items[raw_key] = item
        out.append(b"d")
        for raw_key in sorted(items):
            out.append(b"%d:" % len(raw_key))
            out.append(raw_key)
            _encode_into(items[raw_key], out, depth + 1)
        out.append(b"e")
    else:
        raise TrackerError(f"cannot bencode a value of type {type(value).__name__}")


def _key_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TrackerError(f"string {text[:32]!r} is not valid Unicode: {exc.reason}") from None


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TrackerError(f"nesting deeper than {MAX_DEPTH} levels")


# --------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview) -> Decoded:
    """Decode exactly one canonical bencoded value filling all of ``data``.

    Strings come back as ``bytes``, dicts as ``dict[bytes, ...]``. Raises
    :class:`TrackerError` (with the offending offset) on any deviation from the
    canonical form, on truncated input and on trailing data.
    """
    buf = bytes(data)
    if not buf:
        raise TrackerError("bencoded data is empty")
    value, end = _decode_value(buf, 0, 0)
    if end != len(buf):
        extra = len(buf) - end
        raise TrackerError(f"trailing data at offset {end}: {extra} byte(s) after the value")
    return value


def _decode_value(buf: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    if pos >= len(buf):
        raise TrackerError(f"truncated input: expected a value at offset {pos}")
    decoder = _DECODERS.get(buf[pos])
    if decoder is None:
        raise TrackerError(
            f"unexpected byte {buf[pos : pos + 1]!r} at offset {pos}: "
            "expected 'i', 'l', 'd' or a string length"
        )
    return decoder(buf, pos, depth)


def _decode_int(buf: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    # 'i', optional '-', at most MAX_INT_DIGITS digits, 'e'
    window_end = pos + MAX_INT_DIGITS + 3
    end = buf.find(b"e", pos + 1, window_end)
    if end < 0:
        if window_end >= len(buf):
            raise TrackerError(f"truncated input: integer at offset {pos} has no closing 'e'")
        raise TrackerError(f"integer at offset {pos} is longer than {MAX_INT_DIGITS} digits")
    body = buf[pos + 1 : end]
    digits = body[1:] if body[:1] == b"-" else body
    if not digits.isdigit():  # bytes.isdigit() is ASCII-only
        raise TrackerError(f"invalid integer {body!r} at offset {pos}")
    if len(digits) > MAX_INT_DIGITS:
        raise TrackerError(f"integer at offset {pos} is longer than {MAX_INT_DIGITS} digits")
    if digits[0] == 0x30 and len(digits) > 1:
        raise TrackerError(f"integer {body!r} at offset {pos} has a leading zero")
    if body == b"-0":
        raise TrackerError(f"integer at offset {pos} is negative zero")
    return int(body), end + 1


def _decode_str(buf: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    return _read_str(buf, pos)


def _read_str(buf: bytes, pos: int) -> tuple[bytes, int]:
    window_end = pos + _MAX_LENGTH_DIGITS + 1
    colon = buf.find(b":", pos, window_end)
    if colon < 0:
        if window_end >= len(buf):
            raise TrackerError(f"truncated input: string length at offset {pos} has no ':'")
        raise TrackerError(
            f"string length at offset {pos} is longer than {_MAX_LENGTH_DIGITS} digits"
        )
    digits = buf[pos:colon]
    if not digits.isdigit():
        raise TrackerError(f"invalid string length {digits!r} at offset {pos}")
    if digits[0] == 0x30 and len(digits) > 1:
        raise TrackerError(f"string length {digits!r} at offset {pos} has a leading zero")
    length = int(digits)
    start = colon + 1
    if length > len(buf) - start:
        raise TrackerError(
            f"truncated input: string at offset {pos} declares {length} bytes "
            f"but only {len(buf) - start} remain"
        )
    return buf[start : start + length], start + length


def _decode_list(buf: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    depth += 1
    if depth > MAX_DEPTH:
        raise TrackerError(f"nesting deeper than {MAX_DEPTH} levels at offset {pos}")
    items: list[Decoded] = []
    cursor = pos + 1
    while True:
        if cursor >= len(buf):
            raise TrackerError(f"truncated input: list at offset {pos} has no closing 'e'")
        if buf[cursor] == 0x65:  # 'e'
            return items, cursor + 1
        item, cursor = _decode_value(buf, cursor, depth)
        items.append(item)


def _decode_dict(buf: bytes, pos: int, depth: int) -> tuple[Decoded, int]:
    depth += 1
    if depth > MAX_DEPTH:
        raise TrackerError(f"nesting deeper than {MAX_DEPTH} levels at offset {pos}")
    items: dict[bytes, Decoded] = {}
    previous: bytes | None = None
    cursor = pos + 1
    while True:
        if cursor >= len(buf):
            raise TrackerError(f"truncated input: dict at offset {pos} has no closing 'e'")
        if buf[cursor] == 0x65:  # 'e'
            return items, cursor + 1
        if not 0x30 <= buf[cursor] <= 0x39:
            raise TrackerError(f"dict key at offset {cursor} is not a string")
        key_pos = cursor
        key, cursor = _read_str(buf, cursor)
        # BEP 3: "Keys must be strings and appear in sorted order (sorted as raw strings,
        # not alphanumerics)." Strictly increasing also rules out duplicates.
        if previous is not None and key <= previous:
            problem = "duplicate" if key == previous else "unsorted"
            raise TrackerError(
                f"{problem} dict key {key!r} at offset {key_pos} (after {previous!r})"
            )
        previous = key
        if cursor < len(buf) and buf[cursor] == 0x65:  # 'e'
            raise TrackerError(f"dict key {key!r} at offset {key_pos} has no value")
        items[key], cursor = _decode_value(buf, cursor, depth)


_Decoder: TypeAlias = Callable[[bytes, int, int], tuple[Decoded, int]]

_DECODERS: Final[dict[int, _Decoder]] = {
    ord("i"): _decode_int,
    ord("l"): _decode_list,
    ord("d"): _decode_dict,
    **{digit: _decode_str for digit in b"0123456789"},
}
