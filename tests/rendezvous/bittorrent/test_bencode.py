"""Strict bencoding (BEP 3): golden examples, every rejection, round trips and fuzzing."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.bittorrent import TrackerError
from rendezvous.bittorrent.bencode import MAX_DEPTH, Decoded, decode, encode

# The examples of BEP 3's "bencoding" section.
BEP3_EXAMPLES: list[tuple[bytes, Decoded]] = [
    (b"4:spam", b"spam"),
    (b"0:", b""),
    (b"i3e", 3),
    (b"i-3e", -3),
    (b"i0e", 0),
    (b"l4:spam4:eggse", [b"spam", b"eggs"]),
    (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
    (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    (b"le", []),
    (b"de", {}),
]


@pytest.mark.parametrize(("data", "value"), BEP3_EXAMPLES)
def test_decode_bep3_examples(data: bytes, value: Decoded) -> None:
    assert decode(data) == value


@pytest.mark.parametrize(("data", "value"), BEP3_EXAMPLES)
def test_encode_bep3_examples(data: bytes, value: Decoded) -> None:
    assert encode(value) == data


def test_encode_str_as_utf8_and_tuple_as_list() -> None:
    assert encode("é") == b"2:\xc3\xa9"
    assert encode(("spam", b"eggs")) == b"l4:spam4:eggse"
    assert encode({"cow": "moo", b"spam": ("eggs",)}) == b"d3:cow3:moo4:spaml4:eggsee"


def test_encode_sorts_keys_by_raw_bytes() -> None:
    # BEP 3: sorted as raw strings, not alphanumerics: "B" (0x42) < "a" < "b"; the
    # UTF-8 of "é" (0xc3 0xa9) sorts after "z".
    assert encode({"b": 1, "a": 2, "B": 3}) == b"d1:Bi3e1:ai2e1:bi1ee"
    assert encode({"é": 1, "z": 2}) == b"d1:zi2e2:\xc3\xa9i1ee"
    assert encode({b"peers6": 1, b"peers": 2}) == b"d5:peersi2e6:peers6i1ee"


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(b"d1:ai1ee")) == {b"a": 1}
    assert decode(memoryview(b"l1:xe")) == [b"x"]


def test_nesting_at_the_limit_is_accepted() -> None:
    value: Decoded = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    data = b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
    assert encode(value) == data
    assert decode(data) == value
    assert decode(b"d1:a" * MAX_DEPTH + b"i1e" + b"e" * MAX_DEPTH) is not None


def test_largest_integers_round_trip() -> None:
    for value in (10**64 - 1, -(10**64) + 1):
        assert decode(encode(value)) == value


DECODE_ERRORS: list[tuple[bytes, str]] = [
    (b"", r"^bencoded data is empty$"),
    (b"i03e", r"^integer b'03' at offset 0 has a leading zero$"),
    (b"i00e", r"^integer b'00' at offset 0 has a leading zero$"),
    (b"i-03e", r"^integer b'-03' at offset 0 has a leading zero$"),
    (b"i-0e", r"^integer at offset 0 is negative zero$"),
    (b"ie", r"^invalid integer b'' at offset 0$"),
    (b"i-e", r"^invalid integer b'-' at offset 0$"),
    (b"i--1e", r"^invalid integer b'--1' at offset 0$"),
    (b"i+1e", r"^invalid integer b'\+1' at offset 0$"),
    (b"i 1e", r"^invalid integer b' 1' at offset 0$"),
    (b"i1.5e", r"^invalid integer b'1.5' at offset 0$"),
    (b"li1ei12", r"^truncated input: integer at offset 4 has no closing 'e'$"),
    (b"i" + b"1" * 65 + b"e", r"^integer at offset 0 is longer than 64 digits$"),
    (b"i" + b"1" * 100, r"^integer at offset 0 is longer than 64 digits$"),
    (b"03:abc", r"^string length b'03' at offset 0 has a leading zero$"),
    (b"5:ab", r"^truncated input: string at offset 0 declares 5 bytes but only 2 remain$"),
    (b"4", r"^truncated input: string length at offset 0 has no ':'$"),
    (b"12345678901:x", r"^string length at offset 0 is longer than 10 digits$"),
    (b"1a:x", r"^invalid string length b'1a' at offset 0$"),
    (b"-1:a", r"^unexpected byte b'-' at offset 0: expected 'i', 'l', 'd' or a string len"),
    (b"x", r"^unexpected byte b'x' at offset 0"),
    (b"e", r"^unexpected byte b'e' at offset 0"),
    (b"l", r"^truncated input: list at offset 0 has no closing 'e'$"),
    (b"l1:ai1e", r"^truncated input: list at offset 0 has no closing 'e'$"),
    (b"d", r"^truncated input: dict at offset 0 has no closing 'e'$"),
    (b"d1:a", r"^truncated input: expected a value at offset 4$"),
    (b"d1:ae", r"^dict key b'a' at offset 1 has no value$"),
    (b"di1ei2ee", r"^dict key at offset 1 is not a string$"),
    (b"dli1eei2ee", r"^dict key at offset 1 is not a string$"),
    (b"d1:bi1e1:ai2ee", r"^unsorted dict key b'a' at offset 7 \(after b'b'\)$"),
    (b"d1:ai1e1:ai2ee", r"^duplicate dict key b'a' at offset 7 \(after b'a'\)$"),
    (b"d1:ai1e0:i2ee", r"^unsorted dict key b'' at offset 7"),
    (b"i1ei2e", r"^trailing data at offset 3: 3 byte\(s\) after the value$"),
    (b"4:spam\n", r"^trailing data at offset 6: 1 byte\(s\) after the value$"),
    (b"l" * 65 + b"e" * 65, r"^nesting deeper than 64 levels at offset 64$"),
    (b"d1:a" * 65 + b"i1e" + b"e" * 65, r"^nesting deeper than 64 levels at offset 256$"),
]


@pytest.mark.parametrize(("data", "message"), DECODE_ERRORS)
def test_decode_rejects(data: bytes, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        decode(data)


def _deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


ENCODE_ERRORS: list[tuple[Any, str]] = [
    (True, r"^cannot bencode a bool; use an int$"),
    ([False], r"^cannot bencode a bool; use an int$"),
    (1.5, r"^cannot bencode a value of type float$"),
    (None, r"^cannot bencode a value of type NoneType$"),
    (bytearray(b"x"), r"^cannot bencode a value of type bytearray$"),
    ({1: b"x"}, r"^dict keys must be str or bytes, got int$"),
    ({"a": 1, b"a": 2}, r"^duplicate dict key b'a' \(given as both str and bytes\)$"),
    (10**64, r"^cannot bencode an integer longer than 64 digits$"),
    (-(10**64), r"^cannot bencode an integer longer than 64 digits$"),
    ("\ud800", r"^string '\\ud800' is not valid Unicode: surrogates not allowed$"),
    ({"\udcff": 1}, r"^string '\\udcff' is not valid Unicode"),
    (_deep_list(MAX_DEPTH + 1), r"^nesting deeper than 64 levels$"),
]


@pytest.mark.parametrize(("value", "message"), ENCODE_ERRORS)
def test_encode_rejects(value: Any, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        encode(value)


def test_encode_rejects_cycles_without_recursion_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TrackerError, match="nesting deeper than 64 levels"):
        encode(loop)


# --------------------------------------------------------------------------- properties

integers = st.integers(min_value=-(10**64) + 1, max_value=10**64 - 1)
decoded_values: st.SearchStrategy[Decoded] = st.recursive(
    integers | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)


@given(decoded_values)
def test_round_trip(value: Decoded) -> None:
    assert decode(encode(value)) == value


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {_normalise(key): _normalise(item) for key, item in value.items()}
    return value


encodable_values: st.SearchStrategy[Any] = st.recursive(
    integers | st.binary(max_size=20) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)


@given(encodable_values)
def test_str_and_tuple_decode_as_bytes_and_list(value: Any) -> None:
    assert decode(encode(value)) == _normalise(value)


@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes_raises_only_tracker_error(data: bytes) -> None:
    with contextlib.suppress(TrackerError):
        decode(data)


# Bytes from the bencode alphabet reach the deep paths that random bytes rarely do.
bencode_like = st.lists(st.sampled_from(list(b"ilde0123456789:-")), max_size=80).map(bytes)


@given(bencode_like)
def test_accepted_input_is_canonical(data: bytes) -> None:
    # Strictness means every accepted input is the one encoding of its value.
    try:
        value = decode(data)
    except TrackerError:
        return
    assert encode(value) == data


@given(decoded_values, st.data())
def test_mutated_encodings_raise_only_tracker_error(value: Decoded, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded)))
        mutation = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if mutation == "flip" and position < len(encoded):
            encoded[position] = data.draw(st.integers(0, 255))
        elif mutation == "insert":
            encoded[position:position] = bytes([data.draw(st.integers(0, 255))])
        elif mutation == "delete":
            del encoded[position : position + 1]
        else:
            del encoded[position:]
    try:
        decoded = decode(bytes(encoded))
    except TrackerError:
        return
    assert encode(decoded) == bytes(encoded)
