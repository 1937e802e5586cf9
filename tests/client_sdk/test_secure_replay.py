"""The RFC 6479 replay window (client_sdk.secure.replay) against a plain model: the set
of counters accepted so far and the highest one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.secure.replay import ReplayWindow


class Model:
    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.top = -1

    def update(self, counter: int) -> bool:
        fresh = counter not in self.seen and (counter > self.top or self.top - counter < self.size)
        if fresh:
            self.seen.add(counter)
            self.top = max(self.top, counter)
        return fresh


def test_basics() -> None:
    window = ReplayWindow(2048)
    assert window.update(0)
    assert not window.update(0)
    assert window.update(5)
    assert window.update(3)  # late, inside the window
    assert not window.update(3)
    assert window.update(5000)
    assert not window.check(5000 - 2048)  # just too old
    assert window.check(5000 - 2047)
    assert not window.update(0)
    assert window.update(2**60 - 1)  # a jump past many whole windows
    assert not window.check(5000)
    assert window.check(2**60 - 2)


def test_check_does_not_record() -> None:
    window = ReplayWindow(64)
    assert window.check(10)
    assert window.check(10)
    assert window.update(10)
    assert not window.check(10)


def test_size_must_be_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        ReplayWindow(100)
    with pytest.raises(ValueError, match="multiple of 64"):
        ReplayWindow(0)


def counters() -> st.SearchStrategy[list[int]]:
    """Mostly close together (reordering and replays), with some jumps ahead."""
    step = st.one_of(
        st.integers(-300, 300),
        st.integers(-3000, 3000),
        st.integers(0, 70_000),
    )
    return st.lists(step, max_size=300).map(_walk)


def _walk(steps: list[int]) -> list[int]:
    position, out = 1000, []
    for step in steps:
        position = max(0, position + step)
        out.append(position)
    return out


@settings(max_examples=300)
@given(st.sampled_from([64, 128, 2048]), counters())
def test_window_matches_the_model(size: int, sequence: list[int]) -> None:
    window = ReplayWindow(size)
    model = Model(size)
    for counter in sequence:
        expected = model.update(counter)
        assert window.check(counter) == expected
        assert window.update(counter) == expected
        assert window.top == model.top


@settings(max_examples=100)
@given(st.permutations(range(200)))
def test_any_order_within_the_window_is_accepted_once(order: list[int]) -> None:
    window = ReplayWindow(256)
    assert all(window.update(counter) for counter in order)
    assert not any(window.check(counter) for counter in order)
