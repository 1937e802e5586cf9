"""Every parser of what a rendezvous server sends, fed arbitrary input: signaling
messages (text, JSON, and messages of each known type with arbitrary fields), the HTTP
answers (challenge, join, peers, pages, stats, TURN credentials) and ``Retry-After``.
Nothing crashes the client; whatever is not understood is a ``ProtocolError`` event (or
a ``bad_response`` error) and changes no state; an error or a ``delivered`` settles only
the request it names."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_sdk.identity import Identity
from client_sdk.rendezvous import RendezvousError, RendezvousHttp
from client_sdk.rendezvous import http as http_module
from client_sdk.rendezvous.signaling import (
    Delivered,
    Kind,
    ProtocolError,
    ServerError,
    SignalingState,
    parse,
)

ME = Identity.generate().peer_id
THEM = Identity.generate().peer_id

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from([ME, THEM, "nk.x.1", "unreachable", "s1", "p1"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "from",
    "to",
    "id",
    "data",
    "nonce",
    "code",
    "message",
    "peer",
    "candidates",
    "rtt_ms",
    "delay_ms",
    "peer_rtt_ms",
    "challenge",
    "peer_id",
]
TYPES = [
    *("signal", "delivered", "ping", "error", "punch", "punch_now"),
    *("challenge", "welcome", "hello", "x"),
]
candidate = st.fixed_dictionaries(
    {"ip": st.sampled_from(["192.0.2.1", "::1", "", 7]), "port": st.integers(-1, 70000)},
    optional={"protocol": st.sampled_from(["udp", "tcp", "sctp"]), "type": json_values},
)
field_values = json_values | st.lists(candidate, max_size=3)
messages = st.builds(
    lambda kind, extra: json.dumps({"type": kind, **extra}),
    st.sampled_from(TYPES) | json_values,
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8),
)
server_text = st.text(max_size=200) | json_values.map(json.dumps) | messages


def busy_state() -> SignalingState:
    """A socket's state with requests of every kind waiting."""
    state = SignalingState(ME)
    state.track("s1", Kind.SIGNAL, THEM)
    state.track("s2", Kind.SIGNAL, THEM)
    state.track("p1", Kind.PUNCH, THEM)
    state.track("a1", Kind.ACCEPT, THEM)
    return state


@given(server_text)
def test_parse_never_raises(text: str) -> None:
    message = parse(text)
    if isinstance(message, ProtocolError):
        assert len(message.text) <= 200
        assert message.problem


@given(server_text)
def test_what_is_not_understood_is_reported_and_changes_nothing(text: str) -> None:
    state = busy_state()
    before = state.snapshot()
    reaction = state.receive(text)
    protocol_errors = [e for e in reaction.events if isinstance(e, ProtocolError)]
    if protocol_errors:
        assert reaction.events == tuple(protocol_errors)
        assert len(protocol_errors) == 1
        assert (reaction.replies, reaction.settled) == ((), ())
        assert state.snapshot() == before
    # Whatever it was, only requests that were waiting were settled.
    assert {s.id for s in reaction.settled} <= {"s1", "s2", "p1", "a1"}


@given(st.sampled_from(["s1", "s2", "p1", "a1", "zz"]), st.sampled_from([THEM, ME, None]))
def test_errors_settle_only_their_own_request(message_id: str, to: str | None) -> None:
    state = busy_state()
    body = {"type": "error", "code": "unreachable", "message": "m", "id": message_id, "to": to}
    reaction = state.receive(json.dumps(body))
    if message_id in ("s1", "s2", "p1", "a1") and to in (THEM, None):
        [settled] = reaction.settled
        assert settled.id == message_id
        assert isinstance(settled.error, ServerError)
        assert message_id not in state.pending()
    else:
        assert reaction.settled == ()
        assert isinstance(reaction.events[0], ServerError)


@given(st.sampled_from(["s1", "s2", "p1", "a1", "zz"]), st.sampled_from([THEM, ME]))
def test_delivered_settles_only_its_own_signal(message_id: str, to: str) -> None:
    state = busy_state()
    body = {"type": "delivered", "id": message_id, "to": to}
    reaction = state.receive(json.dumps(body))
    if message_id in ("s1", "s2") and to == THEM:
        [settled] = reaction.settled
        assert (settled.id, settled.error, settled.punch_now) == (message_id, None, None)
        assert reaction.events == ()
        assert message_id not in state.pending()
    else:  # not ours to settle (a punch, someone else, nobody waits): an event
        assert reaction.settled == ()
        assert reaction.events == (Delivered(message_id, to),)
        assert len(state.pending()) == 4
    assert reaction.replies == ()


def test_delivered_needs_an_id_and_a_peer() -> None:
    state = busy_state()
    before = state.snapshot()
    for body in (
        {"type": "delivered", "to": THEM},
        {"type": "delivered", "id": None, "to": THEM},
        {"type": "delivered", "id": 7, "to": THEM},
        {"type": "delivered", "id": "x" * 65, "to": THEM},
        {"type": "delivered", "id": "s1"},
        {"type": "delivered", "id": "s1", "to": "them"},
        {"type": "delivered", "id": "s1", "to": [THEM]},
    ):
        assert isinstance(parse(json.dumps(body)), ProtocolError)
        reaction = state.receive(json.dumps(body))
        assert isinstance(reaction.events[0], ProtocolError)
        assert reaction.settled == ()
    assert state.snapshot() == before
    assert parse(json.dumps({"type": "delivered", "id": "s1", "to": THEM, "x": 1})) == Delivered(
        "s1", THEM
    )


def test_ping_is_answered_with_its_nonce() -> None:
    reaction = SignalingState(ME).receive('{"type": "ping", "nonce": "abc"}')
    assert [json.loads(r) for r in reaction.replies] == [{"type": "pong", "nonce": "abc"}]


READERS: list[Callable[[Mapping[str, Any]], Any]] = [
    http_module.challenge_answer,
    http_module._join,
    http_module._sample,
    http_module._page,
    http_module._stats,
    http_module._turn,
]
PEER = st.fixed_dictionaries(
    {
        "peer_id": st.sampled_from([ME, "x"]) | json_values,
        "public_key": st.text(max_size=5) | json_values,
        "expires_in": st.integers(-5, 5) | json_values,
    },
    optional={
        "candidates": st.lists(candidate, max_size=3) | json_values,
        "nat": json_values,
        "metadata": json_values,
    },
)
answers = json_values | st.dictionaries(
    st.sampled_from(
        [
            *("challenge", "expires_in", "joined", "ttl", "peers", "total", "cookie"),
            *("swarm", "seeders", "leechers", "username", "password", "uris"),
        ]
    ),
    json_values | st.lists(PEER, max_size=3),
    max_size=10,
)


@given(st.sampled_from(READERS), answers)
def test_http_answers_are_typed_or_bad_response(
    reader: Callable[[Mapping[str, Any]], Any], body: Any
) -> None:
    http = RendezvousHttp("http://127.0.0.1:1", Identity.generate())
    code = "typed"
    try:
        http._parse("/path", body, reader)
    except RendezvousError as exc:  # the only exception it may raise
        code = exc.code
    assert code in ("typed", "bad_response")


@given(st.text(max_size=30) | st.none())
def test_retry_after_is_a_finite_delay_or_absent(value: str | None) -> None:
    seconds = http_module._retry_after(value)
    if seconds is not None:
        assert math.isfinite(seconds)
        assert seconds >= 0


@pytest.mark.parametrize(
    "body",
    [
        {"challenge": "c\nd", "expires_in": 60},
        {"challenge": "c", "expires_in": True},
        {"challenge": "", "expires_in": 60},
        {"peers": [{"peer_id": ME, "public_key": "k", "expires_in": 1, "metadata": {"a": []}}]},
    ],
)
def test_malformed_answers_are_named(body: dict[str, Any]) -> None:
    http = RendezvousHttp("http://127.0.0.1:1", Identity.generate())
    reader = http_module.challenge_answer if "challenge" in body else http_module._sample
    with pytest.raises(RendezvousError, match="bad_response"):
        http._parse("/path", body, reader)
