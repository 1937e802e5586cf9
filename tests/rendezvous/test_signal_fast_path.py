"""``protocol.fast_signal`` (the hand-checked common case) against the pydantic
``ClientMessage`` model it shortcuts: whatever the fast path accepts, the model accepts
too and relays as the very same bytes; the ordinary signals take the fast path. And the
hand-built acknowledgement (``protocol.delivered``) is the JSON it says."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rendezvous.signaling import protocol

SENDER = "a" * 32
PEER = "b" * 32

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["signal", "signal", "punch", "hello"])},
    optional={
        "to": st.sampled_from([PEER, "B" * 32, "b" * 31, 7, None]),
        "id": st.none() | st.text(max_size=70) | st.integers(),
        # Near the 16 KiB limit: a long run plus a few characters, some escaped in JSON.
        "data": json_values
        | st.builds(
            lambda n, tail: "x" * n + tail,
            st.integers(16_300, 16_384),
            st.text(alphabet="ab\u00e9\n", max_size=20),
        ),
        "extra": st.just(1),
    },
)


def by_the_model(text: str) -> bytes | None:
    try:
        message = protocol.ClientMessage.validate_json(text)
    except ValidationError:
        return None
    return protocol.signal(SENDER, message) if isinstance(message, protocol.Signal) else None


@given(messages)
def test_the_fast_path_accepts_only_what_the_model_accepts(message: dict[str, Any]) -> None:
    text = json.dumps(message)
    fast = protocol.fast_signal(text, SENDER)
    modelled = by_the_model(text)
    if fast is not None:
        to, message_id, payload = fast
        assert modelled == payload
        assert (to, message_id) == (message["to"], message.get("id"))


@given(json_values, st.none() | st.text(max_size=64))
def test_ordinary_signals_take_the_fast_path(data: Any, message_id: str | None) -> None:
    text = json.dumps({"type": "signal", "to": PEER, "id": message_id, "data": data})
    fast = protocol.fast_signal(text, SENDER)
    assert fast is not None
    assert fast[2] == by_the_model(text)


def test_the_size_limit_is_the_models() -> None:
    for size in (protocol.MAX_SIGNAL_BYTES - 3, protocol.MAX_SIGNAL_BYTES - 2):
        text = json.dumps({"type": "signal", "to": PEER, "data": "é" * (size // 6)})
        assert (protocol.fast_signal(text, SENDER) is None) == (by_the_model(text) is None)
    exact = json.dumps(
        {"type": "signal", "to": PEER, "data": "x" * (protocol.MAX_SIGNAL_BYTES - 2)}
    )
    assert protocol.fast_signal(exact, SENDER) is not None
    over = json.dumps({"type": "signal", "to": PEER, "data": "x" * (protocol.MAX_SIGNAL_BYTES - 1)})
    assert protocol.fast_signal(over, SENDER) is None
    assert by_the_model(over) is None


@given(st.text(max_size=64))
def test_the_acknowledgement_is_json_naming_the_signal(message_id: str) -> None:
    acknowledgement = json.loads(protocol.delivered(message_id, PEER))
    assert acknowledgement == {"type": "delivered", "id": message_id, "to": PEER}
