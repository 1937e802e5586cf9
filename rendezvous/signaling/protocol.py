"""The signaling WebSocket's JSON messages.

Server -> client: ``{"type": "challenge", "challenge"}`` on connect; ``{"type": "welcome",
"peer_id"}`` once the hello checks out; ``{"type": "signal", "from", "id", "data"}``;
``{"type": "delivered", "id", "to"}`` to the sender of a signal with an ``id`` once it
was handed to its target; ``{"type": "error", "code", "message", "id"?, "to"?}`` (code
``unreachable``: the target of a signal or punch is connected nowhere).

Client -> server: ``{"type": "hello", "public_key", "signature"}`` (Ed25519 over the
challenge and ``WEBSOCKET_HELLO``, see ``client_sdk.identity``), then ``{"type":
"signal", "to", "id"?, "data"}`` -- ``data`` is any JSON (an offer, an answer,
candidates, an app message) of at most ``MAX_SIGNAL_BYTES`` once encoded.

Hole punching (``rendezvous.signaling.punch``): ``{"type": "punch", "to", "id",
"candidates"}`` reaches the target as ``{"type": "punch", "from", "id", "candidates",
"rtt_ms"}``; its ``{"type": "punch_accept", "to", "id", "candidates", "peer_rtt_ms"}``
makes the server send both ``{"type": "punch_now", "peer", "id", "candidates",
"delay_ms", ...}``. The server measures each socket's round-trip time with ``{"type":
"ping", "nonce"}``, which the client answers with ``{"type": "pong", "nonce"}``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

MAX_SIGNAL_BYTES = 16 * 1024
MAX_FRAME_BYTES = 64 * 1024  # beyond this aiohttp closes the socket (1009)
PEER_ID_PATTERN = r"^[a-z2-7]{32}$"


class Hello(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["hello"]
    public_key: str = Field(max_length=64)
    signature: str = Field(max_length=128)


class Signal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["signal"]
    to: str = Field(pattern=PEER_ID_PATTERN)
    id: str | None = Field(default=None, max_length=64)
    data: Any

    @field_validator("data")
    @classmethod
    def _small(cls, data: Any) -> Any:
        size = len(json.dumps(data, separators=(",", ":")).encode())
        if size > MAX_SIGNAL_BYTES:
            raise ValueError(f"data is {size} bytes as JSON; at most {MAX_SIGNAL_BYTES}")
        return data


class Candidate(BaseModel):
    """An address to punch towards (an ICE-style candidate)."""

    model_config = ConfigDict(extra="forbid")
    ip: str = Field(max_length=45)
    port: int = Field(ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"
    type: Literal["host", "srflx", "prflx", "relay"] = "host"


class Punch(BaseModel):
    """Ask ``to`` to punch a hole with us, offering our fresh candidates."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["punch"]
    to: str = Field(pattern=PEER_ID_PATTERN)
    id: str = Field(min_length=1, max_length=64)
    candidates: list[Candidate] = Field(max_length=16)


class PunchAccept(BaseModel):
    """``to`` asked us to punch: our candidates, and its round-trip time as it came."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["punch_accept"]
    to: str = Field(pattern=PEER_ID_PATTERN)
    id: str = Field(min_length=1, max_length=64)
    candidates: list[Candidate] = Field(max_length=16)
    peer_rtt_ms: float = Field(ge=0, le=60_000)


class Pong(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["pong"]
    nonce: str = Field(max_length=32)


ClientMessage = TypeAdapter(
    Annotated[Hello | Signal | Punch | PunchAccept | Pong, Field(discriminator="type")]
)


def error(code: str, message: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, **extra})


_COMPACT = json.JSONEncoder(separators=(",", ":"))
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # 1e999 is no JSON
_SIGNAL_KEYS = frozenset(("type", "to", "id", "data"))
_PEER_ID = re.compile(PEER_ID_PATTERN.strip("^$"))
# What a relayed signal adds around its data: {"type":"signal","from":…,"id":…,"data":…}.
_ENVELOPE = len('{"type":"signal","from":,"id":,"data":}')


def delivered(message_id: str, to: str) -> str:
    """The acknowledgement of the signal ``message_id``, handed to ``to`` (a checked peer
    id: nothing to escape)."""
    return '{"type":"delivered","id":' + _COMPACT.encode(message_id) + ',"to":"' + to + '"}'


def signal(sender: str, message: Signal) -> bytes:
    body = {"type": "signal", "from": sender, "id": message.id, "data": message.data}
    return _COMPACT.encode(body).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # NaN, Infinity: no JSON


def fast_signal(text: str, sender: str) -> tuple[str, str | None, bytes] | None:
    """(to, id, the signal as relayed) if ``text`` is a valid ``signal`` message, else
    ``None``: anything else, or anything wrong, goes through ``ClientMessage`` (which then
    explains the problem). The common message, checked as ``Signal`` would and encoded
    once (the data's size is read off the relayed encoding)."""
    try:
        message = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    if (
        type(message) is not dict
        or message.get("type") != "signal"
        or "data" not in message
        or not message.keys() <= _SIGNAL_KEYS
    ):
        return None
    to, message_id = message.get("to"), message.get("id")
    if type(to) is not str or _PEER_ID.fullmatch(to) is None:
        return None
    if message_id is not None and (type(message_id) is not str or len(message_id) > 64):
        return None
    body = {"type": "signal", "from": sender, "id": message_id, "data": message["data"]}
    try:
        encoded = _STRICT.encode(body)
    except (ValueError, RecursionError):
        return None
    quoted_id = 4 if message_id is None else len(_COMPACT.encode(message_id))  # null
    framing = _ENVELOPE + len(sender) + 2 + quoted_id  # a peer id needs no escapes
    if len(encoded) - framing > MAX_SIGNAL_BYTES:  # ASCII: characters are bytes
        return None
    return to, message_id, encoded.encode()
